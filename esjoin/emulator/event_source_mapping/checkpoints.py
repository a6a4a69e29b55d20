"""Stream checkpoints that survive a restart: one JSON document per mapping.

`<state_dir>/checkpoints/<mapping uuid>.json` holds, per shard, the checkpoint (the last sequence
number before which every record is done: delivered successfully or sent to the on-failure
destination), the sequence numbers done beyond it (with ParallelizationFactor > 1, lanes finish out
of order), and whether the shard is finished (closed and fully processed). Written by replacing
the file atomically, so a crash leaves the previous or the new version, never half of one: at once
when the mapping has nothing left in flight or buffered, or is disabled, paused or stopped, and at
most every CHECKPOINT_INTERVAL_SECONDS while batches keep completing. Disabling then enabling a
mapping, or restarting the endpoint with the same state_dir, resumes from here: records done are
not delivered again, records not done are. After a crash (no orderly stop), the records completed in
the last interval are delivered again: at least once, as AWS delivers.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("esjoin.esm.checkpoints")

FORMAT_VERSION = 1
CHECKPOINT_INTERVAL_SECONDS = 1.0
"""While batches keep completing, how often the checkpoints are written (a write per batch cost ~0.4 ms)."""


@dataclass
class ShardCheckpoint:
    checkpoint: int | None  # None: nothing of the shard is done yet (read it from its start)
    done: list[int] = field(default_factory=list)  # done beyond the checkpoint, ascending
    finished: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "done": [str(number) for number in self.done],
            "finished": self.finished,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ShardCheckpoint:
        checkpoint = document.get("checkpoint")
        return cls(
            checkpoint=None if checkpoint is None else int(checkpoint),
            done=sorted(int(number) for number in document.get("done") or ()),
            finished=bool(document.get("finished")),
        )


class CheckpointStore:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, uuid: str) -> Path:
        return self.directory / f"{uuid}.json"

    def load(self, uuid: str, event_source_arn: str) -> dict[str, ShardCheckpoint] | None:
        """The mapping's shards as last saved, or None (never saved, another source, or unreadable)."""
        path = self.path(uuid)
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.warning(
                "checkpoint file %s is unreadable (%s); mapping %s starts from its StartingPosition", path, error, uuid
            )
            return None
        if document.get("eventSourceArn") != event_source_arn:
            log.warning(
                "checkpoint file %s is for %s, not %s; ignored", path, document.get("eventSourceArn"), event_source_arn
            )
            return None
        return {shard_id: ShardCheckpoint.from_json(shard) for shard_id, shard in document["shards"].items()}

    def save(self, uuid: str, event_source_arn: str, shards: dict[str, ShardCheckpoint]) -> None:
        document = {
            "version": FORMAT_VERSION,
            "uuid": uuid,
            "eventSourceArn": event_source_arn,
            "shards": {shard_id: shard.to_json() for shard_id, shard in sorted(shards.items())},
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{uuid}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(descriptor, "w") as file:
                json.dump(document, file, separators=(",", ":"))
            os.replace(temporary, self.path(uuid))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def delete(self, uuid: str) -> None:
        self.path(uuid).unlink(missing_ok=True)
