# Driving a coroutine from C, and the clock calls are timed with: shared by the
# compiled call paths (native_calls.pyx, suspended.pyx).
from cpython.ref cimport PyObject
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

cdef extern from "Python.h":
    # Reports a coroutine's return as PYGEN_RETURN instead of raising StopIteration;
    # PYGEN_ERROR is -1: Cython raises the pending exception for it.
    int PyIter_Send(object iterator, object arg, PyObject **result) except -1

cdef enum:
    PYGEN_RETURN = 0


cdef inline double monotonic_now() noexcept nogil:
    """Seconds on CLOCK_MONOTONIC, the clock ``time.perf_counter`` reads on Linux."""
    cdef timespec spec
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return spec.tv_sec + spec.tv_nsec * 1e-9
