"""docker-compose.yml, the Dockerfile and .dockerignore keep the promises the containerised backends
rest on, read from the files themselves (no Docker here): pinned images, loopback-only ports, health
that means "the stack is there", the bootstrap hook in place, the same stage, region, endpoint and
outputs as the host, the Docker socket and network for LocalStack's Lambda, a non-root endpoint.
A compose tool, when there is one, validates the file for both profiles."""

from __future__ import annotations

import functools
import json
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from esjoin import cli
from esjoin.target import Clients
from esjoin.testing import localstack_container
from esjoin.testing.backends import (
    DEFAULT_ENDPOINT,
    LOCALSTACK_TEST_POLLING,
    STATE_DIR,
    BackendError,
    localstack_timing,
)
from infra import stack
from infra.settings import StackSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
LOCALSTACK_PYTHON = "/opt/code/localstack/.venv/bin/python"  # the image's venv (LocalStack's Dockerfile)
READY_D = "/etc/localstack/init/ready.d/"
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")


def defaults(value: Any) -> Any:
    """A compose value as compose sees it with none of the variables set: ${X:-d} -> d."""
    return INTERPOLATION.sub(lambda m: m.group("default") or "", value) if isinstance(value, str) else value


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def environment(name: str) -> dict[str, Any]:
    return {key: defaults(value) for key, value in service(name).get("environment", {}).items()}


def volumes(name: str) -> list[tuple[str, str, str]]:
    """(source, target, mode) per short-syntax volume."""
    return [tuple([*entry.split(":"), "rw"][:3]) for entry in service(name).get("volumes", [])]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    logical = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")),
    )
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
        for line in logical.splitlines()
        if line.strip()
    ]


def dockerfile_env() -> dict[str, str]:
    return dict(item.split("=", 1) for args in (a for i, a in dockerfile() if i == "ENV") for item in shlex.split(args))


def dockerfile_base() -> str:
    """The image the Dockerfile builds FROM by default: its ARG's default where FROM names an ARG."""
    arguments = dict(args.split("=", 1) for instruction, args in dockerfile() if instruction == "ARG" and "=" in args)
    base = next(args for instruction, args in dockerfile() if instruction == "FROM").split()[0]
    return re.sub(r"\$\{(\w+)\}", lambda match: arguments[match.group(1)], base)


