"""Every patch of moto goes through esjoin.emulator.moto_layer.patching, which checks what it replaces.

- Given moto patched as the endpoint patches it (`fixes.apply`), every recorded patch's target still has
  the signature the patch was written against: a moto upgrade that changes one fails here, naming it.
- Given a dummy class (not moto), the helper refuses a patch whose target is missing or re-signed, with
  a PatchMismatch naming the patch, the target and moto's version, and leaves the target as it was.
- Applied twice, a patch wraps moto's own code again, never its first application.
- The registry lists every patch with a reason, nothing in fixes.py or speed.py patches moto behind
  its back, the attributes we add to moto's objects are named only where they are declared, and
  docs/moto-patches.md is the registry's table.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import moto
import pytest

from esjoin.emulator.moto_layer import fixes as moto_fixes
from esjoin.emulator.moto_layer import patching
from esjoin.emulator.moto_layer import speed as moto_speed
from esjoin.emulator.moto_layer.notifier import ChangeNotifier
from esjoin.emulator.moto_layer.patching import MISSING, PatchConflict, PatchKind, PatchMismatch, PatchRegistry

REPO = Path(__file__).resolve().parents[2]
MOTO_LAYER = REPO / "esjoin" / "emulator" / "moto_layer"


@pytest.fixture(scope="module")
def patched() -> Iterator[None]:
    """moto patched as the endpoint patches it (once a process; other modules may have done it already)."""
    notifier = ChangeNotifier()
    moto_fixes.apply(notifier)
    try:
        yield
    finally:
        moto_fixes.release(notifier)


def current(patch: patching.Patch) -> Any:
    if isinstance(patch.owner, dict):
        return patch.owner.get(patch.name, MISSING)
    return inspect.getattr_static(patch.owner, patch.name)


# -- moto as patched ------------------------------------------------------------------------------------


def test_every_patch_s_target_has_the_signature_it_was_written_against(patched: None) -> None:
    patches = patching.REGISTRY.patches()
    assert patches
    mismatches = [
        f"{patch.label}: {patching.mismatch(patch.expect, patch.original)}"
        for patch in patches
        if patching.mismatch(patch.expect, patch.original) is not None
    ]
    assert not mismatches, "\n".join(mismatches)
    for patch in patches:
        if isinstance(patch.expect, str):
            assert patching.signature_text(patch.original) == patch.expect, patch.label


def test_every_patch_is_installed_and_listed_with_its_kind_and_a_reason(patched: None) -> None:
    patches = patching.REGISTRY.patches()
    targets = [patch.target for patch in patches]
    assert len(targets) == len(set(targets)), "one patch a target"
    assert all(patch.reason.strip() for patch in patches)
    assert {patch.kind for patch in patches} == set(PatchKind)
    for patch in patches:
        assert current(patch) is patch.replacement, f"{patch.label} is not installed"
        assert patch.original is not patch.replacement
    # speed.REPLACED (what tests/emulator/test_speed_*.py puts back) is the speed patches, live.
    assert list(moto_speed.REPLACED) == list(patching.REGISTRY.patches(PatchKind.SPEED))
    assert len(moto_speed.REPLACED) == 13 and len(patching.REGISTRY.patches(PatchKind.FIX)) == 20


@pytest.mark.parametrize("module", ["fixes.py", "speed.py"])
def test_nothing_patches_moto_but_through_the_helper(module: str) -> None:
    """No assignment to (or setattr on) anything imported from moto, other than through patching.replace."""
    tree = ast.parse((MOTO_LAYER / module).read_text())
    from_moto = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "moto"
        for alias in node.names
    }
    direct = []
    for node in ast.walk(tree):
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AugAssign | ast.AnnAssign)
            else []
        )
        for target in targets:
            root = target
            while isinstance(root, ast.Attribute | ast.Subscript):
                root = root.value
            if target is not root and isinstance(root, ast.Name) and root.id in from_moto:
                direct.append(f"line {node.lineno}: {ast.unparse(target)}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr":
            direct.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert not direct, f"{module} patches moto directly: {direct}"


def test_attributes_we_add_to_moto_objects_are_named_only_where_declared() -> None:
    grafts = {graft.name for graft in patching.REGISTRY.grafts()}
    assert "_esjoin_sequence_numbers" in grafts
    naming = re.compile(r"\b_esjoin_\w+")
    found = {
        path.relative_to(REPO).as_posix(): sorted(set(naming.findall(path.read_text())))
        for path in (REPO / "esjoin").rglob("*.py")
        if naming.search(path.read_text())
    }
    assert found == {"esjoin/emulator/moto_layer/fixes.py": sorted(grafts)}


def test_a_moto_that_changed_a_patched_signature_fails_start_up_naming_the_patch() -> None:
    """As a moto release might: Shard.get_records grows a parameter. fixes.apply() refuses to start."""
    script = (
        "from moto.kinesis.models import Shard\n"
        "def get_records(self, last_sequence_id, limit, shard_filter=None): ...\n"
        "Shard.get_records = get_records\n"
        "from esjoin.emulator.moto_layer import fixes\n"
        "from esjoin.emulator.moto_layer.notifier import ChangeNotifier\n"
        "fixes.apply(ChangeNotifier())\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=environment, timeout=120
    )
    assert result.returncode != 0, result.stdout
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(
        "esjoin.emulator.moto_layer.patching.PatchMismatch: the fix patch of moto.kinesis.models.Shard.get_records ("
    ), error
    assert f"moto {moto.__version__}" in error, error
    assert "(self, last_sequence_id, limit, shard_filter=None)" in error, error
    assert "written against moto.kinesis.models.Shard.get_records(self, last_sequence_id, limit)" in error, error


def test_applied_twice_each_patch_still_wraps_moto_s_own_code(patched: None) -> None:
    before = {(id(patch.owner), patch.name): patch for patch in patching.REGISTRY.patches()}
    moto_fixes.install_patches()
    after = patching.REGISTRY.patches()
    assert {(id(patch.owner), patch.name) for patch in after} == set(before)
    earlier_replacements = {id(patch.replacement) for patch in before.values()}
    for patch in after:
        assert patch.original is before[(id(patch.owner), patch.name)].original, patch.label
        assert current(patch) is patch.replacement, patch.label
        reached = [value for value in reachable(patch.replacement) if id(value) in earlier_replacements]
        assert not reached, f"{patch.label} wraps an earlier patch: {reached}"


def reachable(value: Any, depth: int = 3) -> Iterator[Any]:
    """What a replacement calls into: its closure's values and __wrapped__, a few levels down."""
    if depth == 0:
        return
    function = value.fget if isinstance(value, property) else value
    inner = [cell.cell_contents for cell in getattr(function, "__closure__", None) or ()]
    inner += [function.__wrapped__] if hasattr(function, "__wrapped__") else []
    for item in inner:
        yield item
        yield from reachable(item, depth - 1)


