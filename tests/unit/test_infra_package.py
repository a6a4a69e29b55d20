"""The function zip is reproducible: same sources, same bytes, same CodeSha256."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from infra.package import LAMBDAS_DIR, PackageError, build_package
from infra.stack import HANDLERS


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    package = tmp_path / "src" / "lambdas"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "consumer.py").write_text("def handler(event, context):\n    return {}\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "fold.py").write_text("X = 1\n")
    (package / "notes.txt").write_text("not code")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "consumer.cpython-312.pyc").write_bytes(b"\0")
    (package / "__pycache__" / "stray.py").write_text("")
    return package


def test_two_builds_of_the_same_sources_are_byte_identical(sources: Path) -> None:
    assert build_package(sources).zip_bytes == build_package(sources).zip_bytes


def test_timestamps_and_copies_do_not_change_the_sha(sources: Path, tmp_path: Path) -> None:
    before = build_package(sources).code_sha256
    os.utime(sources / "consumer.py", (1_900_000_000, 1_900_000_000))
    (sources / "consumer.py").chmod(0o755)
    copy = tmp_path / "elsewhere" / "lambdas"
    shutil.copytree(sources, copy)
    assert build_package(sources).code_sha256 == before
    assert build_package(copy).code_sha256 == before


def test_a_source_change_changes_the_sha(sources: Path) -> None:
    before = build_package(sources).code_sha256
    (sources / "sub" / "fold.py").write_text("X = 2\n")
    assert build_package(sources).code_sha256 != before


def test_entries_are_sorted_python_only_with_fixed_time_and_mode(sources: Path) -> None:
    package = build_package(sources)
    with zipfile.ZipFile(io.BytesIO(package.zip_bytes)) as archive:
        infos = archive.infolist()
    names = [i.filename for i in infos]
    assert names == [
        "lambdas/__init__.py",
        "lambdas/consumer.py",
        "lambdas/sub/__init__.py",
        "lambdas/sub/fold.py",
    ]
    assert names == sorted(names) and list(package.files) == names
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}


def test_code_sha256_is_what_lambda_reports(sources: Path) -> None:
    package = build_package(sources)
    expected = base64.b64encode(hashlib.sha256(package.zip_bytes).digest()).decode()
    assert package.code_sha256 == expected
    assert package.size == len(package.zip_bytes)


def test_the_repository_package_holds_the_five_handlers() -> None:
    files = build_package(LAMBDAS_DIR).files
    handlers = {h.rsplit(".", 1)[0].replace(".", "/") + ".py" for h in HANDLERS.values()}
    assert handlers <= set(files), f"handler modules missing from the zip: {handlers - set(files)}"
    assert all(f.startswith("lambdas/") and f.endswith(".py") for f in files)


def test_a_directory_that_is_not_a_package_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="not a Python package"):
        build_package(tmp_path)
