"""The deployment package: one zip of the `lambdas/` package, byte-for-byte reproducible.

Lambda reports the SHA-256 of the uploaded zip (GetFunction's CodeSha256, base64). A zip that
depends only on the sources (sorted entries, fixed timestamps and modes, no cache files) lets the
bootstrap skip UpdateFunctionCode when nothing changed. The package is read as files: infra never
imports lambdas' code.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

LAMBDAS_DIR = Path(__file__).resolve().parent.parent / "lambdas"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
"""The earliest timestamp a zip entry can carry."""
FILE_MODE = 0o100644  # regular file, rw-r--r--
UNIX = 3  # ZipInfo.create_system: entries say "made on Unix" wherever the zip is built


class PackageError(RuntimeError):
    """The lambdas package cannot be zipped (missing directory, no sources)."""


@dataclass(frozen=True)
class Package:
    zip_bytes: bytes
    files: tuple[str, ...]

    @property
    def code_sha256(self) -> str:
        """What Lambda reports as CodeSha256 for this zip."""
        return base64.b64encode(hashlib.sha256(self.zip_bytes).digest()).decode("ascii")

    @property
    def size(self) -> int:
        return len(self.zip_bytes)


def build_package(source_dir: Path | None = None) -> Package:
    """Zip every ``.py`` file under ``source_dir`` (default: the repository's ``lambdas/``) as
    ``<dirname>/<relative path>``, so handlers are importable as ``lambdas.<module>.handler``."""
    source_dir = (source_dir or LAMBDAS_DIR).resolve()
    if not (source_dir / "__init__.py").is_file():
        raise PackageError(f"{source_dir} is not a Python package (no __init__.py); cannot build the function zip")
    sources = sorted(
        (path.relative_to(source_dir.parent).as_posix(), path)
        for path in source_dir.rglob("*.py")
        if path.is_file() and "__pycache__" not in path.parts
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for arcname, path in sources:
            entry = zipfile.ZipInfo(arcname, date_time=ZIP_EPOCH)
            entry.create_system = UNIX
            entry.external_attr = FILE_MODE << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, path.read_bytes(), compresslevel=9)
    return Package(zip_bytes=buffer.getvalue(), files=tuple(arcname for arcname, _ in sources))
