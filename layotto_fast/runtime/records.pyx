# cython: language_level=3
"""The state block's per-call records, built in C: the one factory of each record.

``StateEntry``, ``StateItem`` and ``SetOp`` are NamedTuples. Built from Python, each
costs a call through ``tuple.__new__`` (argument parsing and an intermediate tuple),
which measured as several µs of p50 per write at one call in flight, where caches
are cold. Here the record is allocated through its type and its fields are set in
place, as CPython's own tuple subclass constructor does, without the detour.
"""

from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_SET_ITEM

from layotto_fast.runtime.state import SetOp, StateEntry, StateItem

cdef extern from *:
    """
    static PyObject *records_alloc(PyObject *type, Py_ssize_t size) {
        return ((PyTypeObject *)type)->tp_alloc((PyTypeObject *)type, size);
    }
    """
    # An empty instance of a tuple subclass, its fields to be set before anyone sees it.
    object records_alloc(object type, Py_ssize_t size)


cdef inline void _set(object record, Py_ssize_t index, object field) noexcept:
    Py_INCREF(field)  # PyTuple_SET_ITEM steals a reference
    PyTuple_SET_ITEM(record, index, field)


cdef object new_state_item(str key, bytes value, object etag, int concurrency, int consistency, object metadata):
    cdef object item = records_alloc(StateItem, 6)
    _set(item, 0, key)
    _set(item, 1, value)
    _set(item, 2, etag)
    _set(item, 3, concurrency)
    _set(item, 4, consistency)
    _set(item, 5, metadata)
    return item


def state_item(str key, bytes value, object etag, int concurrency, int consistency, object metadata) -> object:
    """``StateItem(...)``, built in C."""
    return new_state_item(key, value, etag, concurrency, consistency, metadata)


cdef object new_set_op(str key, bytes value, object etag, bint first_write, object ttl_seconds, bint strong):
    cdef object op = records_alloc(SetOp, 6)
    _set(op, 0, key)
    _set(op, 1, value)
    _set(op, 2, etag)
    _set(op, 3, True if first_write else False)
    _set(op, 4, ttl_seconds)
    _set(op, 5, True if strong else False)
    return op


def state_entry(bytes value, str etag, object expires_at) -> object:
    """``StateEntry(value, etag, expires_at)``, built in C."""
    cdef object entry = records_alloc(StateEntry, 3)
    _set(entry, 0, value)
    _set(entry, 1, etag)
    _set(entry, 2, expires_at)
    return entry