def is_pinned(image: str) -> bool:
    """An explicit tag other than latest, or a digest."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


# -- profiles -----------------------------------------------------------------------------------


def test_each_backend_profile_starts_the_services_esjoin_up_waits_for() -> None:
    by_profile: dict[str, set[str]] = {}
    for name, spec in compose()["services"].items():
        assert spec.get("profiles"), f"{name} has no profile: it would start with every profile"
        for profile in spec["profiles"]:
            by_profile.setdefault(profile, set()).add(name)
    expected = {cli.COMPOSE_PROFILES[b]: set(services) for b, services in cli.COMPOSE_SERVICES.items()}
    assert by_profile == expected


def test_long_running_services_have_a_healthcheck_and_one_shots_are_not_restarted() -> None:
    # esjoin up's wait (cli.service_status): a service with a healthcheck must turn healthy, one
    # without must exit 0; so a service without one must be a one-shot.
    # A one-shot built from an image with a HEALTHCHECK (the Dockerfile's) must disable it: an exited
    # container that has a health state reads as a failure (seen with the emulator profile in Docker).
    image_has_healthcheck = any(instruction == "HEALTHCHECK" for instruction, _ in dockerfile())
    for name, spec in compose()["services"].items():
        if "healthcheck" in spec and not spec["healthcheck"].get("disable"):
            assert spec["healthcheck"]["test"][0] == "CMD", name  # exec form: no shell needed in the image
        else:
            assert spec.get("restart") == "no" and spec.get("command"), f"{name}: neither healthcheck nor one-shot"
            if "build" in spec and image_has_healthcheck:
                assert spec.get("healthcheck") == {"disable": True}, f"{name} inherits the image's healthcheck"


# -- images, ports ------------------------------------------------------------------------------


def test_images_are_pinned() -> None:
    for name, spec in compose()["services"].items():
        image = defaults(spec["image"])
        assert is_pinned(image), f"{name}: image {image!r} is not pinned (explicit tag or digest, not latest)"
    base = dockerfile_base()
    assert is_pinned(base) and re.search(r":\d+\.\d+\.\d+-slim", base), f"Dockerfile FROM {base!r}"
    assert defaults(service("emulator")["build"]["args"]["PYTHON_IMAGE"]) == base, "compose builds on another base"


def test_localstack_image_is_the_tokenless_community_one_overridable_with_the_token_passed_through() -> None:
    image = service("localstack")["image"]
    assert image.startswith("${LOCALSTACK_IMAGE:-")
    assert defaults(image) == localstack_container.DEFAULT_IMAGE == "localstack/localstack:4.14.0"
    environ = service("localstack")["environment"]
    assert "LOCALSTACK_AUTH_TOKEN" in environ and environ["LOCALSTACK_AUTH_TOKEN"] is None  # from the host, if set


def test_ports_are_published_on_loopback_only_at_the_hosts_endpoint() -> None:
    published = {name: spec["ports"] for name, spec in compose()["services"].items() if "ports" in spec}
    assert set(published) == {"localstack", "emulator"}
    host_port = DEFAULT_ENDPOINT.rsplit(":", 1)[1]
    for name, ports in published.items():
        assert ports == [f"127.0.0.1:{host_port}:4566"], name


# -- LocalStack ---------------------------------------------------------------------------------


def test_localstack_services_cover_what_the_stack_calls() -> None:
    stack_services = {
        name.rstrip("_") for name, value in vars(Clients).items() if isinstance(value, functools.cached_property)
    }
    services = set(environment("localstack")["SERVICES"].split(","))
    assert stack_services <= services, f"SERVICES lacks {stack_services - services}"
    assert services == set(localstack_container.SERVICES)


def test_localstack_runs_lambda_through_the_docker_socket_on_the_compose_network() -> None:
    assert ("/var/run/docker.sock", "/var/run/docker.sock", "rw") in volumes("localstack")
    network = environment("localstack")["LAMBDA_DOCKER_NETWORK"]
    networks = compose()["networks"]
    names = {key: defaults(value.get("name", key)) for key, value in networks.items()}
    assert network in names.values(), f"LAMBDA_DOCKER_NETWORK={network!r} names no network of this file"
    attached = service("localstack")["networks"]
    assert any(names[key] == network for key in attached)


def test_the_bootstrap_hook_is_mounted_executable_in_ready_d_and_is_what_health_waits_for() -> None:
    hooks = [(source, target, mode) for source, target, mode in volumes("localstack") if target.startswith(READY_D)]
    assert len(hooks) == 1
    source, target, mode = hooks[0]
    script = ROOT / source
    assert mode == "ro" and target.endswith(".sh"), "LocalStack runs only *.sh hooks"
    assert script.read_text().startswith("#!/bin/bash\n"), "LocalStack executes the hook directly: it needs a shebang"
    assert script.stat().st_mode & stat.S_IXUSR and script.stat().st_mode & stat.S_IXOTH, f"{source} is not executable"
    tracked = (
        shutil.which("git")
        and subprocess.run(["git", "ls-files", "-s", "--", source], cwd=ROOT, capture_output=True, text=True).stdout
    )
    if tracked:  # the mode git will check out elsewhere
        assert tracked.startswith("100755"), f"{source} is tracked as {tracked.split()[0]}: git update-index --chmod=+x"
    test = service("localstack")["healthcheck"]["test"]
    assert test[1] == LOCALSTACK_PYTHON == environment("localstack")["ESJOIN_BOOTSTRAP_PYTHON"]
    assert test[3:] == ["localstack-init", "--script", Path(target).name]


def test_the_project_is_mounted_read_only_where_the_hook_and_healthcheck_look() -> None:
    for name in ("localstack", "bootstrap"):
        project = environment(name)["ESJOIN_PROJECT_DIR"]
        assert (".", project, "ro") in volumes(name), name
    healthcheck_path = service("localstack")["healthcheck"]["test"][2]
    assert healthcheck_path.startswith(environment("localstack")["ESJOIN_PROJECT_DIR"] + "/")
    assert (ROOT / Path(healthcheck_path).relative_to(environment("localstack")["ESJOIN_PROJECT_DIR"])).is_file()


# -- the same stack as the other backends -------------------------------------------------------


def test_stage_and_region_are_the_other_backends() -> None:
    settings = StackSettings()
    for name in ("localstack", "bootstrap"):
        assert environment(name)["ESJOIN_STAGE"] == settings.stage == "local", name
        assert environment(name)["ESJOIN_REGION"] == settings.region, name
    assert environment("emulator")["ESJOIN_REGION"] == settings.region == localstack_container.REGION
    # overridable from the host the same way: `esjoin up --stage` sets ESJOIN_STAGE for compose
    assert service("localstack")["environment"]["ESJOIN_STAGE"] == "${ESJOIN_STAGE:-local}"


def test_bootstraps_use_the_hosts_endpoint_url_and_write_the_hosts_outputs_file() -> None:
    """Coherent outputs: each bootstrap reaches its endpoint as http://127.0.0.1:4566 (inside LocalStack;
    in the emulator's network namespace), which is also the host's URL, so the outputs (endpoint,
    moto's queue URLs) read the same on the host, where `esjoin up` re-reads them."""
    assert service("bootstrap")["network_mode"] == "service:emulator"
    assert service("bootstrap")["depends_on"] == {"emulator": {"condition": "service_healthy"}}
    for name in ("localstack", "bootstrap"):
        env = environment(name)
        assert env["ESJOIN_BOOTSTRAP_ENDPOINT"] == DEFAULT_ENDPOINT, name
        outputs = Path(env["ESJOIN_OUTPUTS"])
        mounts = {target: source for source, target, _ in volumes(name)}
        assert mounts.get(str(outputs.parent)) == f"./{STATE_DIR}", f"{name}: {outputs.parent} is not ./.esjoin"
        assert outputs.name == cli.OUTPUTS.name


# -- the emulator image -------------------------------------------------------------------------


def test_the_emulator_image_runs_as_a_non_root_user() -> None:
    users = [args for instruction, args in dockerfile() if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"Dockerfile USER {users}"
    assert "user" not in service("emulator")


def test_the_emulator_image_is_built_here_installs_from_constraints_and_listens_on_every_interface() -> None:
    base_argument = "${ESJOIN_PYTHON_IMAGE:-" + dockerfile_base() + "}"
    assert service("emulator")["build"] == {
        "context": ".",
        "dockerfile": "Dockerfile",
        "args": {"PYTHON_IMAGE": base_argument},
    }
    assert service("bootstrap")["build"] == service("emulator")["build"]
    assert service("bootstrap")["image"] == service("emulator")["image"]
    runs = " ".join(args for instruction, args in dockerfile() if instruction == "RUN")
    assert runs.count("-c constraints.txt") == 2, "dependencies and project both installed under constraints.txt"
    env = dockerfile_env()
    assert env["ESJOIN_HOST"] == "0.0.0.0" == environment("emulator")["ESJOIN_HOST"]
    assert env["ESJOIN_PORT"] == "4566" == environment("emulator")["ESJOIN_PORT"]
    assert ("EXPOSE", "4566") in dockerfile()
    assert service("emulator")["init"] is True


def test_the_emulator_healthcheck_asks_esjoin_health_in_compose_and_in_the_image() -> None:
    test = service("emulator")["healthcheck"]["test"]
    assert test == ["CMD", "python", "/opt/esjoin/docker/healthcheck.py", "esjoin"]
    healthcheck = next(args for instruction, args in dockerfile() if instruction == "HEALTHCHECK")
    assert json.loads(healthcheck.split("CMD", 1)[1]) == service("emulator")["healthcheck"]["test"][1:]
    assert "/_esjoin/health" in (ROOT / "docker" / "healthcheck.py").read_text()


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "an allowlist: everything else (.venv, .esjoin, .git) stays out"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = {
        source.rstrip("/").removeprefix("./")
        for instruction, args in dockerfile()
        if instruction == "COPY"
        for source in args.split()[:-1]
        if not source.startswith("--")
    }
    assert copied == allowed
    assert all((ROOT / path).exists() for path in copied)


def test_the_harness_testcontainers_localstack_matches_the_compose_one() -> None:
    spec = localstack_container.LocalStackSpec.from_env({})
    assert spec.image == defaults(service("localstack")["image"])
    assert spec.environment["SERVICES"] == environment("localstack")["SERVICES"]
    assert spec.publish_address == "127.0.0.1"
    token = localstack_container.LocalStackSpec.from_env({"LOCALSTACK_AUTH_TOKEN": "ls-x", "LOCALSTACK_IMAGE": "a:1"})
    assert token.environment["LOCALSTACK_AUTH_TOKEN"] == "ls-x" and token.image == "a:1"


def test_localstack_polls_with_short_backoffs_the_harness_settles_by() -> None:
    """The compose profile, the testcontainers path and the harness agree on LocalStack's event source
    mapping poll settings; the harness's settle time on LocalStack follows them."""
    compose_values = {name: environment("localstack")[name] for name in LOCALSTACK_TEST_POLLING}
    assert compose_values == LOCALSTACK_TEST_POLLING
    spec = localstack_container.LocalStackSpec.from_env({})
    assert {name: spec.environment[name] for name in LOCALSTACK_TEST_POLLING} == LOCALSTACK_TEST_POLLING
    fast = localstack_timing(LOCALSTACK_TEST_POLLING)
    stock = localstack_timing({})  # a LocalStack left at its defaults: idle pollers back off to 10 s
    assert fast.settle < 2 < 10 < stock.settle, (fast.settle, stock.settle)
    makefile = (ROOT / "Makefile").read_text()
    for name, value in LOCALSTACK_TEST_POLLING.items():
        if name != "LAMBDA_EVENT_SOURCE_MAPPING_MAX_BACKOFF_ON_ERROR_SEC":  # the harness reads the two others
            assert f"{name}=$${{{name}:-{value}}}" in makefile, f"the Makefile does not export {name}"


def test_a_poll_setting_that_is_not_a_number_is_a_clear_error() -> None:
    with pytest.raises(BackendError, match="LAMBDA_EVENT_SOURCE_MAPPING_POLL_INTERVAL_SEC='fast'"):
        localstack_timing({"LAMBDA_EVENT_SOURCE_MAPPING_POLL_INTERVAL_SEC": "fast"})


# -- a compose tool's own validation ------------------------------------------------------------


def compose_tools() -> list[list[str]]:
    tools = []
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        tools.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        tools.append(["docker-compose"])
    return tools


@pytest.mark.parametrize("profile", sorted(cli.COMPOSE_PROFILES.values()))
def test_a_compose_tool_validates_the_file_for_the_profile(profile: str) -> None:
    tools = compose_tools()
    if not tools:
        pytest.skip(
            "neither `docker compose` nor `docker-compose` is installed; `make test` installs Debian's "
            "docker-compose when run as root with apt-get"
        )
    for tool in tools:
        command = [*tool, "-f", str(COMPOSE_FILE), "--profile", profile, "config"]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stderr}"
        resolved = yaml.safe_load(result.stdout)
        backend = next(b for b, p in cli.COMPOSE_PROFILES.items() if p == profile)
        started = {name for name, spec in resolved["services"].items() if profile in spec.get("profiles", [])}
        assert started == set(cli.COMPOSE_SERVICES[backend]), " ".join(tool)


# -- the offline LocalStack image (docker/localstack-offline/) --------------------------------------

OFFLINE = ROOT / "docker" / "localstack-offline"


def test_the_offline_image_is_the_localstack_release_compose_pins() -> None:
    pinned = defaults(service("localstack")["image"]).rsplit(":", 1)[1]
    lock = (OFFLINE / "requirements.lock").read_text()
    assert f"localstack-core=={pinned}\n" in lock
    assert all("==" in line for line in lock.splitlines() if line and not line.startswith("#")), "unpinned"
    assert cli.LOCALSTACK_DEFAULT_IMAGE == localstack_container.DEFAULT_IMAGE == f"localstack/localstack:{pinned}"


def test_the_offline_image_has_localstack_s_python_where_the_hook_and_healthcheck_run() -> None:
    dockerfile = (OFFLINE / "Dockerfile").read_text()
    python = environment("localstack")["ESJOIN_BOOTSTRAP_PYTHON"]
    assert python == service("localstack")["healthcheck"]["test"][1] == "/opt/code/localstack/.venv/bin/python"
    assert "VIRTUAL_ENV=/opt/code/localstack/.venv" in dockerfile
    assert "/etc/localstack/init/ready.d" in dockerfile
    # every Python runtime the stack may declare maps to the runtime image the build makes
    mapping = re.search(r'LAMBDA_RUNTIME_IMAGE_MAPPING="(.+?)" \\', dockerfile).group(1).replace('\\"', '"')
    runtimes = json.loads(mapping.replace("${LAMBDA_IMAGE}", "x"))
    assert stack.RUNTIME in runtimes and set(runtimes) >= {"python3.12", "python3.13"}


def test_the_offline_build_scripts_run_as_they_say() -> None:
    for script in ("build.sh",):
        assert (OFFLINE / script).stat().st_mode & stat.S_IXUSR
    for source in ("lambda_init.py", "dynamodb_engine.py", "esjoin_localstack.py", "install_packages.py"):
        compile((OFFLINE / source).read_text(), source, "exec")  # they run on the image's Python, not here
    assert (OFFLINE / "lambda_init.py").read_text().startswith("#!/usr/bin/python3\n")  # /var/rapid/init


def test_make_up_says_what_to_do_when_localstack_s_image_cannot_be_pulled() -> None:
    pulled = 'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: no such host'
    advice = cli.image_advice(cli.LOCALSTACK, pulled)
    assert "docker/localstack-offline/build.sh" in advice and "LOCALSTACK_IMAGE=<tag>" in advice
    assert cli.image_advice(cli.LOCALSTACK, "port is already allocated") == ""  # not an image problem
    assert cli.image_advice(cli.EMULATOR_CONTAINER, pulled) == ""  # that profile builds its image
