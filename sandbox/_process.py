"""Child-process plumbing shared by the sandbox servers.

Every server the sandbox starts is a real OS process.  Two rules keep test
runs from leaking them:

* each child gets ``PR_SET_PDEATHSIG`` so the kernel kills it if the test
  process dies without running its teardown (``kill -9`` of pytest, a crash);
* every child we signal is also ``wait()``-ed for, so none is left a zombie.

Caveat: the kernel sends the death signal when the *thread* that spawned the
child exits, so start servers from the main thread (as pytest fixtures do),
not from a short-lived worker thread.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this (child) process when its parent exits.

    Runs in the child between fork and exec.  Linux only; elsewhere it is a
    no-op because libc has no ``prctl``.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def spawn(argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout/stderr appended to ``log_path``.

    Output goes to a file rather than a pipe: nobody reads a pipe while tests
    run, and a full pipe would block the server.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - argv is built by the sandbox itself
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - tests are single-threaded at spawn time
        )
    log.debug("started pid %d: %s", proc.pid, " ".join(argv))
    return proc


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM ``proc`` and reap it; SIGKILL it if it outlives ``timeout``.

    Raises ``TimeoutError`` after the SIGKILL so a server that will not shut
    down cleanly is noticed rather than silently papered over.
    """
    if proc.poll() is not None:
        return proc.returncode
    proc.terminate()
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.warning("pid %d ignored SIGTERM for %.0fs; killing it", proc.pid, timeout)
        kill(proc)
        raise TimeoutError(f"pid {proc.pid} did not exit within {timeout}s of SIGTERM") from None


def kill(proc: subprocess.Popen[bytes]) -> int:
    """SIGKILL ``proc`` and reap it."""
    if proc.poll() is None:
        proc.kill()
    return proc.wait()


def tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"<{path} does not exist>"
    return "\n".join(text.splitlines()[-lines:])


def is_root() -> bool:
    """True when running as root, where mariadbd insists on ``--user``."""
    return os.geteuid() == 0
