"""The outputs document: where every resource of a stage is, for the harness, the CLI and people.

Written as JSON (default ``.esjoin/outputs.json``), keys in camelCase like AWS's JSON. Logical keys
are those of `infra.stack` (tables: events, eventIds, snapshots, views; queues: snapshotRequests,
snapshotRequestsDlq, trimRequests, trimRequestsDlq, failures; functions and mappings: command,
consumer, trigger, snapshot, trim).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_OUTPUTS_PATH = Path(".esjoin") / "outputs.json"


@dataclass
class Outputs:
    target: str
    endpoint: str | None
    region: str
    account_id: str
    stage: str
    stream: dict[str, Any] = field(default_factory=dict)
    """{"name", "arn"}"""
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    """key -> {"name", "arn"} (+ "streamArn" for events)"""
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    """key -> {"name", "url", "arn"}"""
    role: dict[str, Any] = field(default_factory=dict)
    """{"name", "arn"}"""
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)
    """key -> {"name", "arn", "handler", "codeSha256"}"""
    mappings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """function key -> {"uuid", "function", "source", "state"}"""
    settings: dict[str, Any] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "endpoint": self.endpoint,
            "region": self.region,
            "accountId": self.account_id,
            "stage": self.stage,
            "stream": self.stream,
            "tables": self.tables,
            "queues": self.queues,
            "role": self.role,
            "functions": self.functions,
            "mappings": self.mappings,
            "settings": self.settings,
            "changes": self.changes,
            "summary": self.summary,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Outputs:
        return cls(
            target=document.get("target", "local"),
            endpoint=document.get("endpoint"),
            region=document["region"],
            account_id=document["accountId"],
            stage=document["stage"],
            stream=document.get("stream", {}),
            tables=document.get("tables", {}),
            queues=document.get("queues", {}),
            role=document.get("role", {}),
            functions=document.get("functions", {}),
            mappings=document.get("mappings", {}),
            settings=document.get("settings", {}),
            changes=document.get("changes", []),
            summary=document.get("summary", ""),
        )

    @classmethod
    def load(cls, path: Path = DEFAULT_OUTPUTS_PATH) -> Outputs:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def write(self, path: Path = DEFAULT_OUTPUTS_PATH) -> Path:
        """Atomically (write then rename), so a reader never sees half a document."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(self.to_json() + "\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
