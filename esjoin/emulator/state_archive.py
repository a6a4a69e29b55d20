"""Save and load the whole endpoint: every service's data, the functions, the mappings and their checkpoints.

    POST /_esjoin/state/save    -> the archive (application/zip)
    POST /_esjoin/state/load    <- an archive: the endpoint is emptied, then becomes what was saved
    esjoin state save FILE | esjoin state load FILE | esjoin state reset

The archive is a zip file:

    manifest.json             {"format": "esjoin-state", "version": 1, "esjoinVersion", "motoVersion",
                               "accountId", "savedAt", "functions", "eventSourceMappings"}
    moto.pickle               moto's backends of this account, per service and region (streams and their
                              records, tables, items and stream records, queues and their messages with
                              their visibility, log groups, roles)
    lambda.pickle             the functions' configurations and the mappings (under their own UUIDs)
    code/<region>/<name>.zip  each function's code
    checkpoints/<uuid>.json   each stream mapping's checkpoint, as the mapping resumes from it

A save pauses every mapping and waits for the invocations in flight to end, so the checkpoints and
the data agree: after a load, a mapping resumes from its checkpoint, and what it had read but not
finished is delivered again (at least once, as AWS delivers after a failover); SQS messages that were
in flight become visible when their visibility timeout ends. Loading is all or nothing: the archive is
read and checked whole first, and if applying it fails half-way the endpoint is emptied again.

moto's state travels as Python pickles (moto has no other serialisation), so a state file runs code
when loaded, as LocalStack's persistence files do: load only files you made. A file from another
esjoin format or another moto version is refused before anything is unpickled.
"""

from __future__ import annotations

import copyreg
import io
import json
import pickle
import threading
import time
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import moto

if TYPE_CHECKING:
    from esjoin.emulator.server import Emulator

FORMAT = "esjoin-state"
FORMAT_VERSION = 1
QUIET_WAIT_SECONDS = 60.0
"""How long a save waits for the invocations in flight to end once the mappings are paused."""


class StateError(ValueError):
    """A state file that cannot be loaded (or a save that could not be taken), with the reason."""


@dataclass(frozen=True)
class LambdaState:
    functions: list[tuple[Any, str]]  # (Function with code_dir unset, archive member of its zip)
    mappings: list[Any]  # EventSourceMapping


def _fresh_lock(_: Any) -> tuple[Any, tuple[()]]:
    return threading.RLock, ()


def _fresh_plain_lock(_: Any) -> tuple[Any, tuple[()]]:
    return threading.Lock, ()


def _fresh_condition(_: Any) -> tuple[Any, tuple[()]]:
    return threading.Condition, ()


class _StatePickler(pickle.Pickler):
    """moto's SQS queues hold a Condition (and so a lock): saved as new ones, which is what they are worth."""

    dispatch_table = copyreg.dispatch_table.copy()
    dispatch_table[type(threading.RLock())] = _fresh_lock
    dispatch_table[type(threading.Lock())] = _fresh_plain_lock
    dispatch_table[threading.Condition] = _fresh_condition


def _dumps(value: Any) -> bytes:
    buffer = io.BytesIO()
    _StatePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


def save(emulator: Emulator) -> bytes:
    """The endpoint's whole state, as an archive (see the module docstring)."""
    backend = emulator.lambda_backend
    assert backend is not None, "save() before start()"
    engine = backend.engine
    paused = [uuid for uuid in list(backend.mappings) if not _is_paused(engine, uuid)]
    for uuid in paused:
        engine.pause(uuid)
    try:
        deadline = time.monotonic() + QUIET_WAIT_SECONDS
        scheduler = emulator.scheduler
        if scheduler is not None:  # deterministic mode: the invocations run while this request waits
            scheduler.wait_until("save: invocations to end", lambda: not backend.activity()["inFlight"])
        while backend.activity()["inFlight"] and time.monotonic() < deadline:
            time.sleep(0.02)  # invocations end on their own threads; nothing to wait on but the count
        if backend.activity()["inFlight"]:
            raise StateError(f"invocations still running after {QUIET_WAIT_SECONDS:.0f} s; save again when quieter")
        checkpoints = engine.checkpoint_documents()
        with emulator.moto.lock():
            moto_state = _dumps(emulator.moto.account_state())
        functions = backend.export_functions()
        mappings = backend.export_event_source_mappings()
    finally:
        for uuid in paused:
            try:
                engine.resume(uuid)
            except Exception:  # deleted meanwhile: nothing to resume
                continue
    lambda_state = LambdaState(
        functions=[(function, f"code/{function.region}/{function.name}.zip") for function, _ in functions],
        mappings=mappings,
    )
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "esjoinVersion": _this_version(),
        "motoVersion": moto.__version__,
        "accountId": emulator.config.account_id,
        "savedAt": int(time.time() * 1000),
        "functions": len(functions),
        "eventSourceMappings": len(mappings),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=2))
        archive.writestr("moto.pickle", moto_state)
        archive.writestr("lambda.pickle", _dumps(lambda_state))
        for (_, code), (_, member) in zip(functions, lambda_state.functions, strict=True):
            archive.writestr(member, code)
        for uuid, document in checkpoints.items():
            archive.writestr(f"checkpoints/{uuid}.json", document)
    return buffer.getvalue()


