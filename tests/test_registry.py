import pytest

from embedseg.registry import Registry


def test_register_create_and_list():
    reg = Registry("widget")

    @reg.register("Square")
    class Square:
        def __init__(self, side=1):
            self.side = side

    assert reg.names() == ["square"]
    assert reg.get("SQUARE") is Square
    assert reg.create("square", side=3).side == 3
    assert "square" in reg and "circle" not in reg
    assert reg.name_of(Square) == "square"


def test_duplicate_name_needs_override():
    reg = Registry("widget")
    reg.register("a", int)
    with pytest.raises(ValueError, match="already registered; pass override=True"):
        reg.register("a", float)
    reg.register("a", float, override=True)
    assert reg.get("a") is float


def test_unknown_name_lists_valid_ones():
    reg = Registry("widget")
    reg.register("a", int)
    reg.register("b", float)
    with pytest.raises(ValueError, match=r"Unknown widget 'c'. Valid widgets: 'a', 'b'."):
        reg.get("c")
    with pytest.raises(TypeError, match="must be a str"):
        reg.get(3)


def test_lazy_entry_is_imported_on_first_use():
    reg = Registry("thing")
    reg.register("ordered", "collections:OrderedDict")
    import collections

    assert reg.get("ordered") is collections.OrderedDict


def test_unregister():
    reg = Registry("widget")
    reg.register("a", int)
    reg.unregister("a")
    assert reg.names() == []
    with pytest.raises(ValueError, match="Unknown widget"):
        reg.unregister("a")
