"""Plain-data wire format between the sandbox's processes and the host.

Used on both sides: inside the sandbox as the module ``_rlkit_wire`` (shipped by
`sandbox.judge`), on the host as ``sandbox._wire``. Standard library only.

Messages are marshal bytes, 4-byte length-prefixed on pipes. Bytes from an
untrusted process are only loaded through `loads_plain`, which refuses anything
but plain values (None, bool, int, float, complex, str, bytes, tuple, list, dict,
set, frozenset) before marshal sees them.
"""

import marshal
import os

MAX_MESSAGE = 64 << 20
NONCE_BYTES = 16

_FLAG_REF = 0x80
_FIXED = {ord("N"): 0, ord("F"): 0, ord("T"): 0, ord("i"): 4, ord("g"): 8, ord("y"): 16, ord("r"): 4}
_SIZED4 = frozenset(map(ord, "stuaA"))  # 4-byte length, then that many bytes
_SIZED1 = frozenset(map(ord, "zZ"))  # 1-byte length
_SEQ4 = frozenset(map(ord, "([<>"))  # 4-byte count, then items
_MAX_DEPTH = 400


def _skip(data, pos, depth):
    """Position after the marshal object at ``pos``; ValueError unless it is plain."""
    if depth > _MAX_DEPTH:
        raise ValueError("nested too deeply")
    code = data[pos] & ~_FLAG_REF
    pos += 1
    if code in _FIXED:
        return pos + _FIXED[code]
    if code in _SIZED4:
        return pos + 4 + int.from_bytes(data[pos:pos + 4], "little")
    if code in _SIZED1:
        return pos + 1 + data[pos]
    if code == ord("l"):
        return pos + 4 + 2 * abs(int.from_bytes(data[pos:pos + 4], "little", signed=True))
    if code == ord("f"):
        return pos + 1 + data[pos]
    if code == ord("x"):
        pos += 1 + data[pos]
        return pos + 1 + data[pos]
    if code in _SEQ4 or code == ord(")"):
        if code == ord(")"):
            count, pos = data[pos], pos + 1
        else:
            count, pos = int.from_bytes(data[pos:pos + 4], "little"), pos + 4
        for _ in range(count):
            pos = _skip(data, pos, depth + 1)
        return pos
    if code == ord("{"):
        while data[pos] != ord("0"):
            pos = _skip(data, _skip(data, pos, depth + 1), depth + 1)
        return pos + 1
    raise ValueError(f"marshal type {chr(code)!r} is not plain data")


def loads_plain(data):
    """marshal.loads, after checking that ``data`` holds plain values only.

    Code objects (and every other non-data type) are refused before the bytes
    reach marshal, whose docs warn against untrusted input.
    """
    if len(data) > MAX_MESSAGE:
        raise ValueError("message too large")
    try:
        end = _skip(data, 0, 0)
    except IndexError:
        raise ValueError("truncated marshal data") from None
    if end != len(data):
        raise ValueError("trailing bytes after marshal data")
    return marshal.loads(data)


class NotPlain(Exception):
    pass


_SCALARS = (type(None), bool, int, float, complex, str, bytes)


def to_plain(value, depth=0):
    """A copy of ``value`` made of exact built-in types, or NotPlain.

    Subclasses of built-in types (Counter, namedtuple, an int with a lying
    __eq__) are copied through the base type's own C methods, so only their data
    survives, never their behaviour.
    """
    if depth > _MAX_DEPTH:
        raise NotPlain("nested too deeply")
    t = type(value)
    if t in _SCALARS:
        return value
    if t is list or t is tuple or t is set or t is frozenset:
        return t(to_plain(v, depth + 1) for v in value)
    if t is dict:
        return {to_plain(k, depth + 1): to_plain(v, depth + 1) for k, v in dict.items(value)}
    for base, copy in _BASE_COPIES:
        # issubclass of the real type: isinstance would believe a faked __class__.
        if issubclass(t, base):
            return to_plain(copy(value), depth + 1)
    raise NotPlain(t.__name__)


_BASE_COPIES = (
    (int, int.__int__), (float, float.__float__), (complex, complex.__complex__), (str, str.__str__),
    (bytes, bytes.__bytes__), (list, list.copy), (tuple, lambda v: tuple.__getitem__(v, slice(None))),
    (dict, dict.copy), (set, set.copy), (frozenset, frozenset.copy),
)


def send(fd, obj):
    payload = marshal.dumps(obj)
    write_all(fd, len(payload).to_bytes(4, "little") + payload)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_exact(fd, n):
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("pipe closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def recv_bytes(fd):
    n = int.from_bytes(read_exact(fd, 4), "little")
    if n > MAX_MESSAGE:
        raise ValueError("message too large")
    return read_exact(fd, n)
