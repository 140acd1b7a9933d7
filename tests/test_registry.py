"""core.registry: names resolve to entries and their metadata, an unknown name lists the known ones, the modules
that fill a registry are imported on first lookup only, and HIER_TL_PLUGINS adds a user's own entries."""

import sys

import pytest

from hier_tl.core.errors import ConfigError
from hier_tl.core.registry import Registry


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """Write importable modules into a fresh folder on sys.path; they leave sys.modules afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(source)
        written.append(name)
        return name
    yield write
    for name in written:
        sys.modules.pop(name, None)


def test_entries_their_metadata_and_filtered_names():
    reg = Registry("widget")

    @reg.register("b", fast=True)
    def b():
        return "B"
    reg.register("a", fast=False, size=3)(len)
    reg.register("c")(max)
    assert reg.get("b") is b and reg.get("a") is len
    assert reg.meta("a") == {"fast": False, "size": 3} and reg.meta("c") == {}
    assert reg.names() == ["a", "b", "c"] and list(reg) == ["a", "b", "c"]  # sorted, whatever the order of definition
    assert reg.names(fast=True) == ["b"] and reg.names(fast=False, size=3) == ["a"] and reg.names(size=4) == []
    assert "a" in reg and "z" not in reg and None not in reg


def test_an_unknown_name_names_the_key_and_lists_what_is_known():
    reg = Registry("optimizer")
    reg.register("sgd")(object)
    reg.register("adamw")(object)
    reg.register_prefix("timm/", str)
    with pytest.raises(ConfigError) as e:
        reg.get("lbfgs", where="base.optimizer")
    assert str(e.value) == "base.optimizer: unknown optimizer 'lbfgs'; known: adamw, sgd, timm/<name>"
    with pytest.raises(ConfigError, match="^unknown optimizer 'x'"):
        reg.meta("x")


def test_a_prefix_resolves_any_name_after_it_through_its_factory():
    reg = Registry("backbone")
    reg.register_prefix("timm/", lambda rest: f"built {rest}", imagenet=True)
    assert reg.get("timm/convnext_atto") == "built convnext_atto"
    assert reg.meta("timm/convnext_atto") == {"imagenet": True}
    assert "timm/" not in reg and "tim/x" not in reg  # the prefix alone, or another prefix, is no name
    assert reg.names() == []  # names() lists registered names only


def test_the_modules_that_fill_a_registry_are_imported_on_first_lookup_only(modules):
    home = modules("reg_home_a", "from hier_tl.core.registry import Registry\n"
                   "WIDGETS = Registry('widget', 'reg_fill_a')\n")
    modules("reg_fill_a", "from reg_home_a import WIDGETS\n"
            "@WIDGETS.register('spoke', wheels=1)\ndef spoke():\n    return 1\n")
    reg = __import__(home).WIDGETS
    assert "reg_fill_a" not in sys.modules  # declaring a registry imports nothing
    assert reg.names() == ["spoke"] and reg.meta("spoke") == {"wheels": 1}
    assert "reg_fill_a" in sys.modules


def test_plugins_named_in_the_environment_add_entries(modules, monkeypatch):
    home = modules("reg_home_b", "from hier_tl.core.registry import Registry\n"
                   "WIDGETS = Registry('widget', 'reg_fill_b')\n")
    modules("reg_fill_b", "from reg_home_b import WIDGETS\nWIDGETS.register('builtin')(int)\n")
    modules("reg_plugin_b", "from reg_home_b import WIDGETS\nWIDGETS.register('mine', own=True)(float)\n")
    monkeypatch.setenv("HIER_TL_PLUGINS", " reg_plugin_b , ")  # spaces and empty items are ignored
    reg = __import__(home).WIDGETS
    assert reg.names() == ["builtin", "mine"] and reg.names(own=True) == ["mine"]


def test_a_plugin_that_cannot_be_imported_is_one_line_naming_it(monkeypatch):
    monkeypatch.setenv("HIER_TL_PLUGINS", "no_such_plugin_module")
    reg = Registry("widget", "json")
    with pytest.raises(ConfigError, match="^HIER_TL_PLUGINS: cannot import 'no_such_plugin_module' "):
        reg.names()


def test_plugins_reach_a_registry_that_names_no_modules(modules, monkeypatch):
    home = modules("reg_home_c", "from hier_tl.core.registry import Registry\nSEARCH = Registry('search algorithm')\n")
    modules("reg_plugin_c", "from reg_home_c import SEARCH\nSEARCH.register('mine')(object)\n")
    monkeypatch.setenv("HIER_TL_PLUGINS", "reg_plugin_c")
    assert "mine" in __import__(home).SEARCH
