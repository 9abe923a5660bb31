"""The supervisor ``shell`` puts between the worker and a program, to kill the program's tree.

Run as a script in an interpreter of its own (``python -I -S reaper.py STATUS_FD PARENT_PID
LC_CTYPE PROGRAM ARG...``), never imported by the worker. It uses the standard library only:
``-I -S`` keeps the worker's packages, its directory and any ``PYTHON*`` variable of the task's
environment off this interpreter.

Why a process of its own: a program that calls ``setsid`` leaves the session and process group
the worker started it in, so killing those misses it; and one whose parent has exited is
reparented to init, where no walk down from the worker's child finds it. This supervisor marks
itself a *child subreaper* (``PR_SET_CHILD_SUBREAPER``): every descendant orphaned below it is
reparented to it instead, whatever session or group it moved to. So its children, found in
``/proc`` by their parent pid, head the program's whole remaining tree: it kills them, reaps
them, and kills the orphans each death hands it, until it has no child left. The worker itself
cannot be that subreaper: the orphans of every task (and of ``process=True`` children) would
all come to it with nothing to tell them apart, and reaping them would steal exit statuses from
``subprocess``. No cgroup: a worker in a container rarely has a cgroup delegated to it, and
this needs no privilege.

The tree is killed when the worker sends SIGTERM (the task's timeout or cancellation), when the
worker dies (``PR_SET_PDEATHSIG``), and when the program exits: nothing a task started outlives
it. What escapes: a process that asks something outside the tree to start a program (a service
manager, ``at``, a remote shell); a process this user may not signal (a setuid program), which
holds the kill until it exits, and which the worker stops waiting for; and everything, once this
supervisor is itself SIGKILLed, as its orphans then go to init. Elsewhere than Linux (no prctl,
no /proc) only the program's process group is killed, on timeout or cancellation.

It reports on ``STATUS_FD``, a line each: ``started PID``, then ``exited CODE`` (negative: the
signal that ended the program; said before the leftovers are killed) or ``killed`` (after the
kill); or ``error ERRNO`` when the program cannot start. It exits once every descendant is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_SIGNALS = {signal.SIGCHLD, signal.SIGTERM}


def _prctl(option: int, value: int) -> None:
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl({option}): {os.strerror(error)}")


def _start(argv: list[str]) -> tuple[int, int]:
    """Forks and execs ``argv`` in a process group of its own; returns (pid, 0) or (0, errno)."""
    read_end, write_end = os.pipe()  # close-on-exec: EOF means the exec succeeded
    pid = os.fork()
    if pid == 0:  # the child: execs, or says why not and exits
        try:
            os.close(read_end)
            os.setpgid(0, 0)  # killpg reaches the program's group without the supervisor
            # Ignored signals and the mask survive exec; the program starts as from a shell.
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            os.execvp(argv[0], argv)
        except OSError as error:
            os.write(write_end, str(error.errno).encode())
        finally:
            os._exit(127)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as failure:
        errno = failure.read()
    if errno:
        os.waitpid(pid, 0)
        return 0, int(errno)
    return pid, 0


def _members() -> list[int]:
    """Live processes to kill: this supervisor's children and the rest of its session."""
    me = os.getpid()
    found = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as stat:
                    # After the command name, which may hold spaces and parentheses.
                    fields = stat.read().rpartition(b")")[2].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[1]) == me or int(fields[3]) == me:  # ppid, session
                found.append(int(name))
    return found


def _kill_tree(group: int | None) -> None:
    """Kills and reaps every descendant; each death may hand over orphans, so until none is left.

    ``group`` is the program's process group, killed first while the program is known to be
    unreaped (its pid, and so the group's id, cannot have been reused): the only kill that works
    without /proc.
    """
    if group is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    while True:
        for pid in _members():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        _reap_ready(0)


def _reap_ready(program: int) -> int | None:
    """Reaps every child already gone; returns the program's exit code if it was one of them."""
    code = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if pid == 0:
            return code
        if pid == program:
            code = os.waitstatus_to_exitcode(status)


def _supervise(program: int, status_fd: int) -> None:
    """Waits for the program's exit or for SIGTERM, says which, and kills what is left."""
    while True:
        if signal.sigwaitinfo(_SIGNALS).si_signo == signal.SIGTERM:
            _kill_tree(program)  # not reaped yet: only _reap_ready below reaps it
            _say(status_fd, "killed")
            return
        code = _reap_ready(program)
        if code is not None:
            # Said first: the worker bounds its wait from here, should a leftover not die.
            _say(status_fd, f"exited {code}")
            _kill_tree(None)
            return


def _say(fd: int, line: str) -> None:
    with contextlib.suppress(BrokenPipeError):  # the worker may be gone
        os.write(fd, line.encode() + b"\n")


def _restore_lc_ctype(given: str) -> None:
    """Undoes the interpreter's C locale coercion (PEP 538), which ``-I`` cannot turn off.

    Started with a C locale, the interpreter sets ``LC_CTYPE`` in its own environment, which the
    program would inherit; ``given`` is the program's own: ``-`` for unset, else ``=value``.
    """
    if given == "-":
        os.environ.pop("LC_CTYPE", None)
    else:
        os.environ["LC_CTYPE"] = given[1:]


def main(args: list[str]) -> int:
    """Runs ``PROGRAM ARG...`` until it ends or the worker asks; reports on ``STATUS_FD``.

    ``args`` is ``STATUS_FD PARENT_PID LC_CTYPE PROGRAM ARG...``.
    """
    status_fd, parent, argv = int(args[0]), int(args[1]), args[3:]
    _restore_lc_ctype(args[2])
    os.set_inheritable(status_fd, False)
    # Blocked before anything can send them, so sigwaitinfo takes every one.
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        return 0  # the worker died before the death signal was armed: start nothing
    pid, errno = _start(argv)
    if not pid:
        _say(status_fd, f"error {errno}")
        return 0
    _say(status_fd, f"started {pid}")
    _supervise(pid, status_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
