"""esjoin: a local AWS endpoint (Kinesis, DynamoDB Streams, SQS, Lambda) and a test harness for
event-sourced pipelines.

    esjoin.emulator   the embedded endpoint (`python -m esjoin.emulator`, `esjoin.emulator.Emulator`)
    esjoin.testing    the pytest plugin, backends, waits, the demo pipeline's oracle and checks
    esjoin.target     where a client may send requests: the local-endpoint guard and dummy credentials
    esjoin.cli        the `esjoin` command

Importing this package imports nothing else (the LocalStack bootstrap hook reads esjoin.target with
LocalStack's own Python, which has boto3 and nothing of ours installed).
"""

__version__ = "0.1.0"
