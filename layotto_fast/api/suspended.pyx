# cython: language_level=3
"""Finish a unary handler that suspended, without an asyncio Task.

A handler over a network store (Redis, etcd) suspends on a future once or twice
per call. Wrapping each such call in a Task cost more than the store's own
client: the Task, its registration in asyncio's task set, a wrapper coroutine, a
done callback and a deadline timer, every call. A ``SuspendedCall`` drives the
handler's coroutine the way a Task does (it waits on the future the coroutine
yields, and when that is done sends into the coroutine again, in the call's own
context) and answers the call itself when the coroutine returns. While a step runs
it is the loop's current task, with a Task's cancel bookkeeping, so code that asks
for its task (``asyncio.timeout``, as redis-py's own client uses) works as under a
Task. Whatever else than a future a coroutine yields goes to a real Task from that
point on, so every awaitable keeps working.

Deadlines are not a timer per call: the server sweeps its suspended calls when the
earliest deadline among them is due (``NativeGrpcServer.watch_deadline``).
"""

from _asyncio import Future, _enter_task, _leave_task
from asyncio import CancelledError
from contextvars import copy_context

from cpython.ref cimport PyObject, Py_XDECREF

from layotto_fast.api.call import CURRENT
from layotto_fast.api.resume import resume_started
from layotto_fast.api.coroutines cimport PYGEN_RETURN, PyIter_Send, monotonic_now
from layotto_fast.api.stats cimport MethodStats
from layotto_fast.errors import ResourceExhausted


def suspend(protocol, key, method, coro, yielded, double started, long long timeout_us) -> None:
    """A unary handler's first step yielded ``yielded``: carry the call on to its answer.

    Called with the call's metadata current (the transport's context); later steps see
    the same. Over the server's in-flight limit the call is refused RESOURCE_EXHAUSTED.
    """
    cdef SuspendedCall call
    server = protocol._server
    if server.in_flight >= server.max_in_flight:
        coro.close()
        busy = ResourceExhausted(f"{server.in_flight} calls in flight: the server is at its limit")
        protocol._fail(key, method, busy, started, CURRENT.get())
        return
    server.in_flight += 1
    call = SuspendedCall.__new__(SuspendedCall)
    call.protocol, call.connection, call.server, call.loop = protocol, protocol._connection, server, protocol._loop
    call.calls, call.key, call.method, call.coro, call.started = protocol._tasks, key, method, coro, started
    call.encode, call.stats = method.encode, method.stats
    call.context = copy_context()
    call.wakeup = call._wakeup
    call.calls[key] = call
    protocol._suspended_calls += 1
    if timeout_us >= 0:
        call.deadline = call.loop.time() + timeout_us / 1e6
        if call.deadline < server.deadline_at:
            server.watch_deadline(call.deadline)
    call.wait(yielded)


