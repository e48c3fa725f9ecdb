# cython: language_level=3
"""Call counts and latency per rpc, kept as C numbers on the per-call path.

The native transport records an OK call through ``MethodStats.record_ok_now`` from C
(a few integer and float additions, no Python objects made); the grpcio transport
and every non-OK call go through the Python methods. The actuator turns the counts
into Prometheus metric families when /metrics is scraped.

Every call that reaches a transport is counted once, with the status the client got.
Calls answered by a handler (an error, a deadline and an answer over the size limit
included) are also timed; calls that end without one (refused by the transport: an
unknown method, a request over the size limit; cancelled by the client or a lost
connection) are counted only (``count``).
"""

# The method label of calls to a path the server does not serve: one label for all of
# them, so that a client cannot add label values at will.
UNKNOWN_METHOD = "(unknown)"

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

cdef double _bounds[BUCKETS - 1]
assert len(LATENCY_BUCKETS) == BUCKETS - 1
for _index, _bound in enumerate(LATENCY_BUCKETS):
    _bounds[_index] = _bound


cdef class MethodStats:
    """One rpc's calls: OK and other codes counted apart, and a latency histogram."""

    def __cinit__(self) -> None:
        self.failures = {}

    @property
    def ok(self) -> int:
        return self._ok

    @property
    def seconds(self) -> float:
        return self._seconds

    @property
    def buckets(self) -> list[int]:
        """Calls per latency bucket, in LATENCY_BUCKETS order, then the +Inf bucket."""
        return [self._buckets[index] for index in range(BUCKETS)]

    cdef void record_ok_now(self, double seconds) noexcept:
        self._ok += 1
        self._time(seconds)

    cdef void _time(self, double seconds) noexcept:
        cdef Py_ssize_t bucket = 0
        while bucket < BUCKETS - 1 and _bounds[bucket] < seconds:  # bisect_left: Prometheus's le
            bucket += 1
        self._seconds += seconds
        self._buckets[bucket] += 1

    def record_ok(self, double seconds) -> None:
        self.record_ok_now(seconds)

    def record(self, str code, double seconds) -> None:
        if code == "OK":
            self.record_ok_now(seconds)
        else:
            self.failures[code] = self.failures.get(code, 0) + 1
            self._time(seconds)

    def count(self, str code) -> None:
        """A call that ended without a handler's answer: counted, not timed."""
        if code == "OK":
            self._ok += 1
        else:
            self.failures[code] = self.failures.get(code, 0) + 1


class CallStats:
    """Every rpc's MethodStats; transports may hold on to one per method."""

    def __init__(self) -> None:
        self.methods: dict[str, MethodStats] = {}

    def method(self, name: str) -> MethodStats:
        stats = self.methods.get(name)
        if stats is None:
            stats = self.methods[name] = MethodStats()
        return stats
