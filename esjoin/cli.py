"""The `esjoin` command line: run the pipeline locally, send events, read the views.

esjoin up [--backend embedded|localstack|emulator-container]   start + bootstrap + print outputs
esjoin send                      the original example's sample events through the `command` function
esjoin views [USER...]           view rows
esjoin status | down | logs
esjoin bootstrap apply|outputs|teardown ...   (infra.bootstrap's own command line)
esjoin emulator start [--port ...]            the embedded endpoint in the foreground
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table

from esjoin.testing.backends import (
    EMBEDDED,
    LOCALSTACK,
    STATE_DIR,
    TIMING,
    Backend,
    BackendError,
    answers_health,
    configured_endpoint,
    start_embedded,
    tail,
)
from esjoin.testing.control_client import ControlApiError, ControlClient
from esjoin.testing.health import Probe, ProbeKind, probe_health
from esjoin.testing.localstack_container import DEFAULT_IMAGE as LOCALSTACK_DEFAULT_IMAGE

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="esjoin: run and test the event-sourcing pipeline on a local AWS endpoint",
)
emulator_app = typer.Typer(no_args_is_help=True, help="the embedded AWS endpoint")
app.add_typer(emulator_app, name="emulator")
state_app = typer.Typer(no_args_is_help=True, help="save, load or empty the embedded endpoint's state")
app.add_typer(state_app, name="state")
# Outside a terminal (make, CI logs) rich would wrap at 80 columns; the views table needs more.
console = Console(width=shutil.get_terminal_size((140, 40)).columns)
err = Console(stderr=True)

EMULATOR_CONTAINER = "emulator-container"  # up/down/logs only: the tests drive the container as `embedded`
PID_FILE = STATE_DIR / "emulator.pid"
LOG_FILE = STATE_DIR / "emulator.log"
OUTPUTS = STATE_DIR / "outputs.json"
COMPOSE_PROFILES = {LOCALSTACK: "localstack", EMULATOR_CONTAINER: "emulator"}
COMPOSE_SERVICES = {LOCALSTACK: ("localstack",), EMULATOR_CONTAINER: ("emulator", "bootstrap")}
"""What each profile starts; tests/unit/test_compose_contract.py keeps it equal to docker-compose.yml."""
COMPOSE_WAIT_SECONDS = 600.0
"""ESJOIN_COMPOSE_WAIT_SECONDS: a first LocalStack start pulls images before its hook can bootstrap."""
READY, WAITING, FAILED = "ready", "waiting", "failed"
STARTING_WAIT_SECONDS = 30.0
"""How long `esjoin up` waits on an endpoint that says it is starting (start_embedded's own deadline)."""

BackendOption = Annotated[
    str,
    typer.Option(
        "--backend",
        "-b",
        envvar=["ESJOIN_BACKEND", "BACKEND"],
        help="embedded (default) | localstack | emulator-container",
    ),
]
StageOption = Annotated[str, typer.Option("--stage", envvar="ESJOIN_STAGE", help="stage name prefix")]
EndpointOption = Annotated[
    str | None,
    typer.Option(
        "--endpoint", envvar="ESJOIN_ENDPOINT", help="endpoint URL (default: http://127.0.0.1:$ESJOIN_PORT, or 4566)"
    ),
]


def demo_project() -> Path:
    """The checkout that holds the demo application (infra/, lambdas/), put first on sys.path: the commands
    that deploy or read the demo stack import it from there, as it is not installed with the tool."""
    for directory in (Path.cwd(), *Path.cwd().parents):
        if (directory / "infra" / "bootstrap.py").is_file() and (directory / "lambdas").is_dir():
            if str(directory) not in sys.path:
                sys.path.insert(0, str(directory))
            return directory
    raise fail(
        "no esjoin checkout here (infra/ and lambdas/ in this directory or above it): run this command "
        "from the repository; it deploys or reads the demo stack",
        2,
    )


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]esjoin:[/] {message}")
    return typer.Exit(code)


# -- the embedded endpoint ---------------------------------------------------------------------