def test_docs_moto_patches_is_the_registry_s_table(patched: None) -> None:
    written = (REPO / "docs" / "moto-patches.md").read_text()
    assert written.splitlines()[0].endswith(f"regenerate with `{patching.REGENERATE}`.")
    assert written == patching.patch_table(), f"docs/moto-patches.md is stale: {patching.REGENERATE}"


# -- the helper, on a dummy class ------------------------------------------------------------------------


class Ledger:
    """Stands in for a moto model."""

    def append(self, entry: str, *, at: int | None = None) -> list[str]:
        return [entry]


def loud(self: Ledger, entry: str, *, at: int | None = None) -> list[str]:
    return [entry.upper()]


LEDGER = f"{Ledger.__module__}.Ledger"


@pytest.fixture
def ledger() -> Iterator[type[Ledger]]:
    original = Ledger.append
    yield Ledger
    Ledger.append = original  # type: ignore[method-assign]


def test_a_missing_target_is_a_mismatch_naming_the_patch_the_target_and_moto_s_version(ledger: type) -> None:
    registry = PatchRegistry()
    with pytest.raises(PatchMismatch) as raised:
        registry.replace(ledger, "close", loud, kind=PatchKind.FIX, expect="(self)", reason="closing is louder")
    message = str(raised.value)
    assert message.startswith(
        f"the fix patch of {LEDGER}.close (closing is louder): in moto {moto.__version__}, "
        f"{LEDGER}.close is missing, but the patch was written against {LEDGER}.close(self)"
    )
    assert raised.value.target == f"{LEDGER}.close" and raised.value.moto_version == moto.__version__
    assert not hasattr(ledger, "close") and registry.patches() == ()

    with pytest.raises(PatchMismatch, match=re.escape("of PROTOCOL_PARSERS['xml'] (parsers): in moto")):
        registry.replace(
            {}, "xml", object, kind=PatchKind.SPEED, expect=object, reason="parsers", owner_name="PROTOCOL_PARSERS"
        )


