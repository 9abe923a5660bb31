"""Starts, watches and stops the processes of a local cluster."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # Runs in the child before exec: if taskmill-dev itself is killed, the kernel stops the
    # child too, so not even SIGKILL of the parent leaves a process behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """One supervised process.

    Attributes:
        name: Shown in messages, e.g. ``worker-2``.
        argv: The command line.
        env: The environment.
        process: The running process, once started.
        restarts: How often it was restarted.
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    expected_exit: bool = field(default=False)

    def start(self) -> None:
        """Starts the process in its own session, so a Ctrl-C reaches only the supervisor."""
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # taskmill-dev starts no threads: safe
        )
        logger.info("started %s (pid %d)", self.name, self.process.pid)

    def stop(self, timeout: float) -> None:
        """Sends SIGTERM, waits up to ``timeout`` seconds, then kills."""
        self.expected_exit = True
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop in %.0f s; killing it", self.name, timeout)
            self.process.kill()
            self.process.wait()


class Supervisor:
    """Watches children; reports any that dies and restarts it when asked."""

    def __init__(self, restart: bool) -> None:
        self.children: list[Child] = []
        self._restart = restart
        self.stopping = threading.Event()

    def add(self, name: str, argv: Sequence[str], env: dict[str, str]) -> Child:
        """Starts a child and watches it from now on."""
        child = Child(name, list(argv), env)
        child.start()
        self.children.append(child)
        return child

    def check(self) -> None:
        """Reports children that died since the last check, restarting them when asked."""
        for child in self.children:
            if child.process is None or child.expected_exit:
                continue
            code = child.process.poll()
            if code is None:
                continue
            if self._restart:
                child.restarts += 1
                logger.error("%s exited with %s; restarting it", child.name, code)
                child.start()
            else:
                logger.error("%s exited with %s (--restart restarts it)", child.name, code)
                child.expected_exit = True

    def stop_all(self, prefixes: Sequence[str], timeout: float) -> None:
        """Stops children group by group: those whose name starts with each prefix in turn."""
        for prefix in prefixes:
            members = [child for child in self.children if child.name.startswith(prefix)]
            for child in members:
                child.expected_exit = True
                if child.process is not None and child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)
            for child in members:
                child.stop(timeout)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls ``condition`` until it holds.

    Raises:
        TimeoutError: It did not hold within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def python_module(module: str, *args: str) -> list[str]:
    """The argv that runs ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def child_env(**overrides: str) -> dict[str, str]:
    """This process's environment with the given variables set."""
    env = dict(os.environ)
    env.update(overrides)
    return env
