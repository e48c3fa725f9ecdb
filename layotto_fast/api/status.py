"""Domain error kinds -> gRPC status code names: the one table both gRPC transports use."""

from __future__ import annotations

from layotto_fast import errors

GRPC_CODES: dict[type[errors.RuntimeApiError], str] = {
    errors.InvalidArgument: "INVALID_ARGUMENT",
    errors.NotFound: "NOT_FOUND",
    errors.Conflict: "ABORTED",
    errors.FailedPrecondition: "FAILED_PRECONDITION",
    errors.ResourceExhausted: "RESOURCE_EXHAUSTED",
    errors.Unavailable: "UNAVAILABLE",
    errors.DeadlineExceeded: "DEADLINE_EXCEEDED",
    errors.Unimplemented: "UNIMPLEMENTED",
    errors.Internal: "INTERNAL",
    errors.PermissionDenied: "PERMISSION_DENIED",
    errors.Unauthenticated: "UNAUTHENTICATED",
    errors.Unknown: "UNKNOWN",
}


def grpc_code(error: errors.RuntimeApiError) -> str:
    """The status code name of ``error``'s kind (a subclass maps as its nearest kind)."""
    for kind in type(error).__mro__:
        code = GRPC_CODES.get(kind)
        if code is not None:
            return code
    return "INTERNAL"
