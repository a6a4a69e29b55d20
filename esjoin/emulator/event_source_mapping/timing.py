"""How fast the pollers read and retry, per `ESJOIN_TIMING` (esjoin.emulator.config).

`fast`: a write wakes its pollers at once (ChangeNotifier); retries back off from 50 ms.
`aws`: AWS's documented poll rates, so latency looks like AWS's:
- Kinesis: "Lambda polls each shard in your Kinesis stream for records at a base rate of once per
  second. When more records are available, Lambda keeps processing batches until the function
  catches up with the stream." https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html
- DynamoDB Streams: "Lambda polls shards in your DynamoDB stream for records at a base rate of 4
  times per second." https://docs.aws.amazon.com/lambda/latest/dg/with-ddb.html
- SQS: long polling in both modes (a send wakes the poller, as a long poll returns at once).
AWS does not document its stream retry intervals; `aws` backs off from 1 s to 30 s.
"""

from __future__ import annotations

from dataclasses import dataclass

from esjoin.emulator.config import TIMING_AWS


@dataclass(frozen=True)
class PollTiming:
    kinesis_poll_seconds: float | None
    """Between two reads of a caught-up Kinesis shard; None: read when the stream is written."""
    dynamodb_poll_seconds: float | None
    """Between two reads of a caught-up DynamoDB stream shard; None: read when the table is written."""
    retry_backoff_seconds: float
    """First retry delay of a failed batch (function error or throttle); doubles per failure."""
    retry_backoff_cap_seconds: float
    """Longest retry delay."""
    source_recheck_seconds: float
    """How often a mapping whose source is missing looks again."""
    idle_recheck_seconds: float
    """Longest sleep with nothing due: a safety net (writes and completions wake the worker anyway)."""

    @classmethod
    def for_mode(cls, timing: str) -> PollTiming:
        if timing == TIMING_AWS:
            return cls(
                kinesis_poll_seconds=1.0,
                dynamodb_poll_seconds=0.25,
                retry_backoff_seconds=1.0,
                retry_backoff_cap_seconds=30.0,
                source_recheck_seconds=5.0,
                idle_recheck_seconds=5.0,
            )
        return cls(
            kinesis_poll_seconds=None,
            dynamodb_poll_seconds=None,
            retry_backoff_seconds=0.05,
            retry_backoff_cap_seconds=1.0,
            source_recheck_seconds=0.5,
            idle_recheck_seconds=1.0,
        )

    def backoff(self, failures_in_a_row: int) -> float:
        """Delay before the next attempt after `failures_in_a_row` consecutive failures (>= 1)."""
        exponent = max(0, min(failures_in_a_row - 1, 16))
        return min(self.retry_backoff_cap_seconds, self.retry_backoff_seconds * (2**exponent))
