"""The one registry kind: registration, duplicates, entry points, origins, messages."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from flmi.core.errors import ConfigError
from flmi.registry import BUILTIN_ORIGIN, Origin, PluginError, Registry, callable_check
from flmi.strategies.registry import STRATEGIES


def _registry() -> Registry[object]:
    return Registry(kind="widget", group="flmi.test_widgets_none", field="widget.name")


def test_a_registered_part_is_found_by_name_and_listed() -> None:
    reg = _registry()
    reg.register("b", 2, origin=BUILTIN_ORIGIN)
    reg.register("a", 1, origin=BUILTIN_ORIGIN)

    assert reg.lookup("a") == 1 and reg["b"] == 2
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and "a" in reg


def test_a_duplicate_name_is_refused_naming_both_origins() -> None:
    reg = _registry()
    reg.register("a", 1, origin=BUILTIN_ORIGIN)

    with pytest.raises(
        PluginError, match=r"'a' is registered twice: by flmi \(built-in\) and by pkg 2"
    ):
        reg.register("a", 2, origin=Origin(distribution="pkg", version="2"))


def test_replace_true_replaces_a_registration_and_its_origin() -> None:
    reg = _registry()
    reg.register("a", 1, origin=BUILTIN_ORIGIN)

    reg.register("a", 2, replace=True, origin=Origin(distribution="pkg", version="2"))

    assert reg["a"] == 2 and reg.origin("a").distribution == "pkg"


def test_an_unknown_name_lists_the_known_ones_and_suggests_a_plugin() -> None:
    reg = _registry()
    reg.register("a", 1, origin=BUILTIN_ORIGIN)

    with pytest.raises(ConfigError) as caught:
        reg.lookup("z")

    assert str(caught.value) == (
        "widget.name: unknown widget 'z'; choose one of 'a'; or install the plug-in package "
        "that provides it (entry-point group 'flmi.test_widgets_none')"
    )


def test_a_misspelt_name_is_answered_with_the_nearest_one_first() -> None:
    reg = _registry()
    for name in ("gear", "sprocket", "spring"):
        reg.register(name, 1, origin=BUILTIN_ORIGIN)

    message = str(reg.unknown("sprokcet"))

    assert message.startswith(
        "widget.name: unknown widget 'sprokcet'; did you mean 'sprocket'? "
        "Choose one of 'gear', 'spring', 'sprocket'; "
    )


def test_a_part_that_fails_the_kind_check_is_refused() -> None:
    reg: Registry[object] = Registry(
        kind="factory", group="flmi.none", field="f", check=callable_check("factory")
    )

    with pytest.raises(PluginError, match="factory 'x' must be callable"):
        reg.register("x", 3, origin=BUILTIN_ORIGIN)


def test_a_registration_by_a_script_records_no_distribution() -> None:
    reg = _registry()

    reg.register("mine", 1)  # this test module belongs to no installed distribution

    assert reg.origin("mine") == Origin(distribution="")


def _fake_plugin(tmp_path: Path, *, module_text: str, module: str = "fake_plugin_mod") -> Path:
    """A distribution on disk with one ``flmi.strategies`` entry point ``fake``."""
    (tmp_path / f"{module}.py").write_text(module_text)
    info = tmp_path / "fake_plugin-1.5.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 1.5\n")
    (info / "entry_points.txt").write_text(f"[flmi.strategies]\nfake = {module}:SPEC\n")
    return tmp_path


def test_an_entry_point_is_listed_without_import_and_loaded_on_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _fake_plugin(
        tmp_path,
        module_text=(
            "from flmi.strategies.registry import STRATEGIES\nSPEC = STRATEGIES['fedavg']\n"
        ),
    )
    monkeypatch.syspath_prepend(str(root))
    reg = Registry[object](kind="strategy", group="flmi.strategies", field="strategy.name")

    assert "fake" in reg.names()
    assert "fake_plugin_mod" not in __import__("sys").modules  # listed, not imported
    assert reg.lookup("fake") is STRATEGIES["fedavg"]
    origin = reg.origin("fake")
    assert (origin.distribution, origin.version) == ("fake-plugin", "1.5")
    assert origin.entry_point == "flmi.strategies: fake = fake_plugin_mod:SPEC"


def test_a_plugin_that_fails_to_import_is_named_with_its_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _fake_plugin(
        tmp_path, module_text="raise RuntimeError('broken on purpose')\n", module="broken_mod"
    )
    monkeypatch.syspath_prepend(str(root))
    reg = Registry[object](kind="strategy", group="flmi.strategies", field="strategy.name")

    with pytest.raises(
        PluginError, match=r"'fake': the plug-in fake-plugin 1\.5 .*broken on purpose"
    ):
        reg.lookup("fake")


def test_an_entry_point_clashing_with_a_registered_name_names_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _fake_plugin(tmp_path, module_text="SPEC = None\n")
    monkeypatch.syspath_prepend(str(root))
    reg = Registry[object](kind="strategy", group="flmi.strategies", field="strategy.name")
    reg.register("fake", 1, origin=BUILTIN_ORIGIN)

    with pytest.raises(PluginError, match=r"by flmi \(built-in\) and by fake-plugin 1\.5"):
        reg.names()


def test_builtin_strategies_are_registrations_of_flmi() -> None:
    assert STRATEGIES.origin("fedavg").builtin
    assert STRATEGIES.origin("fedavg").distribution == "flmi"
    assert importlib.metadata.entry_points(group="flmi.strategies") is not None
