from cpython.tuple cimport PyTuple_GET_ITEM

cdef object new_state_item(str key, bytes value, object etag, int concurrency, int consistency, object metadata)

# A StateEntry's fields by position: the one module allowed to know the layout.
cdef inline object entry_value(object entry):
    return <object>PyTuple_GET_ITEM(entry, 0)

cdef inline object entry_etag(object entry):
    return <object>PyTuple_GET_ITEM(entry, 1)
