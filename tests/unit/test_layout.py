"""The layout is the architecture (docs/ARCHITECTURE.md): imports only run down the rooms.

- `lambdas` imports nothing of this repository but itself;
- `infra` imports `lambdas`, boto3 and `esjoin.target` (the local-endpoint guard), nothing else of ours;
- `esjoin.emulator` imports neither the application (`lambdas`, `infra`) nor the harness (`esjoin.testing`,
  `esjoin.cli`): it runs whatever functions are created through its Lambda API, as AWS does;
- `esjoin.testing` reaches the application only inside functions (the demo's fixtures and helpers), never at
  import time, so installing the plugin into another project (with its own `infra`) imports none of ours;
- inside the endpoint, a room imports only rooms below it (ROOMS, bottom first), and no package of the
  repository is in an import cycle with another;
- nothing imports `tests`, and no file names a path outside the repository.
"""

from __future__ import annotations

import ast
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Rooms of the endpoint, bottom first: a module may import from its own room and the rooms before it.
ROOMS = [
    ("esjoin.emulator.config",),
    (
        "esjoin.emulator.invocation",
        "esjoin.emulator.aws_errors",
        "esjoin.emulator.json_limits",
        "esjoin.emulator.aids",
        "esjoin.emulator.moto_layer",
    ),
    ("esjoin.emulator.event_source_mapping",),
    ("esjoin.emulator.lambda_service",),
    ("esjoin.emulator.http",),
    (
        "esjoin.emulator.server",
        "esjoin.emulator.state_lock",
        "esjoin.emulator.state_archive",
        "esjoin.emulator.__main__",
        "esjoin.emulator",
    ),
]


def python_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [REPO / name for name in listed if (REPO / name).is_file()]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: list[tuple[str, bool]] = []
    top_level = {id(node) for node in tree.body}
    type_only = {
        id(inner)
        for node in tree.body
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue  # annotations only: never imported at run time
        at_top = id(node) in top_level
        if isinstance(node, ast.Import):
            found += [(alias.name, at_top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found += [
                (f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base, at_top) for alias in node.names
            ]
    return found


def _is_module(name: str) -> bool:
    path = REPO / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def room_of(module: str) -> int | None:
    for rank, packages in enumerate(ROOMS):
        if any(module == p or (p != "esjoin.emulator" and within(module, p)) for p in packages):
            return rank
    return None


GRAPH = {module_name(path): imports(path) for path in python_files()}


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if within(m, "lambdas")))
def test_lambdas_import_only_themselves(module: str) -> None:
    ours = [name for name, _ in GRAPH[module] if name.split(".")[0] in {"infra", "esjoin", "tests", "bench"}]
    assert not ours, f"{module} imports {ours}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if within(m, "infra")))
def test_infra_imports_lambdas_and_the_target_guard_only(module: str) -> None:
    ours = [
        name
        for name, _ in GRAPH[module]
        if name.split(".")[0] in {"esjoin", "tests", "bench"} and not within(name, "esjoin.target")
    ]
    assert not ours, f"{module} imports {ours}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if within(m, "esjoin.emulator")))
def test_the_endpoint_knows_nothing_of_the_application_or_the_harness(module: str) -> None:
    wrong = [
        name
        for name, _ in GRAPH[module]
        if name.split(".")[0] in {"lambdas", "infra", "tests", "bench"}
        or within(name, "esjoin.testing")
        or within(name, "esjoin.cli")
    ]
    assert not wrong, f"{module} imports {wrong}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if within(m, "esjoin.emulator") and room_of(m) is not None))
def test_endpoint_rooms_import_only_downwards(module: str) -> None:
    rank = room_of(module)
    upward = [name for name, _ in GRAPH[module] if within(name, "esjoin.emulator") and (room_of(name) or 0) > rank]
    assert not upward, f"{module} (room {ROOMS[rank]}) imports from rooms above it: {upward}"


@pytest.mark.parametrize(
    "module", sorted(m for m in GRAPH if within(m, "esjoin.testing") or m == "esjoin.cli" or within(m, "esjoin.target"))
)
def test_the_installed_tool_imports_the_application_only_inside_functions(module: str) -> None:
    at_import = [name for name, top in GRAPH[module] if top and name.split(".")[0] in {"lambdas", "infra"}]
    assert not at_import, f"{module} imports {at_import} when it is imported (the plugin loads in other projects)"


def test_nothing_imports_tests() -> None:
    offenders = {m: [n for n, _ in deps if within(n, "tests")] for m, deps in GRAPH.items() if not within(m, "tests")}
    assert not {m: d for m, d in offenders.items() if d}


def test_no_import_cycle_between_packages_when_imported() -> None:
    def package(module: str) -> str:
        path = REPO / Path(*module.split("."))
        return module if (path / "__init__.py").is_file() else module.rpartition(".")[0]

    edges: dict[str, set[str]] = defaultdict(set)
    for module, deps in GRAPH.items():
        if within(module, "tests"):
            continue
        for name, at_import in deps:  # what runs when the module is imported: a lazy import makes no cycle
            if at_import and name.split(".")[0] in {"esjoin", "lambdas", "infra", "bench"} and name in GRAPH:
                source, target = package(module), package(name)
                if source != target and not within(source, target) and not within(target, source):
                    edges[source].add(target)
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        for nxt in edges.get(node, ()):
            if nxt in stack:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif len(stack) < 12:
                visit(nxt, [*stack, nxt])

    for start in list(edges):
        visit(start, [start])
    assert not cycles, f"import cycles between packages: {cycles[:5]}"


def test_no_file_names_a_path_outside_the_repository() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    outside = re.compile(r"\.\./shared|/w[o]rk/shared|shared/peers")  # spelled so this file names no such path
    offenders = [
        name
        for name in tracked
        if (REPO / name).is_file()
        and name != "tests/unit/test_layout.py"
        and outside.search((REPO / name).read_text(errors="ignore"))
    ]
    assert not offenders, f"files naming a path outside the repository: {offenders}"
