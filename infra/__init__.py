"""The stack of one esjoin stage and the bootstrap that makes it exist on an endpoint.

    settings.py   StackSettings: defaults, ESJOIN_* environment variables, --set overrides
    stack.py      what exists: names, tables, queues, role policy, functions, mappings (no AWS calls)
    package.py    the reproducible zip of lambdas/ (read as files, never imported)
    target.py     where it goes: the local-endpoint guard, dummy credentials, boto3 clients
    changes.py    the per-resource report and the pure diffs that decide created/updated/unchanged
    provision.py  read, compare, create or update, wait (apply; read-only for outputs)
    removal.py    teardown, dependents first
    waits.py      polling with deadlines and errors that name the resource
    outputs.py    the outputs document (.esjoin/outputs.json)
    bootstrap.py  apply / read_outputs / teardown, and the command line

From code (the harness)::

    from infra.bootstrap import apply
    from infra.settings import StackSettings
    from infra.stack import build_stack

    outputs = apply(build_stack(StackSettings.from_env(overrides={"stage": "it1",
                                                                  "snapshot_horizon_seconds": 2})),
                    "http://127.0.0.1:4566")
    outputs.tables["events"]["name"], outputs.queues["failures"]["url"], outputs.summary
"""
