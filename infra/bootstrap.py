"""Make a stage exist on an endpoint (apply), show where it is (outputs), remove it (teardown).

    python -m infra.bootstrap apply    --endpoint http://127.0.0.1:4566 --stage dev1 [--set KEY=VALUE ...]
    python -m infra.bootstrap outputs  --endpoint ... --stage dev1     # read-only; fails if not deployed
    python -m infra.bootstrap teardown --endpoint ... --stage dev1
    python -m infra.bootstrap apply --target aws --stage alice-dev     # real AWS: explicit opt-in

apply is idempotent: it creates what is missing, updates what differs, leaves the rest, waits until
everything is usable, and reports each resource (a second run says "no changes"). The outputs
document is printed and written to ``.esjoin/outputs.json`` (``--outputs``). Exit status: 0 done,
2 refused (endpoint not local, bad setting or argument), 1 failed; always with a one-line reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from esjoin.target import AWS, LOCAL, Target, TargetRefused, local_target, resolve_target
from infra.changes import ChangeReport
from infra.outputs import DEFAULT_OUTPUTS_PATH, Outputs
from infra.package import PackageError
from infra.provision import BootstrapError, Provisioner
from infra.removal import Remover, TeardownError
from infra.settings import SettingsError, StackSettings, parse_assignments
from infra.stack import Stack, build_stack
from infra.waits import ResourceFailed, WaitTimeout

log = logging.getLogger("infra")

DEFAULT_TIMEOUT = 60.0
"""Seconds any one resource may take to become ready (mappings on LocalStack take a few)."""


def _target(stack: Stack, target: Target | str) -> Target:
    """A Target as given, or a local endpoint URL (checked by the local-endpoint guard)."""
    return local_target(target, stack.settings.region) if isinstance(target, str) else target


def apply(
    stack: Stack,
    target: Target | str,
    *,
    outputs_path: Path | None = DEFAULT_OUTPUTS_PATH,
    timeout: float = DEFAULT_TIMEOUT,
    lambdas_dir: Path | None = None,
) -> Outputs:
    """Make ``target`` match ``stack``; returns (and writes, unless ``outputs_path`` is None) the
    outputs, whose ``changes`` and ``summary`` say what was created, updated or left unchanged."""
    return _provision(stack, target, check=False, outputs_path=outputs_path, timeout=timeout, lambdas_dir=lambdas_dir)


def read_outputs(
    stack: Stack,
    target: Target | str,
    *,
    outputs_path: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    lambdas_dir: Path | None = None,
) -> Outputs:
    """The outputs of a deployed stage, read from the endpoint without changing anything. Raises
    NotDeployed if a resource is missing; differences from the stack appear as ``drifted``."""
    return _provision(stack, target, check=True, outputs_path=outputs_path, timeout=timeout, lambdas_dir=lambdas_dir)


def _provision(
    stack: Stack,
    target: Target | str,
    *,
    check: bool,
    outputs_path: Path | None,
    timeout: float,
    lambdas_dir: Path | None,
) -> Outputs:
    """Run the provisioner (check=True: read and compare only) and write the outputs if asked to."""
    target = _target(stack, target)
    outputs = Provisioner(stack, target, target.clients(), check=check, timeout=timeout, lambdas_dir=lambdas_dir).run()
    if outputs_path is not None:
        outputs.write(outputs_path)
    return outputs


def teardown(
    stack: Stack,
    target: Target | str,
    *,
    outputs_path: Path | None = DEFAULT_OUTPUTS_PATH,
    timeout: float = DEFAULT_TIMEOUT,
) -> ChangeReport:
    """Remove every resource of the stage (what is already gone is reported as ``absent``), and the
    outputs file if it describes this stage on this endpoint."""
    target = _target(stack, target)
    report = Remover(stack, target, target.clients(), timeout=timeout).run()
    if outputs_path is not None and Path(outputs_path).is_file():
        try:
            written = json.loads(Path(outputs_path).read_text())
        except ValueError:
            written = {}
        if written.get("stage") == stack.stage and written.get("endpoint") == target.endpoint_url:
            Path(outputs_path).unlink()
    return report


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.bootstrap",
        description="Create, inspect or remove one esjoin stage on a local endpoint (or, explicitly, AWS).",
    )
    parser.add_argument("command", choices=("apply", "teardown", "outputs"))
    parser.add_argument(
        "--endpoint",
        help="local endpoint URL (default: $AWS_ENDPOINT_URL, else "
        "http://127.0.0.1:4566); only loopback, localhost, *.localhost "
        "or hosts in $ESJOIN_ALLOWED_HOSTS",
    )
    parser.add_argument("--stage", help="stage name (default: $ESJOIN_STAGE, else 'local')")
    parser.add_argument("--region", help="region (default: $ESJOIN_REGION, else us-east-1)")
    parser.add_argument(
        "--target",
        choices=(LOCAL, AWS),
        default=LOCAL,
        help="'aws' deploys to real AWS with the default credential chain; needs --stage",
    )
    parser.add_argument(
        "--outputs",
        type=Path,
        default=DEFAULT_OUTPUTS_PATH,
        help=f"where to write the outputs document (default: {DEFAULT_OUTPUTS_PATH})",
    )
    parser.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set snapshot_horizon_seconds=2 (repeatable)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds one resource may take to become ready (default: %(default)s)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the outputs document")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    log.propagate = False
    started = time.monotonic()
    try:
        overrides: dict[str, str] = parse_assignments(args.assignments)
        if args.stage is not None:
            overrides["stage"] = args.stage
        if args.region is not None:
            overrides["region"] = args.region
        settings = StackSettings.from_env(overrides=overrides)
        target = resolve_target(args.target, endpoint_url=args.endpoint, region=settings.region, stage=args.stage)
        stack = build_stack(settings)
        log.info("%s stage %s on %s", args.command, settings.stage, target.describe())
        if args.command == "teardown":
            report = teardown(stack, target, outputs_path=args.outputs, timeout=args.timeout)
            summary = report.summary().replace("no changes", "nothing to remove")
            print(
                json.dumps(
                    {
                        "stage": settings.stage,
                        "endpoint": target.endpoint_url,
                        "changes": report.to_list(),
                        "summary": summary,
                    },
                    indent=2,
                )
            )
        else:
            run = apply if args.command == "apply" else read_outputs
            outputs = run(stack, target, outputs_path=args.outputs, timeout=args.timeout)
            summary = outputs.summary
            print(outputs.to_json())
    except (SettingsError, TargetRefused) as exc:
        print(f"bootstrap: refused: {exc}", file=sys.stderr)
        return 2
    except (BootstrapError, TeardownError, WaitTimeout, ResourceFailed, PackageError) as exc:
        print(f"bootstrap: {args.command} failed: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # one line for the unexpected too; the traceback helps only developers
        log.debug("unexpected error", exc_info=True)
        print(f"bootstrap: {args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    log.info("%s: %s in %.2f s", args.command, summary, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
