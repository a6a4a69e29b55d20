"""The channel to one worker process: starting it, the framed exchange over its socketpair, its log
output, and killing it with everything it started.

A worker (worker_program.py, installed as ``<state_dir>/runtime/worker.py``) is started by
start_worker() with one end of a socketpair and a pipe for its stdout and stderr. Each message on the
socketpair is framed as ``worker_program.FRAME`` says (header length, body length, JSON header, body
bytes); WorkerProcess sends requests and reads replies against a deadline, decoding the worker's output
into log events (logs.py) on the way. A deadline passing raises DeadlinePassed, a closed or broken
channel WorkerDied: the invocation lifecycle (lifecycle.py) turns either into Lambda's result.

Killing: each worker leads its own process group and is a child subreaper (worker_program.py), so
whatever the function started stays its descendant even after ``setsid`` or a double fork. A timeout,
a retirement (update, DeleteFunction) or shutdown stops the worker, finds every descendant in /proc,
stops and kills them all, then kills the worker and its group (``_kill_environment``): nothing the
function started outlives its execution environment. Without /proc (not Linux) only the group kill
remains.

One lock per worker (``_stop_lock``) makes kill() and stop() exclusive; it is taken under no other lock
and no other lock is taken under it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from esjoin.emulator.invocation import FunctionSpec, LambdaServiceError
from esjoin.emulator.lambda_service import worker_program
from esjoin.emulator.lambda_service.function_logs import LogEvent, WorkerOutputDecoder, now_ms

EXIT_GRACE_SECONDS = 2.0  # after a worker closed its channel, how long it may take to exit on its own
OUTPUT_DRAIN_SECONDS = 0.5  # after a worker died, how long to wait for the last of its output
KILL_ROUNDS = 16  # /proc walks to catch processes forked while their parents were being stopped
READ_CHUNK = 1 << 20

_log = logging.getLogger(__name__)


class DeadlinePassed(Exception):
    pass


class WorkerDied(Exception):
    pass


class WorkerProcess:
    """One execution environment: a worker process, its control channel and its log output."""

    def __init__(
        self,
        spec: FunctionSpec,
        process: subprocess.Popen,
        control: socket.socket,
        output_fd: int,
        log_token: str,
        log_stream: str,
        generation: int,
    ) -> None:
        self.revision_id = spec.revision_id
        self.generation = generation
        self.process = process
        self.pid = process.pid
        self.control = control
        self.output_fd = output_fd
        self.log_stream = log_stream
        self.max_memory_kb = 0
        self.idle_since = 0.0
        self._decoder = WorkerOutputDecoder(worker_program.log_marker(log_token))
        self._events: list[LogEvent] = []
        self._inbox = bytearray()
        self._poller = select.poll()
        self._poller.register(control.fileno(), select.POLLIN)
        self._poller.register(output_fd, select.POLLIN)
        self._output_open = True
        self._stop_lock = threading.Lock()
        self._stopped = False

    # The exchange: only the thread holding the worker (busy) calls these.

    def send(self, header: dict, body: bytes, deadline: float) -> None:
        try:
            for chunk in worker_program.encode_message(header, body):
                self.control.settimeout(_remaining(deadline))
                self.control.sendall(chunk)
        except TimeoutError:
            raise DeadlinePassed() from None
        except OSError as error:
            raise WorkerDied() from error

    def receive(self, deadline: float) -> tuple[dict, bytes]:
        """The worker's next message; its output so far is decoded into log events on the way."""
        while True:
            message = self._next_message()
            if message is not None:
                self._read_output()  # all it wrote before answering is in the pipe by now
                self._events.extend((now_ms(), line) for line in self._decoder.flush())
                return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlinePassed()
            for fd, _mask in self._poller.poll(math.ceil(remaining * 1000)):
                if fd == self.output_fd:
                    self._read_output()
                    continue
                try:
                    data = self.control.recv(READ_CHUNK)
                except (BlockingIOError, TimeoutError):
                    continue
                except OSError as error:
                    raise WorkerDied() from error
                if not data:
                    raise WorkerDied()
                self._inbox += data

    def take_events(self) -> list[LogEvent]:
        events, self._events = self._events, []
        return events

    def _next_message(self) -> tuple[dict, bytes] | None:
        frame = worker_program.FRAME
        if len(self._inbox) < frame.size:
            return None
        header_length, body_length = frame.unpack_from(self._inbox)
        end = frame.size + header_length + body_length
        if len(self._inbox) < end:
            return None
        header = json.loads(self._inbox[frame.size : frame.size + header_length])
        body = bytes(self._inbox[frame.size + header_length : end])
        del self._inbox[:end]
        return header, body

    def _read_output(self) -> bool:
        """Read what the pipe holds now; False once every writer closed it."""
        while self._output_open:
            try:
                data = os.read(self.output_fd, 65536)
            except BlockingIOError:
                return True
            if not data:
                self._output_open = False
                self._poller.unregister(self.output_fd)
                break
            stamp = now_ms()
            self._events.extend((stamp, line) for line in self._decoder.feed(data))
        return False

    # Life cycle: any thread.

    def exited(self) -> bool:
        """Whether the process has ended (without reaping it, so its process group id stays ours)."""
        if self._stopped:
            return True
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def kill(self) -> None:
        """SIGKILL the worker and everything it started, now; stop() reaps it."""
        with self._stop_lock:
            if not self._stopped and self.process.returncode is None:
                _kill_environment(self.pid, reaped=False)

    def stop(self, exit_grace: float = 0.0) -> None:
        """Kill the worker and everything it started, reap it, collect its last output, close the channels.

        `exit_grace`: a worker that already closed its channel is dying on its own; give it that long,
        so its exit status is its own and not our SIGKILL."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            if exit_grace > 0:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=exit_grace)
            # Also whatever the function started; a no-op once all are gone. A worker reaped by the grace
            # wait has no descendants left to find: its pid may already belong to someone else.
            _kill_environment(self.pid, reaped=self.process.returncode is not None)
            self.process.wait()
            drain_until = time.monotonic() + OUTPUT_DRAIN_SECONDS
            while (
                self._read_output()
                and time.monotonic() < drain_until
                and self._poller.poll(math.ceil(_remaining(drain_until) * 1000))
            ):
                pass  # a process outside the group may still hold the pipe: give up at the deadline
            self._events.extend((now_ms(), line) for line in self._decoder.flush())
            self.control.close()
            os.close(self.output_fd)

    def exit_reason(self) -> str:
        """Lambda's words for how the runtime ended (Runtime.ExitError's message)."""
        code = self.process.returncode
        if code is None or code == 0:
            return "Runtime exited without providing a reason"
        if code > 0:
            return f"Runtime exited with error: exit status {code}"
        # Lambda quotes Go's os.ProcessState: "signal: killed", "signal: segmentation fault", ...
        name = signal.strsignal(-code) or f"signal {-code}"
        return f"Runtime exited with error: signal: {name.lower()}"


def _kill_environment(pid: int, *, reaped: bool) -> None:
    """SIGKILL a worker and every process it started, including those that left its process group.

    The worker is stopped first, then its descendants, round after round until a walk of /proc finds no
    new one: a stopped process cannot fork, and a fork racing the stop either shows up in the next walk
    or is abandoned by the kernel (a pending signal fails it). Only then is everything killed, so no
    process re-parents out of the tree (to init) between the walk and the kill. The worker is a child
    subreaper (worker.py), so orphans (a double-forked daemon) are in its tree too. The process group is
    killed as well: it is all there is without /proc.

    `reaped`: the worker's pid has been waited for and may be reused; then only its group is killed."""
    if not reaped:
        _signal(pid, signal.SIGSTOP)
        stopped: set[int] = set()
        for _ in range(KILL_ROUNDS):
            found = _descendants(pid) - stopped
            if not found:
                break
            for descendant in found:
                _signal(descendant, signal.SIGSTOP)
            stopped |= found
        else:
            _log.warning("worker %d: its processes kept forking while being stopped; some may survive", pid)
        for descendant in stopped:
            _signal(descendant, signal.SIGKILL)
        _signal(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _descendants(root: int) -> set[int]:
    """Every process below `root` in the process tree (by the parent pid in /proc/<pid>/stat); empty
    without /proc. Zombies are included: signalling them is harmless."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return set()
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat_file:
                stat = stat_file.read()
        except OSError:  # exited since the listing
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses; the last ")" ends it.
        fields = stat[stat.rfind(b")") + 2 :].split(maxsplit=2)
        if len(fields) >= 2 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(name))
    found: set[int] = set()
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), ()):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def _remaining(deadline: float) -> float:
    return max(0.001, deadline - time.monotonic())


def start_worker(
    spec: FunctionSpec,
    generation: int,
    *,
    worker_script: Path,
    site: Path,
    environment: dict[str, str],
    log_stream: str,
    deterministic: str = "",
) -> WorkerProcess:
    """Start a worker process for `spec` in its code directory; its init phase runs from here on.
    `deterministic`: the worker's deterministic-mode settings (worker_program.py), JSON, or empty."""
    log_token = secrets.token_hex(8)
    parent_end, child_end = socket.socketpair()
    output_read, output_write = os.pipe()
    command = [
        sys.executable,
        "-S",  # no site-packages, no .pth files: the endpoint's editable install stays out
        "-B",  # no .pyc written next to the function's code
        str(worker_script),
        str(child_end.fileno()),
        str(site),
        log_token,
        "0" if "LC_CTYPE" in environment else "1",
        deterministic,
    ]
    try:
        process = subprocess.Popen(
            command,
            cwd=Path(spec.code_dir).resolve(),
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output_write,
            stderr=output_write,
            pass_fds=(child_end.fileno(),),
            start_new_session=True,  # its own process group: a kill takes its children too
        )
    except OSError as error:
        parent_end.close()
        os.close(output_read)
        raise LambdaServiceError(
            500,
            "ServiceException",
            f"Could not start a worker process for function {spec.name} in {spec.code_dir}: {error}",
        ) from error
    finally:
        child_end.close()
        os.close(output_write)
    os.set_blocking(output_read, False)
    return WorkerProcess(spec, process, parent_end, output_read, log_token, log_stream, generation)
