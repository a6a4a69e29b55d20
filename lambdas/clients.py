"""The boto3 clients of a warm container: one per service, created on first use and reused across
invocations, as AWS recommends (https://docs.aws.amazon.com/lambda/latest/dg/best-practices.html).

The endpoint is never configured here: boto3 reads ``AWS_ENDPOINT_URL`` itself (see config.py).
"""

from __future__ import annotations

import functools
from typing import Any

import boto3
from botocore.config import Config

CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=20)


@functools.cache
def aws_client(service: str) -> Any:
    """This container's client for `service` ("dynamodb", "sqs", "kinesis")."""
    return boto3.client(service, config=CLIENT_CONFIG)
