"""Domain errors raised by the runtime and its components.

Handlers raise these; only the transport turns them into wire status codes, so the
same error reads the same on every API and transport.
"""

from __future__ import annotations


class RuntimeApiError(Exception):
    """Base of every error a caller of the runtime API can receive."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(RuntimeApiError):
    code = "INVALID_ARGUMENT"


class NotFound(RuntimeApiError):
    code = "NOT_FOUND"


class Conflict(RuntimeApiError):
    """An optimistic-concurrency check failed (stale etag): nothing was changed."""

    code = "ABORTED"


class FailedPrecondition(RuntimeApiError):
    code = "FAILED_PRECONDITION"


class Unavailable(RuntimeApiError):
    code = "UNAVAILABLE"


class Unimplemented(RuntimeApiError):
    code = "UNIMPLEMENTED"


class Internal(RuntimeApiError):
    code = "INTERNAL"


def require(value: str, field: str) -> str:
    """Return ``value`` or raise InvalidArgument naming the empty ``field``."""
    if not value:
        raise InvalidArgument(f"{field} is empty: a value is required")
    return value


class StartupError(Exception):
    """Bad configuration or manifest: start-up stops with exit code 2."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        super().__init__(f"{source}: {field}: {problem}")
        self.source = source
        self.field = field
        self.problem = problem
