import pytest

from trainset.errors import InputError
from trainset.focus.backend_registry import BackendRegistry


def _registry():
    return BackendRegistry("toy", {"plain": lambda scale=1: ("plain", scale)}, lazy={"far": "x.y"})


def test_make_calls_the_factory_with_the_options():
    assert _registry().make("plain", scale=3) == ("plain", 3)


def test_names_include_the_lazily_imported_backends():
    assert _registry().names() == ["far", "plain"]


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(
        InputError, match=r"key '--backend': unknown toy backend \(expected \['far', 'plain'\]"
    ):
        _registry().make("other")


def test_option_the_factory_does_not_take_is_named():
    with pytest.raises(
        InputError,
        match=r"key '--backend-option': toy backend 'plain' rejected its options.*"
        r"found \['colour'\]",
    ):
        _registry().make("plain", colour="red")


def test_lazy_backend_whose_module_is_missing_says_so():
    with pytest.raises(
        InputError, match=r"toy backend 'far' cannot be imported.*an installed x\.y"
    ):
        _registry().make("far")
