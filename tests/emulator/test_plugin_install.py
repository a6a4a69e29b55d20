"""Installing esjoin breaks nobody's test suite: the wheel, in a scratch virtualenv, next to a project whose
conftest defines its own `--backend` option and which has its own `infra` package.

The wheel is built from this checkout; the scratch environment gets it with pip (no dependencies: those
are read from this project's virtualenv through a path entry, so the test needs no network), and runs
pytest on the scratch project: the project's option and package are its own, and `esjoin_endpoint`
serves an SQS queue from an endpoint the plugin starts with the wheel's code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CONFTEST = """
def pytest_addoption(parser):
    parser.addoption("--backend", default="theirs", help="the project's own option, as many projects have")
"""
THEIR_INFRA = 'NAME = "their infra"\n'
TESTS = """
import esjoin
import infra


def test_the_project_keeps_its_option_and_its_infra(request):
    assert request.config.getoption("--backend") == "mine"
    assert infra.NAME == "their infra"


def test_esjoin_comes_from_the_wheel():
    assert esjoin.__file__.startswith({site!r}), esjoin.__file__


def test_the_endpoint_fixture_serves_their_resources(esjoin_endpoint, esjoin_control):
    sqs = esjoin_endpoint.client("sqs")
    url = sqs.create_queue(QueueName="their-jobs")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="hello")
    assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "hello"
    assert esjoin_control.quiescence()["quiescent"] in (True, False)
"""


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    assert finished.returncode == 0, f"{' '.join(command)}: {finished.returncode}\n{finished.stdout}\n{finished.stderr}"
    return finished


@pytest.mark.timeout(600)
def test_the_wheel_installs_beside_a_project_with_its_own_backend_option_and_infra(tmp_path: Path) -> None:
    source = tmp_path / "source"  # the checkout's files only: no build/ left over from an older layout
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO).stdout.split()
    for name in listed:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(source),
        ]
    )
    (wheel,) = wheels.glob("esjoin-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist() if not name.startswith("esjoin-")}
    assert tops == {"esjoin"}, f"the wheel installs more than the esjoin package: {sorted(tops)}"

    scratch = tmp_path / "venv"
    run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(scratch)])
    python = scratch / "bin" / "python"
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    # The dependencies (boto3, moto, pytest...) from this project's virtualenv, after the scratch site: a
    # plain path entry, so that directory's own .pth files (this checkout's editable install) are not run.
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)])

    project = tmp_path / "project"
    (project / "infra").mkdir(parents=True)
    (project / "infra" / "__init__.py").write_text(THEIR_INFRA)
    (project / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (project / "test_theirs.py").write_text(textwrap.dedent(TESTS.format(site=site)))
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "ESJOIN_"))}
    environment["ESJOIN_REUSE_ENDPOINT"] = "0"  # its own endpoint, from the wheel's code

    finished = subprocess.run(
        [
            str(python),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--backend",
            "mine",
            "--esjoin-backend",
            "embedded",
            str(project),
        ],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert finished.returncode == 0, f"their suite failed with esjoin installed:\n{finished.stdout}\n{finished.stderr}"
    assert "3 passed" in finished.stdout, finished.stdout
