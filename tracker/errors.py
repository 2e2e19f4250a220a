"""Typed errors, each with a one-line message a DBA can act on.

The CLI maps ``exit_status`` to the process exit code; nothing below the CLI
calls ``sys.exit``.  Statuses are a contract: 0 ok, 1 work failed, 2 usage or
config, 3 refused by a safety check.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3


class TrackerError(Exception):
    """Base class: ``str(err)`` is the whole one-line message.

    ``retryable`` marks a failure that may pass if the unit is tried again
    (a storage hiccup, a deadlock); a killed query, a full disk or a lost
    lease are final for this run.
    """

    exit_status = EXIT_FAILED
    retryable = False

    def __init__(self, message: str, hint: str | None = None, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(TrackerError):
    """The configuration file is unreadable, malformed or inconsistent."""

    exit_status = EXIT_USAGE


class UsageError(TrackerError):
    """The command line asks for something impossible (bad date, bad name)."""

    exit_status = EXIT_USAGE


class SafetyRefusal(TrackerError):
    """A safety check refused the work (not a replica, not caught up, ...)."""

    exit_status = EXIT_REFUSED


class NotAReplica(SafetyRefusal):
    """The local server is not a replica."""


class NotCaughtUp(SafetyRefusal):
    """The replica has not applied the master's events up to the cutoff."""


class TableNotFound(TrackerError):
    """A named table does not exist or is not a base table."""


class DumpFailed(TrackerError):
    """The server's dump query, or reading its output, failed."""


class UploadFailed(TrackerError):
    """Writing to the destination failed; nothing was committed."""

    retryable = True


class LeaseLost(TrackerError):
    """Another host took over a unit's claim; the unit was not committed."""


class StageFailed(TrackerError):
    """A pipeline stage (un-escape, compression) failed."""


class Cancelled(TrackerError):
    """The run was told to stop (signal); the unit is not committed."""


class KillFailed(TrackerError):
    """The kill script could not do its job."""
