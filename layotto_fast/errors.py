"""Domain errors raised by the runtime and its components.

Services and components raise these; each transport family turns a kind into its
own status once, in one table (``api/status.py`` for gRPC), so the same error reads
the same on every API and transport.
"""

from __future__ import annotations


class RuntimeApiError(Exception):
    """Base of every error a caller of the runtime API can receive."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(RuntimeApiError):
    """The request is malformed or names something that does not exist."""


class NotFound(RuntimeApiError):
    pass


class Conflict(RuntimeApiError):
    """An optimistic-concurrency check failed (stale etag): nothing was changed."""


class FailedPrecondition(RuntimeApiError):
    pass


class ResourceExhausted(RuntimeApiError):
    """A limit was reached (size, queue, sequence range); nothing was changed."""


class Unavailable(RuntimeApiError):
    """The component or its backend cannot answer now; retrying later may work."""


class DeadlineExceeded(RuntimeApiError):
    pass


class Unimplemented(RuntimeApiError):
    """The rpc, or a feature a component does not declare."""


class Internal(RuntimeApiError):
    pass


class PermissionDenied(RuntimeApiError):
    """An upstream refused the caller (HTTP 403)."""


class Unauthenticated(RuntimeApiError):
    """An upstream wants credentials the call did not carry (HTTP 401)."""


class Unknown(RuntimeApiError):
    """An upstream failed with no closer kind: the exception a called service threw."""


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
