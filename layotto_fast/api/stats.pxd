cdef enum:
    BUCKETS = 13  # the bounds of LATENCY_BUCKETS, then +Inf


cdef class MethodStats:
    cdef readonly dict failures
    cdef unsigned long long _ok
    cdef double _seconds
    cdef unsigned long long _buckets[BUCKETS]

    cdef void record_ok_now(self, double seconds) noexcept
    cdef void _time(self, double seconds) noexcept
