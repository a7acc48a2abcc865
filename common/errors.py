"""One exception tree for satdrp; each class carries the process exit code the CLI returns.

Exit codes (documented in ``drp --help``):
0 done, 1 failed, 2 usage or configuration error, 3 in progress (campaign ticks),
4 database schema out of date.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_IN_PROGRESS = 3
EXIT_SCHEMA = 4


class DrpError(Exception):
    """Base of every error satdrp raises on purpose; the CLI prints it as one line, no traceback."""

    exit_code: int = EXIT_FAILED


class ConfigError(DrpError):
    """A configuration file or option is wrong; the message names the file, the key and the reason."""

    exit_code = EXIT_USAGE

    def __init__(self, source: str, key: str | None, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {reason}")


class DatabaseError(DrpError):
    """The bookkeeping database refused an operation or cannot be reached."""


class DatabaseUnavailableError(DatabaseError):
    """The bookkeeping database cannot be reached (refused, timed out, connection cut). The transaction
    was rolled back, nothing is half-written; exit 2 like a configuration error because satdrp cannot
    even record that it is waiting: the operator (or the next cron tick) retries once it is back."""

    exit_code = EXIT_USAGE


class SchemaOutOfDateError(DatabaseError):
    """The database schema is not at the revision this code expects."""

    exit_code = EXIT_SCHEMA


class InvalidInputError(DrpError):
    """Input data (file records, names, states) is malformed; nothing was written."""

    exit_code = EXIT_USAGE


class NotFoundError(DrpError):
    """A named object (site, dataset, campaign, job) does not exist in bookkeeping."""


class ServiceUnavailableError(DrpError):
    """A service the work needs (Rucio, FTS3, a scheduler) cannot be reached right now. Nothing was
    changed or lost; a campaign tick says so and exits 3 (in progress): the next tick retries."""

    exit_code = EXIT_IN_PROGRESS


def unreachable(err: BaseException) -> bool:
    """Whether an error (or what caused it) says a server could not be reached, as opposed to having
    refused: connection refused or cut, time-outs, every retry unanswered (requests', urllib3's,
    Rucio's and pycurl's names, matched by name so that no client library is imported here)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (ConnectionError, TimeoutError)) or type(seen).__name__ in (
            "ConnectionError",  # requests'
            "ConnectTimeout",
            "ReadTimeout",
            "NewConnectionError",  # urllib3's
            "MaxRetryError",
            "ServerConnectionException",  # rucio's, when every retry got no answer
        ):
            return True
        text = str(seen).lower()
        if type(seen).__name__ == "error" and ("couldn't connect" in text or "connection refused" in text):
            return True  # pycurl.error (the FTS3 client's transport)
        seen = seen.__cause__ or seen.__context__
    return False
