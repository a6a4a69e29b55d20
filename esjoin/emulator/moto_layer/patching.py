"""How esjoin patches moto: one helper that checks what each patch replaces, and records it.

fixes.py and speed.py replace moto's functions, methods, properties and dictionary entries, and add
attributes to moto's objects. Each of those leans on a moto internal that a moto release may rename,
move or re-sign without notice. So every replacement goes through `replace()`, which:

- checks the target is there and is what the patch was written against (`expect=`: its signature,
  or the very object we expect to find), and otherwise raises `PatchMismatch` naming the patch, the
  target and moto's version: an upgrade fails at start-up, not with a wrong answer later;
- records the target, moto's own value there and the reason, so tests can put moto's code back and
  compare (tests/emulator/test_speed_*.py) and docs/moto-patches.md can list every patch;
- returns moto's own value, also when the patch is applied again: a second application wraps moto's
  code, never the first application's patch.

An attribute we add to instances of a moto class is declared with `graft()`, which returns the only
way to read or write it (a `Graft`): nobody else names the attribute, so renaming it, or finding
moto now uses the name, is a change in one place.

`python -m esjoin.emulator.moto_layer.patching > docs/moto-patches.md` rewrites the table of patches.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")

GRAFT_PREFIX = "_esjoin_"  # every attribute we add to a moto object starts so: moto never uses it


class PatchKind(enum.StrEnum):
    """Why a patch exists: moto differs from AWS (fixes.py), or does the same for more work (speed.py)."""

    FIX = "fix"
    SPEED = "speed"


class _Missing:
    """What a dictionary target holds when it has no entry (and what `expect=` says to require that)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
_NO_VALUE: Any = object()


class PatchMismatch(RuntimeError):
    """moto is not what a patch was written against: the target is gone or its signature changed."""

    def __init__(self, patch: str, target: str, expected: str, found: str) -> None:
        self.patch, self.target, self.expected, self.found = patch, target, expected, found
        self.moto_version = moto_version()
        super().__init__(
            f"{patch}: in moto {self.moto_version}, {target} is {found}, but the patch was written against "
            f"{expected}. Read moto's new code for it, then update the patch and its expect= "
            "(esjoin/emulator/moto_layer/, listed in docs/moto-patches.md)"
        )


class PatchConflict(RuntimeError):
    """Two different patches of one target: the second would silently undo the first."""


@dataclass(frozen=True)
class Patch:
    """One replacement in moto: `owner.name` (`owner[name]` when owner is a dict), moto's own value
    there (`original`, MISSING when a dict had no such entry) and ours (`replacement`)."""

    kind: PatchKind
    owner: Any
    name: str
    target: str  # "moto.kinesis.models.Shard.put_record", "moto.core.parse.PROTOCOL_PARSERS['json']"
    original: Any
    replacement: Any
    expect: Any  # a signature as signature_text writes it, else the object moto has there
    reason: str

    @property
    def label(self) -> str:
        """The patch's name in messages: its kind, its target and its reason."""
        return f"the {self.kind} patch of {self.target} ({self.reason})"


@dataclass(frozen=True)
class Graft(Generic[T]):
    """An attribute we add to instances of a moto class (`owner`, a dotted path: naming it does not
    import moto). Read and write it only through `get` and `set`."""

    owner: str
    name: str
    doc: str

    def get(self, instance: Any) -> T:
        return getattr(instance, self.name)

    def set(self, instance: Any, value: T) -> None:
        setattr(instance, self.name, value)

    def verify(self) -> type:
        """The owner class, checked to exist and not to have the attribute itself (moto would then
        read ours, or we moto's). Call where the patch that sets the attribute is installed."""
        label = f"the attribute {self.name} we add to {self.owner} ({self.doc})"
        module_name, _, class_name = self.owner.rpartition(".")
        try:
            owner = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            raise PatchMismatch(label, self.owner, expected=f"the class {self.owner}", found="missing") from None
        if hasattr(owner, self.name) or self.name in getattr(owner, "__slots__", ()):
            raise PatchMismatch(
                label, f"{self.owner}.{self.name}", expected="no such attribute in moto", found="defined by moto"
            )
        return owner


