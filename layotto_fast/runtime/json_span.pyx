# cython: language_level=3
"""Where a member of a JSON object sits in its bytes, so that its value can be copied as written.

A parsed and reprinted JSON value is not always the value sent: orjson reads an integer past
64 bits, or a decimal with more digits than a double holds, as a float (so
123456789012345678901234567890 comes back as 1.2345678901234568e+29), and Dapr keeps such
numbers exactly (it reads envelopes with UseNumber). A CloudEvent's ``data`` is therefore
copied from the bytes it arrived in, never reprinted.

The walk is over bytes a JSON parser has already accepted: it does not validate, it only
skips strings (with their escapes) and nested values to find where each top-level member is.
"""

from libc.string cimport memchr, memcmp


cdef inline bint _is_space(unsigned char c) noexcept:
    return c == 32 or c == 9 or c == 10 or c == 13


cdef inline Py_ssize_t _skip_space(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept:
    while i < n and _is_space(p[i]):
        i += 1
    return i


cdef Py_ssize_t _string_end(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept:
    """Just past the string whose opening quote is at ``i``; -1 when it never closes."""
    i += 1
    while i < n:
        if p[i] == 92:  # a backslash: the byte after it is escaped, a quote included
            i += 2
        elif p[i] == 34:
            return i + 1
        else:
            i += 1
    return -1


cdef Py_ssize_t _value_end(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept:
    """Just past the value that starts at ``i``; -1 when it never ends."""
    cdef Py_ssize_t depth = 0
    cdef unsigned char c = p[i]
    if c == 34:
        return _string_end(p, i, n)
    if c == 123 or c == 91:  # an object or an array: to its matching close
        while i < n:
            c = p[i]
            if c == 34:
                i = _string_end(p, i, n)
                if i < 0:
                    return -1
                continue
            if c == 123 or c == 91:
                depth += 1
            elif c == 125 or c == 93:
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return -1
    while i < n:  # a number, true, false or null: to the next delimiter
        c = p[i]
        if c == 44 or c == 125 or c == 93 or _is_space(c):
            return i
        i += 1
    return i


def member_span(bytes document, bytes name):
    """(start, end) of the value of top-level member ``name`` in the JSON object ``document``;
    the last one when the name repeats, as parsers keep the last. None when there is no such
    member, ``document`` is not an object, or any top-level name is written with escapes
    (which one it spells is not worked out here)."""
    cdef const unsigned char* p = <const unsigned char*>document
    cdef const unsigned char* wanted = <const unsigned char*>name
    cdef Py_ssize_t n = len(document), size = len(name)
    cdef Py_ssize_t i = _skip_space(p, 0, n), key_start, key_end, value_start, value_end
    cdef Py_ssize_t found_start = -1, found_end = -1
    if i >= n or p[i] != 123:
        return None
    i += 1
    while True:
        i = _skip_space(p, i, n)
        if i >= n or p[i] != 34:  # "}" of an empty object, or not JSON after all
            break
        key_start = i + 1
        i = _string_end(p, i, n)
        if i < 0:
            return None
        key_end = i - 1
        if memchr(p + key_start, 92, key_end - key_start) != NULL:
            return None  # a name spelled with escapes may be ``name`` too: the caller parses instead
        i = _skip_space(p, i, n)
        if i >= n or p[i] != 58:  # ":"
            return None
        value_start = _skip_space(p, i + 1, n)
        if value_start >= n:
            return None
        value_end = _value_end(p, value_start, n)
        if value_end < 0:
            return None
        if key_end - key_start == size and memcmp(p + key_start, wanted, size) == 0:
            found_start, found_end = value_start, value_end
        i = _skip_space(p, value_end, n)
        if i < n and p[i] == 44:  # ","
            i += 1
            continue
        break
    if found_start < 0:
        return None
    return found_start, found_end
