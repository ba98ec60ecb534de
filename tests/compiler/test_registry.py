from __future__ import annotations

import pytest

import compiler
from compiler.registry import Registry


class _Good:
    def build(self) -> None: ...


def test_registry_refuses_none_duplicates_and_incomplete_items() -> None:
    reg: Registry[object] = Registry("target", required=("build",))
    reg.register("a", _Good())
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", _Good())
    reg.register("a", _Good(), replace=True)
    with pytest.raises(ValueError, match="cannot register None"):
        reg.register("b", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="lacks required method"):
        reg.register("c", object())
    with pytest.raises(KeyError, match="unknown target 'zz'; known: a"):
        reg.get("zz")


def test_default_registries_are_fresh_instances() -> None:
    a, b = compiler.default_targets(), compiler.default_targets()
    assert a is not b and a.names() == ["coreml", "onnx", "pickle", "pmml", "spark", "tfjs", "tflite"]
    assert compiler.default_frontends().names() == ["keras", "sklearn", "spark"]


def test_public_api_is_sorted_and_complete() -> None:
    assert compiler.__all__ == sorted(compiler.__all__)
    for name in compiler.__all__:
        assert hasattr(compiler, name)