def test_a_changed_signature_is_a_mismatch_naming_both_signatures(ledger: type) -> None:
    registry = PatchRegistry()
    with pytest.raises(PatchMismatch) as raised:
        registry.replace(ledger, "append", loud, kind=PatchKind.SPEED, expect="(self, entry)", reason="louder")
    message = str(raised.value)
    assert f"the speed patch of {LEDGER}.append (louder)" in message
    assert "with signature (self, entry, *, at=None)" in message
    assert f"written against {LEDGER}.append(self, entry)" in message
    assert ledger.append is not loud and registry.patches() == ()


def test_an_object_expected_by_identity_or_absence_is_checked(ledger: type) -> None:
    registry = PatchRegistry()
    parsers: dict[str, Any] = {"json": dict}
    speed = {"kind": PatchKind.SPEED, "reason": "r", "owner_name": "P"}
    with pytest.raises(
        PatchMismatch, match=re.escape("is the class builtins.dict, but the patch was written against no")
    ):
        registry.replace(parsers, "json", list, expect=MISSING, **speed)
    with pytest.raises(PatchMismatch, match=re.escape("written against the class builtins.list")):
        registry.replace(parsers, "json", list, expect=list, **speed)
    assert registry.replace(parsers, "json", list, expect=dict, **speed) is dict
    assert parsers == {"json": list}
    assert registry.replace(parsers, "xml", set, expect=MISSING, **speed) is MISSING
    assert [patch.target for patch in registry.patches()] == ["P['json']", "P['xml']"]


def test_applied_twice_a_patch_keeps_the_true_original(ledger: type) -> None:
    registry = PatchRegistry()
    moto_own = ledger.append

    def shouting(original: Any) -> Any:
        def append(self: Ledger, entry: str, *, at: int | None = None) -> list[str]:
            return [item.upper() for item in original(self, entry, at=at)]

        return append

    for _ in range(2):
        returned = registry.replace(
            ledger, "append", wrap=shouting, kind=PatchKind.FIX, expect="(self, entry, *, at=None)", reason="shouting"
        )
        assert returned is moto_own
    (patch,) = registry.patches()
    assert patch.original is moto_own and ledger.append is patch.replacement
    assert ledger().append("a") == ["A"]  # one layer of shouting, around moto's own append

    with pytest.raises(PatchConflict, match="already patched"):
        registry.replace(
            ledger, "append", loud, kind=PatchKind.SPEED, expect="(self, entry, *, at=None)", reason="another reason"
        )


def test_every_patch_needs_a_reason_and_one_replacement(ledger: type) -> None:
    registry = PatchRegistry()
    with pytest.raises(ValueError, match="needs a reason"):
        registry.replace(ledger, "append", loud, kind=PatchKind.FIX, expect="(self, entry, *, at=None)", reason=" ")
    with pytest.raises(TypeError):
        registry.replace(ledger, "append", kind=PatchKind.FIX, expect="(self, entry, *, at=None)", reason="r")
    with pytest.raises(ValueError, match="owner_name"):
        registry.replace({}, "json", list, kind=PatchKind.FIX, expect=MISSING, reason="r")
    assert registry.patches() == ()


def test_a_graft_is_declared_once_and_refuses_a_name_moto_has(ledger: type, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = PatchRegistry()
    entries = registry.graft(LEDGER, "_esjoin_entries", doc="what the ledger saw")
    assert registry.graft(LEDGER, "_esjoin_entries", doc="what the ledger saw") is entries
    assert entries.verify() is Ledger
    book = Ledger()
    entries.set(book, ["a"])
    assert entries.get(book) == ["a"]
    with pytest.raises(ValueError, match="_esjoin_"):
        registry.graft(LEDGER, "entries", doc="no prefix")
    monkeypatch.setattr(Ledger, "_esjoin_entries", [], raising=False)  # as if moto now had the name
    with pytest.raises(PatchMismatch, match="defined by moto"):
        entries.verify()
    with pytest.raises(PatchMismatch, match="is missing"):
        registry.graft(f"{Ledger.__module__}.Journal", "_esjoin_entries", doc="d").verify()
