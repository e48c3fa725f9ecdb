# cython: language_level=3
"""The per-call path of the native gRPC transport, compiled.

``dispatch`` takes the events one ``GrpcConnection.feed`` returned. A unary call
whose handler finishes without suspending (every in-memory component) is decoded,
run, encoded, answered and counted here, with no Python frame of its own: the
handler's coroutine is driven with ``PyIter_Send``, which reports completion as a
return code instead of raising StopIteration. Measured hot (an in-process replay,
64 requests per read, trivial handler), these steps cost 6.7 µs per call interpreted,
more than the 5.4 µs of HTTP/2 work in Rust they wrap, and 4 µs compiled. Everything
else (calls that suspend, fail or stream, and the other events) goes to the
protocol's Python methods, so the logic that needs care stays in typed Python.
"""

from cpython.contextvars cimport get_value
from cpython.ref cimport PyObject, Py_XDECREF

from asyncio import CancelledError
from google.protobuf.message import DecodeError

from layotto_fast.api.call import CURRENT, Call
from layotto_fast.api.suspended import suspend
from layotto_fast.api.coroutines cimport PYGEN_RETURN, PyIter_Send, monotonic_now
from layotto_fast.api.stats cimport MethodStats

cdef enum:
    UNARY = 0


def now() -> float:
    """Seconds on the clock calls are timed with (the one ``time.perf_counter`` reads on Linux)."""
    return monotonic_now()


def receive(object protocol, object connection, object transport, list methods, bytes data) -> None:
    """``data_received``: feed the bytes, serve what they complete, write the answers."""
    events = connection.feed(data)
    if events:
        suspended = protocol._suspended_calls
        dispatch(protocol, connection, methods, events)
        if protocol._suspended_calls > suspended:
            # A handler now waits on a request it queued for a backend (a publish's XADD):
            # that request leaves first, and this connection's own output (often only the
            # PING ACK a grpc-go client asks for with each call, with any answer of the same
            # read that was ready at once) a callback later. Written now, it cost the call a
            # system call that wakes the client before the backend heard of it.
            protocol._schedule_flush()
            return
    flush(protocol, connection, transport, methods)


def flush(object protocol, object connection, object transport, list methods) -> None:
    """Write what the connection has to send; serve the events that sending produced."""
    protocol._flush_scheduled = False
    while True:
        events, output = connection.flush()
        if output is not None and transport is not None:
            transport.write(output)
        if events is None:
            break
        dispatch(protocol, connection, methods, events)  # their responses go out next turn
    if transport is not None and connection.closed:
        protocol._close_transport()


cdef class Method:
    """One rpc the native transport serves: handler, codec and counters, read from C on every call."""

    cdef readonly str name
    cdef readonly object handler
    cdef readonly object decode
    cdef readonly object encode
    cdef readonly bint client_streaming
    cdef readonly bint server_streaming
    cdef readonly MethodStats stats
    cdef readonly bint inline  # False: every unary call gets a Task (measured by the benchmark only)

    def __init__(self, str name, object handler, object decode, object encode, bint client_streaming,
                 bint server_streaming, MethodStats stats, bint inline=True):
        self.name, self.handler, self.decode, self.encode = name, handler, decode, encode
        self.client_streaming, self.server_streaming = client_streaming, server_streaming
        self.stats, self.inline = stats, inline

    def __repr__(self) -> str:
        return f"Method({self.name!r})"


def dispatch(object protocol, object connection, list methods, list events) -> None:
    """Serve the events of one ``feed``: unary calls here, the rest through ``protocol._event``."""
    cdef tuple event
    for event in events:
        if event[0] == UNARY:
            _start_unary(protocol, connection, <Method>methods[event[2]], event[1], event[3], event[4], event[5])
        else:
            protocol._event(event)


cdef _start_unary(object protocol, object connection, Method method, object key, bytes message,
                  object timeout_us, object metadata):
    cdef double started = monotonic_now()
    cdef PyObject *raw = NULL
    cdef int sent
    try:
        request = method.decode(message)
    except DecodeError as exc:
        protocol._undecodable(key, method, exc, started)
        return
    if method.server_streaming or not method.inline:
        protocol._start_in_task(key, method, request, started, timeout_us, metadata)
        return
    # A Call is built only when there is metadata or the handler asks for one
    # (current_call()); most calls need neither.
    token = None if metadata is None else CURRENT.set(Call(metadata))
    call = None
    try:
        try:
            coro = method.handler(request)
            sent = PyIter_Send(coro, None, &raw)
            result = <object>raw
            Py_XDECREF(raw)
            if sent == PYGEN_RETURN:
                response = method.encode(result)
        except (Exception, CancelledError) as exc:
            # CancelledError: something the handler awaited was cancelled before its first
            # suspension, not this call; escaping here would close the whole connection
            call = get_value(CURRENT)
            protocol._fail(key, method, exc, started, call)
            return
        if sent != PYGEN_RETURN:
            call = get_value(CURRENT)  # set by the handler itself: reset below, as after a return
            suspend(protocol, key, method, coro, result, started, timeout_us)
            return
        call = get_value(CURRENT)  # ContextVar.get without a method lookup
        if call is None:
            connection.respond(key, response)
        else:
            connection.respond(key, response, call.pending_trailers(), call.take_headers())
        method.stats.record_ok_now(monotonic_now() - started)
    finally:
        if token is not None:
            CURRENT.reset(token)
        elif call is not None:
            # The handler asked for its call in the loop's own context: do not
            # let the next call see it.
            CURRENT.set(None)
