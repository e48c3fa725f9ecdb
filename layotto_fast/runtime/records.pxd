from cpython.tuple cimport PyTuple_GET_ITEM

cdef object new_state_item(str key, bytes value, object etag, int concurrency, int consistency, object metadata)
cdef object new_set_op(str key, bytes value, object etag, bint first_write, object ttl_seconds, bint strong)

# A StateEntry's fields by position: the one module allowed to know the layout.
cdef inline object entry_value(object entry):
    return <object>PyTuple_GET_ITEM(entry, 0)

cdef inline object entry_etag(object entry):
    return <object>PyTuple_GET_ITEM(entry, 1)

# A StateItem's fields by position.
cdef inline object item_key(object item):
    return <object>PyTuple_GET_ITEM(item, 0)

cdef inline object item_value(object item):
    return <object>PyTuple_GET_ITEM(item, 1)

cdef inline object item_etag(object item):
    return <object>PyTuple_GET_ITEM(item, 2)

cdef inline object item_concurrency(object item):
    return <object>PyTuple_GET_ITEM(item, 3)

cdef inline object item_consistency(object item):
    return <object>PyTuple_GET_ITEM(item, 4)

cdef inline object item_metadata(object item):
    return <object>PyTuple_GET_ITEM(item, 5)