class PatchRegistry:
    """The patches and grafts applied in this process, in the order they were applied. One registry
    (`REGISTRY`) holds moto's; tests make their own for dummy classes."""

    def __init__(self) -> None:
        self._patches: list[Patch] = []
        self._grafts: list[Graft[Any]] = []

    def replace(
        self,
        owner: Any,
        name: str,
        value: Any = _NO_VALUE,
        *,
        kind: PatchKind,
        expect: Any,
        reason: str,
        wrap: Callable[[Any], Any] | None = None,
        owner_name: str | None = None,
    ) -> Any:
        """Put `value` at `owner.name` (`owner[name]` for a dict; `owner_name` then says what the dict
        is, e.g. "moto.core.parse.PROTOCOL_PARSERS") after checking what is there matches `expect`,
        and return moto's own value there. `wrap=`: the replacement is `wrap(moto's value)`, for
        patches built around moto's function (decorators).

        `expect` is the signature the patch was written against, as `signature_text` writes it
        ("(self, old, new)"), or the object itself we expect there (a module, a class, or MISSING:
        the dict has no such entry). Raises PatchMismatch when moto differs.
        """
        if (value is _NO_VALUE) == (wrap is None):
            raise TypeError("replace() takes the replacement or wrap=, one of them")
        if not reason.strip():
            raise ValueError(f"a patch of {name} needs a reason")
        target = target_name(owner, name, owner_name)
        index = next((i for i, patch in enumerate(self._patches) if patch.owner is owner and patch.name == name), None)
        if index is None:
            original = _current(owner, name)
        else:
            earlier = self._patches[index]
            if (earlier.kind, earlier.reason) != (kind, reason):
                raise PatchConflict(f"{target} is already patched: {earlier.label}; not also for {reason!r}")
            original = earlier.original  # applied again: moto's own value, never our earlier patch
        label = f"the {kind} patch of {target} ({reason})"
        problem = mismatch(expect, original)
        if problem is not None:
            raise PatchMismatch(label, target, describe_expectation(target, expect), problem)
        replacement = value if wrap is None else wrap(original)
        _install(owner, name, replacement)
        patch = Patch(kind, owner, name, target, original, replacement, expect, reason)
        if index is None:
            self._patches.append(patch)
        else:
            self._patches[index] = patch
        return original

    def graft(self, owner: str, name: str, *, doc: str) -> Graft[Any]:
        """Declare an attribute we add to instances of `owner` (a dotted class path); the returned
        Graft is the only way to read or write it."""
        if not name.startswith(GRAFT_PREFIX):
            raise ValueError(f"{name}: attributes we add to moto's objects start with {GRAFT_PREFIX!r}")
        if not doc.strip():
            raise ValueError(f"the attribute {name} on {owner} needs a doc")
        for graft in self._grafts:
            if (graft.owner, graft.name) == (owner, name):
                return graft
        graft: Graft[Any] = Graft(owner, name, doc)
        self._grafts.append(graft)
        return graft

    def patches(self, kind: PatchKind | None = None) -> tuple[Patch, ...]:
        return tuple(patch for patch in self._patches if kind is None or patch.kind == kind)

    def grafts(self) -> tuple[Graft[Any], ...]:
        return tuple(self._grafts)

    def view(self, kind: PatchKind) -> Sequence[Patch]:
        """The patches of one kind, live: what `patches(kind)` would return at each read."""
        return _PatchView(self, kind)


class _PatchView(Sequence[Patch]):
    def __init__(self, registry: PatchRegistry, kind: PatchKind) -> None:
        self._registry, self._kind = registry, kind

    @overload
    def __getitem__(self, index: int) -> Patch: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Patch]: ...

    def __getitem__(self, index: int | slice) -> Patch | Sequence[Patch]:
        return self._registry.patches(self._kind)[index]

    def __len__(self) -> int:
        return len(self._registry.patches(self._kind))

    def __iter__(self) -> Iterator[Patch]:
        return iter(self._registry.patches(self._kind))

    def __repr__(self) -> str:
        return f"<{self._kind} patches: {[patch.target for patch in self]}>"


REGISTRY = PatchRegistry()
replace = REGISTRY.replace
graft = REGISTRY.graft


# -- what a target is, and whether it is what a patch expects ---------------------------------------


