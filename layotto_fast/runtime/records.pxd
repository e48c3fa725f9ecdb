cdef object new_set_op(str key, bytes value, object etag, bint first_write)