@emulator_app.command("start", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def emulator_start(ctx: typer.Context) -> None:
    """Run the endpoint in the foreground (flags: --host --port --region --timing --state-dir -v; deterministic
    mode: --seed N [--pace wall|virtual], or --replay TRACE [--until STEP])."""
    from esjoin.emulator.__main__ import main

    raise typer.Exit(main(list(ctx.args)))


@state_app.command("save")
def state_save(
    file: Annotated[Path, typer.Argument(help="where to write the archive")], endpoint: EndpointOption = None
) -> None:
    """Every stream, table, queue, function, mapping and checkpoint of the endpoint, into FILE."""
    archive = fetch_into(file, "the state", ControlClient(local_endpoint(endpoint)).save_state)
    console.print(f"saved {len(archive):,} bytes to {file}")


def fetch_into(file: Path, what: str, fetch: Any) -> bytes:
    """`fetch()` from the endpoint's control API, written to `file`; a clear error if it cannot be."""
    try:
        data = fetch()
    except (OSError, ControlApiError) as error:
        raise fail(f"cannot read {what}: {error}") from None
    file.write_bytes(data)
    return data


@state_app.command("load")
def state_load(
    file: Annotated[Path, typer.Argument(help="an archive from `esjoin state save`")], endpoint: EndpointOption = None
) -> None:
    """Empty the endpoint and make it what FILE describes (all or nothing)."""
    control = ControlClient(local_endpoint(endpoint))
    try:
        loaded = control.load_state(file.read_bytes(), str(file))
    except (OSError, ControlApiError) as error:
        raise fail(f"cannot load {file}: {error}") from None
    console.print(f"loaded {file}: {loaded['functions']} functions, {loaded['eventSourceMappings']} mappings")


@state_app.command("reset")
def state_reset(endpoint: EndpointOption = None) -> None:
    """Empty the endpoint without a restart."""
    removed = ControlClient(local_endpoint(endpoint)).reset_state()["removed"]
    console.print(
        f"emptied: {removed['functions']} functions and {removed['eventSourceMappings']} mappings "
        "removed, with every stream, table and queue"
    )


@app.command()
def capture(
    stream: Annotated[str, typer.Option(help="the Kinesis stream to read (every shard)")],
    out: Annotated[Path, typer.Option(help="where to write the bundle (gzip JSON)")],
    since: Annotated[str | None, typer.Option(help="ISO time or ms epoch to read from (default: the oldest)")] = None,
    table: Annotated[list[str] | None, typer.Option(help="a table whose items to capture too (repeat)")] = None,
    target: Annotated[str, typer.Option(help="local (default) | aws: a real account, read-only")] = "local",
    region: Annotated[str, typer.Option(envvar="ESJOIN_REGION")] = "us-east-1",
    endpoint: EndpointOption = None,
) -> None:
    """Read a stream's records (and tables' items) into a bundle, read-only; `esjoin replay --inputs` feeds it."""
    from esjoin.target import AWS, Target, TargetRefused, local_target
    from esjoin.testing.capture import CaptureError
    from esjoin.testing.capture import capture as take

    if target == AWS:
        if endpoint:
            raise fail("--target aws takes no --endpoint (it reads AWS's own endpoints)", 2)
        source = Target(kind=AWS, region=region)
    elif target == "local":
        try:
            source = local_target(local_endpoint(endpoint), region)
        except TargetRefused as error:
            raise fail(str(error), 2) from None
    else:
        raise fail(f"unknown target {target!r}: local or aws", 2)
    try:
        bundle = take(source, stream, _epoch_ms(since), table or ())
    except CaptureError as error:
        raise fail(str(error)) from None
    bundle.write(out)
    console.print(f"captured {bundle.records} records of {stream} from {source.describe()} into {out}")


@app.command()
def replay(
    trace: Annotated[Path | None, typer.Argument(help="a trace (`esjoin trace save`, a failure record)")] = None,
    until: Annotated[int | None, typer.Option(help="stop after this step (default: the recording's last)")] = None,
    check: Annotated[bool, typer.Option(help="fail unless the run matches the recording line for line")] = False,
    keep: Annotated[
        bool, typer.Option(help="leave the replayed endpoint running, to inspect (Ctrl-C stops it)")
    ] = False,
    inputs: Annotated[Path | None, typer.Option(help="instead: a bundle from `esjoin capture` to feed")] = None,
    stream: Annotated[
        str | None, typer.Option(help="--inputs: the stream to feed (default: the captured name)")
    ] = None,
    region: Annotated[str, typer.Option(envvar="ESJOIN_REGION")] = "us-east-1",
    endpoint: EndpointOption = None,
) -> None:
    """Replay a trace on a fresh deterministic endpoint of its own and report (--check: exactly); or, with
    --inputs, feed a captured bundle into the endpoint (in order per shard; scripted under its seed when
    the endpoint is deterministic)."""
    if (trace is None) == (inputs is None):
        raise fail("give a TRACE to replay, or --inputs BUNDLE to feed", 2)
    if inputs is not None:
        feed_bundle(inputs, stream, region, local_endpoint(endpoint))
        return
    assert trace is not None
    replay_trace_command(trace, until, check, keep)


def feed_bundle(inputs: Path, stream: str | None, region: str, endpoint: str) -> None:
    from esjoin.target import local_target
    from esjoin.testing.capture import Bundle, CaptureError, feed, feed_scripted

    target = local_target(endpoint, region)
    try:
        bundle = Bundle.read(inputs)
        if (ControlClient(endpoint).health().get("deterministic") or {}).get("seed") is not None:
            fed = feed_scripted(bundle, Backend(EMBEDDED, target, TIMING[EMBEDDED], ControlClient(endpoint)), stream)
            console.print(f"submitted {fed['records']} records and {fed['items']} items from {inputs} as inputs")
            return
        fed = feed(bundle, target, stream)
    except (CaptureError, OSError, ControlApiError) as error:
        raise fail(str(error)) from None
    console.print(f"fed {fed['records']} records and {fed['items']} items from {inputs}")


def replay_trace_command(path: Path, until: int | None, check: bool, keep: bool) -> None:
    from esjoin.emulator.aids.trace import TraceError, read_trace
    from esjoin.testing.reproduce import trace_summary
    from esjoin.testing.waits import WaitTimeout

    demo_project()
    try:
        recorded = read_trace(path)
    except TraceError as error:
        raise fail(str(error), 2) from None
    summary = trace_summary(recorded)
    console.print(
        f"replaying {path}: seed {summary['seed']}, {summary['steps']} steps, pace {recorded.header.get('pace')}"
    )
    try:
        divergence, difference = replay_and_report(path, recorded, until, keep)
    except (BackendError, ControlApiError, WaitTimeout) as error:
        raise fail(f"the replay of {path} did not complete: {error}") from None
    if check and (divergence or difference):
        raise typer.Exit(1)


def replay_and_report(path: Path, recorded: Any, until: int | None, keep: bool) -> tuple[Any, Any]:
    """Replay `path`, print the divergence or the first difference and the demo stages' report."""
    from esjoin.testing.reproduce import replay_endpoint, replay_result

    with replay_endpoint(path, until, recorded=recorded) as backend:
        result = replay_result(backend, recorded, until)
        divergence, difference = result.divergence, result.difference
        console.print(f"replayed to step {result.schedule['step']} on {backend.endpoint_url}")
        if divergence:
            console.print(
                f"[red]diverged at step {divergence['step']}[/red]: expected {divergence['expected']}, "
                f"found {divergence['actual']}",
                highlight=False,
            )
        elif difference:
            console.print(
                f"[red]differs at step {difference['step']} (line {difference['line']})[/red]:\n"
                f"  expected {json.dumps(difference['expected'])[:600]}\n"
                f"  actual   {json.dumps(difference['actual'])[:600]}",
                highlight=False,
            )
        else:
            console.print(
                "[green]exact[/green]: every decision, delivery and answer as recorded, to step "
                f"{until or recorded.last_step}"
            )
        for stage, problems in result.report.items():
            console.print(f"stage {stage}:")
            for problem in problems:
                console.print(f"  {problem}", highlight=False)
        if keep:
            console.print(
                f"the replayed endpoint is at {backend.endpoint_url} (held at its last step); Ctrl-C stops it"
            )
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return divergence, difference


trace_app = typer.Typer(no_args_is_help=True, help="a deterministic endpoint's trace")
app.add_typer(trace_app, name="trace")


@trace_app.command("save")
def trace_save(
    file: Annotated[Path, typer.Argument(help="where to write the trace (gzip JSON lines)")],
    endpoint: EndpointOption = None,
) -> None:
    """The trace of a deterministic endpoint (started with --seed or ESJOIN_SEED), into FILE."""
    data = fetch_into(file, "the trace", ControlClient(local_endpoint(endpoint)).trace)
    console.print(f"saved {len(data):,} bytes to {file}; `esjoin replay {file} --check` replays it")


@app.command()
def explore(
    scenario: Annotated[str, typer.Argument(help="snapshot-race | late-events")],
    seeds: Annotated[int, typer.Option(help="how many seeds (1..N)")] = 20,
    first: Annotated[int, typer.Option(help="the first seed")] = 1,
    snapshot_mode: Annotated[str, typer.Option(help="safe | original (the original example's logic)")] = "safe",
    out: Annotated[Path, typer.Option(help="where failing seeds' traces go")] = Path(".esjoin/explore"),
) -> None:
    """Run a stock scenario under many seeds, each on a fresh deterministic endpoint; report failing seeds."""
    from esjoin.testing.explore import SCENARIOS, Exploration

    demo_project()
    if scenario not in SCENARIOS:
        raise fail(f"unknown scenario {scenario!r}: {', '.join(SCENARIOS)}", 2)
    exploration = Exploration(out / f"{scenario}-{snapshot_mode}", stage_settings={"snapshot_mode": snapshot_mode})
    failing = []
    started = time.monotonic()
    for result in exploration.run(SCENARIOS[scenario], range(first, first + seeds)):
        mark = "[red]FAIL[/red]" if result.failed else "[green]ok[/green]"
        console.print(f"seed {result.seed}: {mark} {result.steps} steps, {result.seconds:.1f} s", highlight=False)
        for problem in result.problems[:3]:
            console.print(f"    {problem}", highlight=False)
        if result.failed:
            failing.append(result)
    minutes = (time.monotonic() - started) / 60
    console.print(
        f"{seeds} seeds in {minutes:.1f} min ({seeds / minutes:.0f} schedules a minute); {len(failing)} failing"
    )
    for result in failing:
        console.print(f"  seed {result.seed}: esjoin replay {result.trace} --check", highlight=False)
    if failing:
        raise typer.Exit(1)


def _epoch_ms(value: str | None) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    import datetime as dt

    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail(
            f"--since {value!r}: an ISO time (2026-12-04T10:00:00Z) or milliseconds since the epoch", 2
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def running_pid() -> int | None:
    try:
        pid = int(PID_FILE.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def ensure_embedded(endpoint: str) -> str:
    """An embedded endpoint answering at `endpoint`: reuse it, or start one in the background, but only
    where nothing listens. A port that accepts connections and does not answer in time may be a busy
    endpoint: starting a second one there would fail, or bootstrap the stack into the wrong one."""
    probe = probe_health(endpoint)
    if probe.kind is ProbeKind.STARTING:
        probe = await_started(endpoint, STARTING_WAIT_SECONDS)
    if probe.kind is ProbeKind.READY:
        console.print(f"embedded endpoint already running at {endpoint}")
        return endpoint
    if probe.kind is ProbeKind.NOT_ESJOIN and answers_health(endpoint, "/_localstack/health"):
        raise fail(
            f"{endpoint} is LocalStack, not the embedded endpoint: stop it or set ESJOIN_ENDPOINT "
            f"to another port (e.g. http://127.0.0.1:4567)"
        )
    if probe.kind is not ProbeKind.NOT_LISTENING:
        raise fail(
            f"{probe.describe()}; not starting another endpoint there. Stop what holds the port, or set "
            "ESJOIN_ENDPOINT to another port (e.g. http://127.0.0.1:4567)"
        )
    port = urlsplit(endpoint).port
    if port is None:
        raise fail(f"{endpoint} names no port to start the embedded endpoint on (e.g. http://127.0.0.1:4566)")
    started = time.monotonic()
    try:
        process, endpoint = start_embedded(port, STATE_DIR / "emulator", LOG_FILE, detach=True)
    except BackendError as error:
        raise fail(str(error)) from None
    PID_FILE.write_text(f"{process.pid}\n")
    console.print(
        f"embedded endpoint started at {endpoint} (pid {process.pid}, ready in "
        f"{time.monotonic() - started:.1f}s, log {LOG_FILE})"
    )
    return endpoint


def await_started(endpoint: str, seconds: float) -> Probe:
    """Probe until the endpoint stops saying "starting" (another `esjoin up` started it a moment ago)."""
    console.print(f"an embedded endpoint is starting at {endpoint}; waiting up to {seconds:.0f}s for it")
    deadline = time.monotonic() + seconds
    probe = probe_health(endpoint)
    while probe.kind is ProbeKind.STARTING and time.monotonic() < deadline:
        time.sleep(0.1)  # another process's start-up: nothing to wait on from here but its answers
        probe = probe_health(endpoint)
    return probe


def local_endpoint(endpoint: str | None) -> str:
    """The endpoint to use, or exit 2 if the guard refuses it: the CLI sends nothing to a host that is not local.

    One setting wins everywhere: `--endpoint` or ESJOIN_ENDPOINT if given, else http://127.0.0.1:$ESJOIN_PORT
    (the port the endpoint itself reads), else the default. Both naming different ports is an error, not a guess."""
    from esjoin.target import TargetRefused, allowed_hosts, check_local_endpoint

    try:
        endpoint = configured_endpoint({**os.environ, **({"ESJOIN_ENDPOINT": endpoint} if endpoint else {})})
    except BackendError as error:
        raise fail(str(error), 2) from None
    try:
        check_local_endpoint(endpoint.strip(), allowed_hosts())
    except TargetRefused as error:
        raise fail(str(error), 2) from None
    return endpoint.strip().rstrip("/")


def stop_embedded() -> None:
    pid = running_pid()
    if pid is None:
        PID_FILE.unlink(missing_ok=True)
        console.print("no embedded endpoint started by `esjoin up` is running")
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and running_pid() == pid:
        time.sleep(0.1)  # waiting on another process's exit: no event to wait on from here
    if running_pid() == pid:
        os.killpg(pid, signal.SIGKILL)
    PID_FILE.unlink(missing_ok=True)
    console.print(
        f"embedded endpoint stopped (pid {pid}); its streams, tables, queues, functions and mappings were "
        "in memory and are gone: `make up` starts afresh"
    )


# -- containers ---------------------------------------------------------------------------------


def compose(*args: str) -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose", *args]
    if shutil.which("docker-compose"):
        return ["docker-compose", *args]
    raise fail(
        "neither `docker compose` nor `docker-compose` is installed; the embedded backend needs neither (`make up`)"
    )


def compose_up(backend: str, stage: str) -> None:
    """Start the profile and wait until its stack is bootstrapped. Not `up --wait`: compose v1 (Debian's
    docker-compose 1.29) has no --wait, and v2's exits 1 when a one-shot service such as `bootstrap`
    exits 0 (https://github.com/docker/compose/issues/10596). `--build`, or an image built from an
    older checkout would run silently."""
    command = compose("--profile", COMPOSE_PROFILES[backend], "up", "-d", "--build")
    console.print("$ " + " ".join(command))
    # compose reports on stderr (pulls, builds, errors): shown as it comes, and kept to read an error in
    process = subprocess.Popen(command, env={**os.environ, "ESJOIN_STAGE": stage}, stderr=subprocess.PIPE, text=True)
    said = []
    for line in process.stderr or ():
        sys.stderr.write(line)
        said.append(line)
    if process.wait() != 0:
        advice = image_advice(backend, "".join(said))
        if advice:  # nothing started: leave nothing behind either (the network compose created)
            subprocess.run(compose("--profile", COMPOSE_PROFILES[backend], "down"), capture_output=True)
            raise fail(advice)
        raise fail(f"`{' '.join(command)}` failed; `esjoin logs --backend {backend}` shows why")
    wait_for_services(backend)


OFFLINE_BUILD = "sudo bash docker/localstack-offline/build.sh"
PULL_FAILURES = ("pull access denied", "manifest unknown", "no such host", "not found", "dial tcp", "toomanyrequests")
TOKEN_WORDS = ("auth token", "auth_token", "license", "activation")


def image_advice(backend: str, output: str) -> str:
    """What to do when compose could not get LocalStack's image, or "" when that is not what failed."""
    if backend != LOCALSTACK or not any(words in output.lower() for words in PULL_FAILURES):
        return ""
    image = os.environ.get("LOCALSTACK_IMAGE") or LOCALSTACK_DEFAULT_IMAGE
    return (
        f"LocalStack's image {image} cannot be pulled here (no registry reachable, or no such tag). Build the "
        f"offline image, which prints its tag: `{OFFLINE_BUILD}`, then `LOCALSTACK_IMAGE=<tag> make up "
        "BACKEND=localstack`; or pull the image where a registry is reachable and `docker load` it here"
    )


def exit_advice(backend: str, service: str) -> str:
    """The last lines of a container that exited, and, for LocalStack asking for a token, what to do."""
    ids = subprocess.run(
        [*compose(), "--profile", COMPOSE_PROFILES[backend], "ps", "-a", "-q", service], capture_output=True, text=True
    ).stdout.split()
    logs = subprocess.run(["docker", "logs", "--tail", "15", *ids[:1]], capture_output=True, text=True) if ids else None
    tail = ((logs.stdout + logs.stderr) if logs else "").strip()
    advice = ""
    if backend == LOCALSTACK and any(words in tail.lower() for words in TOKEN_WORDS):
        advice = (
            "\nThis LocalStack image needs an auth token: `LOCALSTACK_AUTH_TOKEN=<token> make up BACKEND=localstack`. "
            f"Without one, use the last community image that starts without a token ({LOCALSTACK_DEFAULT_IMAGE}, the "
            f"default) or the offline build (`{OFFLINE_BUILD}`)."
        )
    return (f"; its last lines:\n{tail}" if tail else "") + advice


def service_status(state: dict[str, Any] | None) -> tuple[str, str]:
    """(READY | WAITING | FAILED, why) from `docker inspect`'s State: a service with a healthcheck must
    turn healthy (docker/healthcheck.py prints FAILED when it never will), one without must exit 0."""
    if state is None:
        return WAITING, "no container yet"
    health, status = state.get("Health"), state.get("Status")
    if status in ("exited", "dead"):
        code = state.get("ExitCode")
        if code == 0 and not health:
            return READY, "completed"
        return FAILED, f"exited with status {code}"
    if not health:
        return WAITING, status or "unknown"
    last = ((health.get("Log") or [{}])[-1].get("Output") or "").strip()
    if health.get("Status") == "healthy":
        return READY, last or "healthy"
    if health.get("Status") == "unhealthy" or last.startswith("FAILED"):
        return FAILED, last or "unhealthy"
    return WAITING, last or health.get("Status", "starting")


def wait_for_services(backend: str) -> None:
    base = compose()
    if not shutil.which("docker"):
        raise fail("waiting on the containers needs the docker CLI (`docker inspect`)")
    seconds = float(os.environ.get("ESJOIN_COMPOSE_WAIT_SECONDS") or COMPOSE_WAIT_SECONDS)
    deadline, pending, shown = time.monotonic() + seconds, list(COMPOSE_SERVICES[backend]), {}
    while pending:
        for service in list(pending):
            ids = subprocess.run(
                [*base, "--profile", COMPOSE_PROFILES[backend], "ps", "-a", "-q", service],
                capture_output=True,
                text=True,
            ).stdout.split()
            inspected = (
                subprocess.run(
                    ["docker", "inspect", "--format", "{{json .State}}", *ids[:1]], capture_output=True, text=True
                )
                if ids
                else None
            )
            state = json.loads(inspected.stdout) if inspected and inspected.returncode == 0 else None
            status, why = service_status(state)
            if status == FAILED:
                details = exit_advice(backend, service) if why.startswith("exited") else ""
                raise fail(f"{service}: {why}; `esjoin logs --backend {backend}` shows why{details}")
            if status == READY:
                pending.remove(service)
            if shown.get(service) != why:
                console.print(f"{service}: {why}", highlight=False)
                shown[service] = why
        if pending and time.monotonic() > deadline:
            raise fail(
                f"{', '.join(pending)} not ready after {seconds:.0f}s (ESJOIN_COMPOSE_WAIT_SECONDS); "
                f"`esjoin logs --backend {backend}` shows why"
            )
        if pending:
            time.sleep(1)  # other processes' containers: nothing to wait on from here but their state


# -- commands -------------------------------------------------------------------------------


def stack_settings(stage: str, assignments: list[str]) -> Any:
    demo_project()
    from infra.settings import StackSettings, parse_assignments

    return StackSettings.from_env(overrides={"stage": stage, **parse_assignments(assignments)})


@app.command()
def up(
    backend: BackendOption = EMBEDDED,
    stage: StageOption = "local",
    endpoint: EndpointOption = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="stack setting KEY=VALUE")] = None,
) -> None:
    """Start the backend, bootstrap the stack, print where everything is."""
    demo_project()
    from infra.bootstrap import apply, read_outputs
    from infra.stack import build_stack

    endpoint = local_endpoint(endpoint)
    STATE_DIR.mkdir(exist_ok=True)
    if backend == EMBEDDED:
        endpoint = ensure_embedded(endpoint)
    elif backend in COMPOSE_PROFILES:
        compose_up(backend, stage)
    else:
        raise fail(f"unknown backend {backend!r}: embedded, localstack or emulator-container", 2)
    stack = build_stack(stack_settings(stage, set_ or []))
    started = time.monotonic()
    if backend == LOCALSTACK:  # the container's init hook bootstrapped it; read what is there
        outputs = read_outputs(stack, endpoint, outputs_path=OUTPUTS)
    else:
        outputs = apply(stack, endpoint, outputs_path=OUTPUTS)
    console.print(f"stack '{stage}' on {endpoint}: {outputs.summary} ({time.monotonic() - started:.1f}s)")
    print_outputs(outputs)
    aws = (
        f"AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test aws --endpoint-url {endpoint} --region "
        f"{outputs.region} dynamodb scan --table-name {outputs.tables['views']['name']}"
    )
    for line in (
        "",
        "next:",
        "  make demo                    # the sample events through the pipeline, then the view rows",
        "  .venv/bin/esjoin views       # every view row",
        f"  {aws}",
        "  make test                    # every test",
        "  make down                    # stop it",
    ):
        console.print(line, highlight=False, soft_wrap=True)


def print_outputs(outputs: Any) -> None:
    rows = [("stream", outputs.stream["name"], outputs.stream["arn"])]
    rows += [(f"table {k}", v["name"], v.get("streamArn") or v["arn"]) for k, v in outputs.tables.items()]
    rows += [(f"queue {k}", v["name"], v["url"]) for k, v in outputs.queues.items()]
    rows += [(f"function {k}", v["name"], v["arn"]) for k, v in outputs.functions.items()]
    rows += [(f"mapping {k}", v["uuid"], v["source"]) for k, v in outputs.mappings.items()]
    width = max(len(r[0]) for r in rows)
    console.print(f"outputs (also in {OUTPUTS}):", highlight=False)
    for kind, name, where in rows:
        console.print(f"  {kind:<{width}}  {name}  {where}", highlight=False, soft_wrap=True)


@app.command()
def down(backend: BackendOption = EMBEDDED) -> None:
    """Stop what `esjoin up` started."""
    if backend == EMBEDDED:
        stop_embedded()
    elif backend in COMPOSE_PROFILES:
        subprocess.run(compose("--profile", COMPOSE_PROFILES[backend], "down", "-v"), check=False)
    else:
        raise fail(f"unknown backend {backend!r}", 2)


@app.command()
def status(backend: BackendOption = EMBEDDED, endpoint: EndpointOption = None) -> None:
    """Is the endpoint up, is the stack there, is the pipeline quiet?"""
    endpoint = local_endpoint(endpoint)
    probe = probe_health(endpoint)  # embedded, or its container: same control API
    answers = probe.kind in (ProbeKind.NOT_ESJOIN, ProbeKind.STARTING, ProbeKind.READY)
    if backend != LOCALSTACK and probe.kind is ProbeKind.READY:
        control = ControlClient(endpoint, timeout=2)
        console.print_json(
            json.dumps({"health": probe.health, "quiescence": control.quiescence(), "pid": running_pid()})
        )
    elif answers and answers_health(endpoint, "/_localstack/health"):
        console.print(f"LocalStack answers at {endpoint}")
    elif probe.kind is ProbeKind.NOT_LISTENING:
        raise fail(f"{probe.describe()}; `make up` starts the embedded endpoint")
    else:
        raise fail(probe.describe())
    if OUTPUTS.is_file():
        console.print(f"outputs: {OUTPUTS} (stage {json.loads(OUTPUTS.read_text())['stage']})")


@app.command()
def logs(
    backend: BackendOption = EMBEDDED,
    lines: int = 100,
    endpoint: EndpointOption = None,
    function: Annotated[
        str | None,
        typer.Option(
            "--function",
            "-f",
            help="a function's CloudWatch Logs instead: command, consumer, trigger, snapshot, trim (or a full name)",
        ),
    ] = None,
    follow: Annotated[bool, typer.Option(help="with --function: keep printing new lines")] = False,
) -> None:
    """The endpoint's log (embedded), the containers' logs, or a function's log (--function)."""
    endpoint = local_endpoint(endpoint)
    if function:
        function_logs(endpoint, function, lines, follow)
    elif backend == EMBEDDED:
        if not LOG_FILE.is_file():
            raise fail(f"no log at {LOG_FILE}")
        console.print(tail(LOG_FILE, lines))
    else:
        subprocess.run(compose("--profile", COMPOSE_PROFILES.get(backend, backend), "logs", "--tail", str(lines)))


def function_logs(endpoint: str, function: str, lines: int, follow: bool) -> None:
    """`aws logs tail /aws/lambda/<fn> [--follow]` for any AWS CLI: FilterLogEvents, polled."""
    pipeline = open_pipeline(endpoint)
    name = pipeline.outputs.functions.get(function, {}).get("name", function)
    client = pipeline.backend.client("logs")
    group, start, seen = f"/aws/lambda/{name}", 0, set()
    while True:
        events, kwargs = [], {"logGroupName": group, "startTime": start}
        try:
            while True:
                page = client.filter_log_events(**kwargs)
                events.extend(page["events"])
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
        except client.exceptions.ResourceNotFoundException:
            events = []  # no invocation yet: the group appears with the first one
        fresh = [e for e in sorted(events, key=lambda e: e["timestamp"]) if e["eventId"] not in seen]
        for event in fresh if start else fresh[-lines:]:  # the first page: the last `lines` only
            stamp = time.strftime("%H:%M:%S", time.gmtime(event["timestamp"] / 1000))
            console.print(
                f"{stamp} {event['logStreamName'][-8:]} {event['message'].rstrip()}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        seen.update(e["eventId"] for e in fresh)
        if not follow:
            return
        start = max([start, *(e["timestamp"] for e in fresh)])
        time.sleep(1)  # follow mode polls once a second, as `aws logs tail --follow` does


def open_pipeline(endpoint: str) -> Any:
    from esjoin.target import local_target
    from esjoin.testing.pipeline import Pipeline

    demo_project()
    from infra.outputs import Outputs

    if not OUTPUTS.is_file():
        raise fail(f"no {OUTPUTS}: run `make up` first")
    outputs = Outputs.load(OUTPUTS)
    endpoint = outputs.endpoint or endpoint
    backend = Backend(EMBEDDED, local_target(endpoint, outputs.region), TIMING[EMBEDDED])
    return Pipeline(backend, outputs)


@app.command()
def send(
    endpoint: EndpointOption = None, deadline: Annotated[float, typer.Option(help="seconds to wait for the views")] = 60
) -> None:
    """Send the original example's sample events (two users) through `command`, print the views."""
    endpoint = local_endpoint(endpoint)
    from esjoin.testing.checks import differences
    from esjoin.testing.events import sample_events
    from esjoin.testing.waits import WaitTimeout, eventually

    pipeline = open_pipeline(endpoint)
    prefix = f"demo-{time.strftime('%H%M%S')}"
    events = sample_events(prefix)
    pipeline.log.record(events, "command")
    result = pipeline.command({"events": events})
    console.print(f"command function sent {result.get('sent')} events to {pipeline.outputs.stream['name']}")
    users = pipeline.log.users()
    try:
        eventually(
            lambda: not differences(pipeline, users),
            expected="the view rows to reflect the events",
            deadline=deadline,
            interval=0.05,
        )
    except WaitTimeout as error:
        raise fail(str(error)) from None
    print_views(pipeline.views(users))


def print_views(rows: dict[str, dict[str, Any]]) -> None:
    table = Table(title="view rows")
    for column in ("id", "name", "lastLogin", "recentOrderCount", "eventCount", "snapshotVersion"):
        table.add_column(column)
    for row in sorted(rows.values(), key=lambda r: r["id"]):
        last_login = row.get("lastLogin")
        shown = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(last_login / 1000)) if last_login else "-"
        table.add_row(
            row["id"],
            str(row.get("name")),
            shown,
            str(row.get("recentOrderCount")),
            str(row.get("eventCount")),
            str(row.get("snapshotVersion", 0)),
        )
    console.print(table)


@app.command()
def views(
    users: Annotated[list[str] | None, typer.Argument(help="user ids (default: all)")] = None,
    endpoint: EndpointOption = None,
) -> None:
    """Print view rows (all of them, or the given users')."""
    endpoint = local_endpoint(endpoint)
    from esjoin.testing.pipeline import from_item

    pipeline = open_pipeline(endpoint)
    if users:
        rows = pipeline.views(users)
    else:
        rows, kwargs = {}, {}
        while True:
            page = pipeline.dynamodb.scan(TableName=pipeline.table("views"), **kwargs)
            rows.update({row["id"]: row for row in map(from_item, page["Items"])})
            if "LastEvaluatedKey" not in page:
                break
            kwargs = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
    print_views(rows)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bootstrap(ctx: typer.Context) -> None:
    """infra.bootstrap's command line: apply | outputs | teardown [--endpoint --stage --set K=V ...]."""
    demo_project()
    from infra.bootstrap import main

    raise typer.Exit(main(list(ctx.args)))