def load(emulator: Emulator, data: bytes, source: str = "the state file") -> dict[str, Any]:
    """Empty the endpoint and make it what `data` (an archive from `save`) describes; all or nothing."""
    backend = emulator.lambda_backend
    assert backend is not None, "load() before start()"
    manifest, moto_state, lambda_state, codes, checkpoints = _read(data, source, emulator.config.account_id)
    emulator.reset_state()
    try:
        with emulator.moto.lock():
            emulator.moto.restore_account_state(moto_state)
        for function, member in lambda_state.functions:
            backend.import_function(function, codes[member])
        for uuid, document in checkpoints.items():
            backend.engine.restore_checkpoint(uuid, document)
        for mapping in lambda_state.mappings:
            backend.import_event_source_mapping(mapping)
    except Exception as error:
        emulator.reset_state()
        raise StateError(
            f"{source}: could not be applied ({type(error).__name__}: {error}); the endpoint was left empty"
        ) from error
    return {
        "loaded": True,
        "savedAt": manifest["savedAt"],
        "functions": len(lambda_state.functions),
        "eventSourceMappings": len(lambda_state.mappings),
    }


def _read(
    data: bytes, source: str, account_id: str
) -> tuple[dict[str, Any], Any, LambdaState, dict[str, bytes], dict[str, str]]:
    """Everything in the archive, checked, before the endpoint is touched."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = set(archive.namelist())
        if "manifest.json" not in names:
            raise StateError(f"{source}: not an esjoin state file (no manifest.json)")
        manifest = json.loads(archive.read("manifest.json"))
    except zipfile.BadZipFile:
        raise StateError(f"{source}: not an esjoin state file (not a zip archive, or truncated)") from None
    except (ValueError, KeyError, OSError, EOFError) as error:
        raise StateError(f"{source}: unreadable manifest ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StateError(f"{source}: not an esjoin state file (format {manifest.get('format')!r})")
    if manifest.get("version") != FORMAT_VERSION:
        raise StateError(
            f"{source}: state format version {manifest.get('version')!r}; this esjoin reads version {FORMAT_VERSION}"
        )
    if manifest.get("motoVersion") != moto.__version__:
        raise StateError(
            f"{source}: saved with moto {manifest.get('motoVersion')}, this endpoint runs moto "
            f"{moto.__version__}: moto's state cannot move between versions"
        )
    if manifest.get("accountId") != account_id:
        raise StateError(
            f"{source}: saved for account {manifest.get('accountId')}, this endpoint serves {account_id} "
            "(ESJOIN_ACCOUNT_ID)"
        )
    try:
        moto_state = pickle.loads(archive.read("moto.pickle"))
        lambda_state = pickle.loads(archive.read("lambda.pickle"))
        codes = {member: archive.read(member) for _, member in lambda_state.functions}
        checkpoints = {
            name[len("checkpoints/") : -len(".json")]: archive.read(name).decode()
            for name in names
            if name.startswith("checkpoints/") and name.endswith(".json")
        }
    except (
        zipfile.BadZipFile,
        KeyError,
        EOFError,
        OSError,
        ValueError,
        pickle.UnpicklingError,
        AttributeError,
        ImportError,
        TypeError,
    ) as error:
        raise StateError(f"{source}: corrupt or incomplete ({type(error).__name__}: {error})") from None
    if not isinstance(lambda_state, LambdaState):
        raise StateError(f"{source}: corrupt (lambda.pickle holds no function and mapping list)")
    return manifest, moto_state, lambda_state, codes, checkpoints


def _is_paused(engine: Any, uuid: str) -> bool:
    try:
        return bool(engine.status(uuid).get("paused"))
    except Exception:  # not running (deleted meanwhile)
        return True


def _this_version() -> str:
    import esjoin

    return esjoin.__version__
