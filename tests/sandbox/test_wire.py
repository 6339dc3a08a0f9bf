"""The plain-data wire format: what may cross from an untrusted process."""

from __future__ import annotations

import marshal
from collections import Counter, OrderedDict, namedtuple

import pytest

from sandbox._wire import NotPlain, loads_plain, to_plain


@pytest.mark.parametrize("value", [
    None, True, 0, -7, 2**200, 1.5, float("inf"), 1 + 2j, "", "héllo", b"\x00\xff",
    (), (1, "a"), [1, [2, [3]]], {"k": [1, 2], 3: (None,)}, {1, 2}, frozenset({"x"}),
])
def test_plain_values_round_trip(value):
    assert loads_plain(marshal.dumps(value)) == value


def test_shared_references_round_trip():
    # marshal writes the second occurrence of an interned string as a back-reference.
    s = "shared-string"
    assert loads_plain(marshal.dumps([s, s, (s,)])) == [s, s, (s,)]


def test_code_objects_are_refused_before_marshal_sees_them():
    data = marshal.dumps(compile("print('pwned')", "<x>", "exec"))
    with pytest.raises(ValueError, match="not plain data"):
        loads_plain(data)


def test_code_object_nested_in_a_list_is_refused():
    data = marshal.dumps([1, compile("1", "<x>", "eval")])
    with pytest.raises(ValueError, match="not plain data"):
        loads_plain(data)


def test_truncated_and_padded_data_are_refused():
    data = marshal.dumps([1, 2, 3])
    with pytest.raises(ValueError):
        loads_plain(data[:-1])
    with pytest.raises(ValueError, match="trailing"):
        loads_plain(data + b"N")


def test_to_plain_keeps_data_and_drops_behaviour():
    class Liar(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    value = to_plain(Liar(4))
    # The copy is an exact int holding 4: it no longer equals everything.
    assert type(value) is int and value == 4 and value != 5


def test_to_plain_converts_common_subclasses():
    point = namedtuple("Point", "x y")
    assert to_plain(point(1, 2)) == (1, 2) and type(to_plain(point(1, 2))) is tuple
    assert type(to_plain(Counter("aab"))) is dict and to_plain(Counter("aab")) == {"a": 2, "b": 1}
    assert type(to_plain(OrderedDict(a=1))) is dict


def test_to_plain_refuses_objects_and_faked_classes():
    class Fake:
        __class__ = int  # isinstance(Fake(), int) is True; the real type is not int

    with pytest.raises(NotPlain):
        to_plain(Fake())
    with pytest.raises(NotPlain):
        to_plain([1, object()])
    with pytest.raises(NotPlain):
        to_plain(iter([1]))
