"""Pollers, one per kind of source: stream.py (shared by kinesis.py and dynamodb_streams.py), sqs.py."""