cdef class SuspendedCall:
    """One unary call whose handler awaited; it ends by answering, failing, or being cancelled.

    The transport keeps it in ``calls`` by stream key while the call is still to be
    answered; a deadline, a client's RST_STREAM or a lost connection take it out of
    ``calls`` and ``cancel`` it, as they would a Task.
    """

    cdef object protocol, connection, server, loop, encode, coro, context
    cdef object wakeup  # self._wakeup, bound once
    cdef object waiter  # the future the coroutine waits on
    cdef object task  # set when a Task took the coroutine over
    cdef dict calls
    cdef MethodStats stats
    cdef int cancel_requests
    cdef bint must_cancel, ended
    cdef readonly object key, method
    cdef readonly double started
    cdef readonly double deadline  # on the loop's clock; 0: none

    def __init__(self) -> None:
        raise TypeError("made by suspend()")

    def wait(self, yielded) -> None:
        """Wait on what the coroutine's last step yielded, as a Task would."""
        if type(yielded) is Future:  # asyncio's own (every loop's create_future): no checks needed
            self.waiter = yielded
            yielded.add_done_callback(self.wakeup, context=self.context)
        elif getattr(yielded, "_asyncio_future_blocking", None) is True:
            yielded._asyncio_future_blocking = False
            self.waiter = yielded
            yielded.add_done_callback(self.wakeup, context=self.context)
        elif yielded is None:  # a bare yield (asyncio.sleep(0)): carry on next pass
            self.loop.call_soon(self.wakeup, None, context=self.context)
        else:
            # Anything else (another loop's future, a foreign awaitable): a Task says what it means.
            self.task = self.loop.create_task(resume_started(self.coro, yielded), context=self.context)
            self.task.add_done_callback(self._task_done)

    # -- what asyncio asks of the current task ------------------------------------------
    def cancel(self, msg=None) -> bool:
        if self.ended:
            return False
        self.cancel_requests += 1
        if self.task is not None:
            return self.task.cancel(msg)
        if self.waiter is None or not self.waiter.cancel(msg):
            self.must_cancel = True  # the wake-up is already due: it throws instead of sending
        return True

    def cancelling(self) -> int:
        return self.cancel_requests

    def uncancel(self) -> int:
        if self.cancel_requests > 0:
            self.cancel_requests -= 1
        return self.cancel_requests

    def done(self) -> bool:
        return self.ended

    def get_name(self) -> str:
        return f"unary call {self.method.name}"

    # -- driving the coroutine ---------------------------------------------------------
    def _wakeup(self, future) -> None:
        self.waiter = None
        _enter_task(self.loop, self)
        try:
            self._step()
        finally:
            _leave_task(self.loop, self)
        if self.ended and self.protocol._suspended_calls == 0:
            # No other call on this connection is waiting to share the write: the answer
            # leaves now, a loop pass sooner and ahead of other work queued for the pass
            # (at 1000 publishes/s, the delivery of the message just published).
            self.protocol._flush()

    cdef _step(self):
        cdef PyObject *raw = NULL
        cdef int sent
        try:
            if self.must_cancel:
                self.must_cancel = False
                try:
                    yielded = self.coro.throw(CancelledError())
                except StopIteration as stop:
                    self._answer(stop.value)
                    return
                self.wait(yielded)
                return
            sent = PyIter_Send(self.coro, None, &raw)
            result = <object>raw
            Py_XDECREF(raw)
        except Exception as exc:
            self._fail(exc)
            return
        except CancelledError as exc:
            self._fail(exc)
            return
        if sent == PYGEN_RETURN:
            self._answer(result)
        else:
            self.wait(result)

    def _task_done(self, task) -> None:
        if task.cancelled():
            self._fail(CancelledError())
            return
        exc = task.exception()
        if exc is not None:
            self._fail(exc)
        else:
            self._answer(task.result())

    cdef bint _answered_elsewhere(self):
        """The transport already ended this call (deadline, reset, lost connection)."""
        return self.calls.get(self.key) is not self

    cdef _answer(self, result):
        if self._answered_elsewhere():
            self._end()
            return
        try:
            response = self.encode(result)
        except Exception as exc:
            self._fail(exc)
            return
        call = self.context.get(CURRENT)  # made only when the handler asked, or there was metadata
        if call is None:
            self.connection.respond(self.key, response)
        else:
            self.connection.respond(self.key, response, call.pending_trailers(), call.take_headers())
        self.stats.record_ok_now(monotonic_now() - self.started)
        self._end()

    cdef _fail(self, exc):
        # A CancelledError while the call is still ours: something under the handler was
        # cancelled, not this call, and the client gets an error rather than no answer.
        if not self._answered_elsewhere():
            self.protocol._fail(self.key, self.method, exc, self.started, self.context.get(CURRENT))
        self._end()

    cdef _end(self):
        if self.ended:
            return
        self.ended = True
        self.coro = self.wakeup = None  # the bound method refers back to this object
        self.server.in_flight -= 1
        self.protocol._suspended_calls -= 1
        if not self._answered_elsewhere():
            del self.calls[self.key]
        # The connection's last call, ended in a step of its own, is flushed by _wakeup as
        # soon as the step is over; any other answer shares the pass's one write.
        lone = self.task is None and self.protocol._suspended_calls == 0
        if not lone and not self.protocol._flush_scheduled:
            self.protocol._schedule_flush()