def signature_text(value: Any) -> str:
    """A target's signature as `expect=` writes it: inspect.signature of the function (a property's
    getter), without annotations. moto's annotations are strings (`from __future__ import
    annotations`) that say nothing about how the patch calls it; names, order, kinds and defaults do."""
    function = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
    signature = inspect.signature(function)
    parameters = [parameter.replace(annotation=inspect.Parameter.empty) for parameter in signature.parameters.values()]
    return str(signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty))


def mismatch(expect: Any, found: Any) -> str | None:
    """None when `found` (moto's value at a target) is what `expect` says; else what it is instead."""
    if not isinstance(expect, str):
        return None if found is expect else describe(found)
    if found is MISSING:
        return "missing"
    try:
        text = signature_text(found)
    except (TypeError, ValueError):
        return f"{describe(found)}, which has no signature"
    return None if text == expect else f"{describe(found)} with signature {text}"


def describe_expectation(target: str, expect: Any) -> str:
    if isinstance(expect, str):
        return f"{target}{expect}"
    return "no entry" if expect is MISSING else describe(expect)


def describe(value: Any) -> str:
    if value is MISSING:
        return "missing"
    if isinstance(value, ModuleType):
        return f"the module {value.__name__}"
    if isinstance(value, property):
        return "a property"
    if inspect.isclass(value):
        return f"the class {value.__module__}.{value.__qualname__}"
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    return f"a {type(value).__name__}"


def target_name(owner: Any, name: str, owner_name: str | None = None) -> str:
    if isinstance(owner, dict):
        if not owner_name:
            raise ValueError(f"patching the dict entry {name!r} needs owner_name= (what the dict is, in moto)")
        return f"{owner_name}[{name!r}]"
    if isinstance(owner, ModuleType):
        return f"{owner.__name__}.{name}"
    return f"{owner.__module__}.{owner.__qualname__}.{name}"


def _current(owner: Any, name: str) -> Any:
    if isinstance(owner, dict):
        return owner.get(name, MISSING)
    try:
        return inspect.getattr_static(owner, name)  # the descriptor itself (a property, a function)
    except AttributeError:
        return MISSING


def _install(owner: Any, name: str, value: Any) -> None:
    if isinstance(owner, dict):
        owner[name] = value
    else:
        setattr(owner, name, value)


def moto_version() -> str:
    try:
        import moto
    except ImportError:
        return "(not installed)"
    return str(moto.__version__)


# -- the table in docs/moto-patches.md ----------------------------------------------------------------

REGENERATE = "python -m esjoin.emulator.moto_layer.patching > docs/moto-patches.md"


def patch_table(registry: PatchRegistry = REGISTRY) -> str:
    """Markdown listing every patch and graft in `registry`: docs/moto-patches.md, kept true by
    tests/emulator/test_moto_patching.py."""
    lines = [
        f"Generated from the patch registry (esjoin/emulator/moto_layer/patching.py): regenerate with `{REGENERATE}`.",
        "",
        "# moto patches",
        "",
        "Everything esjoin changes in moto, as `esjoin.emulator.moto_layer.fixes.apply()` installs it through",
        "`esjoin.emulator.moto_layer.patching.replace`, which checks each target against the signature the patch",
        "was written against (moto's version is pinned by `fixes.MOTO_VERSION`). *fix*: moto differs from AWS",
        "(fixes.py); *speed*: the same answer for less work (speed.py).",
        "",
        "| Target | Kind | Reason |",
        "|---|---|---|",
    ]
    lines += [f"| `{patch.target}` | {patch.kind} | {_cell(patch.reason)} |" for patch in registry.patches()]
    lines += [
        "",
        "## Attributes we add to moto's objects",
        "",
        "| Attribute | On | Why |",
        "|---|---|---|",
    ]
    lines += [f"| `{graft.name}` | `{graft.owner}` | {_cell(graft.doc)} |" for graft in registry.grafts()]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def main() -> None:
    """Print the table of the patches `fixes.apply()` installs (installing them in this process)."""
    # Under `python -m` this file runs as __main__, a second copy of the module: the registry fixes.py
    # fills is the one in esjoin.emulator.moto_layer.patching.
    from esjoin.emulator.moto_layer import fixes, patching
    from esjoin.emulator.moto_layer.notifier import ChangeNotifier

    fixes.apply(ChangeNotifier())
    sys.stdout.write(patching.patch_table())


if __name__ == "__main__":
    main()
