"""A client for the embedded endpoint's control API (/_esjoin/, see emulator/control.py).

Requests go straight to the endpoint, whatever HTTP_PROXY says (esjoin.testing.health.direct_opener): the
control API is on this machine, where no proxy can reach it."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from esjoin.testing.health import direct_opener


class ControlApiError(RuntimeError):
    pass


class ControlClient:
    def __init__(self, endpoint_url: str, timeout: float = 10.0) -> None:
        self.base = endpoint_url.rstrip("/") + "/_esjoin"
        self.timeout = timeout

    def _call(self, method: str, path: str, document: dict | None = None) -> Any:
        data = json.dumps(document).encode() if document is not None else None
        return json.loads(self._send(method, path, data, "application/json", self.timeout) or b"null")

    def _send(self, method: str, path: str, data: bytes | None, content_type: str, timeout: float) -> bytes:
        """One request, directly (no proxy: the endpoint is local); its body, or ControlApiError."""
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": content_type}
        )
        try:
            with direct_opener().open(request, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise ControlApiError(f"{method} {path}: HTTP {error.code}: {detail}") from None

    def health(self) -> dict:
        return self._call("GET", "/health")

    def is_ready(self) -> bool:
        try:
            return self.health().get("status") == "ready"
        except (OSError, ControlApiError, ValueError):
            return False

    def quiescence(self) -> dict:
        return self._call("GET", "/quiescence")

    def history(
        self, function: str | None = None, mapping: str | None = None, since: int = 0, limit: int | None = None
    ) -> dict:
        query = "&".join(
            f"{k}={v}"
            for k, v in (("function", function), ("mapping", mapping), ("since", since), ("limit", limit))
            if v
        )
        return self._call("GET", "/history" + (f"?{query}" if query else ""))

    def add_fault(self, action: str, **rule: Any) -> dict:
        """A fault rule (emulator/faults.py): add_fault("error", function="x", count=2, match="user-1"),
        add_fault("delay", operation="PutItem", match="snapshots", delay_seconds=1, count=1)."""
        names = {
            "delay_seconds": "delaySeconds",
            "error_type": "errorType",
            "error_message": "errorMessage",
            "status_code": "statusCode",
        }
        document = {names.get(key, key): value for key, value in rule.items() if value is not None}
        return self._call("POST", "/faults", {"action": action, **document})

    def save_state(self) -> bytes:
        """The endpoint's whole state, as an archive (esjoin/emulator/state_archive.py)."""
        return self._send("POST", "/state/save", b"", "application/json", max(self.timeout, 120))

    def load_state(self, archive: bytes, source: str = "the state file") -> dict:
        """Make the endpoint what a saved archive describes (all or nothing)."""
        path = "/state/load?" + urllib.parse.urlencode({"source": source})
        return json.loads(self._send("POST", path, archive, "application/zip", max(self.timeout, 300)))

    def reset_state(self) -> dict:
        """Empty the endpoint (functions, mappings, streams, tables, queues, history, faults) without a restart."""
        return self._call("POST", "/state/reset")

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def faults(self) -> list[dict]:
        """The active fault rules (a rule with a count disappears once it has been used that often)."""
        return self._call("GET", "/faults")["faults"]

    def remove_fault(self, rule_id: str) -> bool:
        """Remove one rule; False if it was already gone (used up)."""
        try:
            self._call("DELETE", f"/faults/{rule_id}")
        except ControlApiError as error:
            if "HTTP 404" in str(error):
                return False
            raise
        return True

    def mapping(self, uuid: str) -> dict:
        return self._call("GET", f"/mappings/{uuid}")

    def pause(self, uuid: str) -> dict:
        return self._call("POST", f"/mappings/{uuid}/pause")

    def resume(self, uuid: str) -> dict:
        return self._call("POST", f"/mappings/{uuid}/resume")

    def duplicate_next(self, uuid: str, count: int = 1) -> dict:
        return self._call("POST", f"/mappings/{uuid}/duplicate", {"count": count})

    # -- deterministic mode (docs/reproduce.md) ----------------------------------------------------

    def schedule(self) -> dict:
        """Seed, step, virtual clock, actors, and a replay's divergence."""
        return self._call("GET", "/schedule")

    def trace(self) -> bytes:
        """The trace so far: gzip-compressed JSON lines."""
        return self._send("GET", "/trace", None, "application/json", max(self.timeout, 120))

    def submit_inputs(self, requests: list[dict], blobs: dict[str, bytes] | None = None) -> int:
        """Scripted outside requests the seed admits one after the other (esjoin.testing.reproduce)."""
        encoded = {digest: base64.b64encode(data).decode() for digest, data in (blobs or {}).items()}
        return self._call("POST", "/schedule/inputs", {"requests": requests, "blobs": encoded})["submitted"]
