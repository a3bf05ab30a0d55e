from __future__ import annotations

import numpy as np
import pytest

from flmi.core.errors import NonFiniteError, SchemaError
from flmi.core.params import (
    check_finite,
    check_same_schema,
    nbytes,
    schema_hash,
    weighted_mean,
)


def test_weighted_mean_matches_hand_computed_example() -> None:
    a = {"w": np.array([1.0, 2.0], dtype=np.float32)}
    b = {"w": np.array([4.0, 8.0], dtype=np.float32)}
    out = weighted_mean([("a", 1.0, a), ("b", 3.0, b)])
    np.testing.assert_allclose(out["w"], [(1 + 12) / 4, (2 + 24) / 4])
    assert out["w"].dtype == np.float32


def test_weighted_mean_keeps_each_tensor_dtype() -> None:
    p = {"f64": np.ones(2), "f32": np.ones(2, dtype=np.float32)}
    out = weighted_mean([("a", 1.0, p), ("b", 1.0, p)])
    assert out["f64"].dtype == np.float64 and out["f32"].dtype == np.float32


def test_weighted_mean_rejects_zero_total_weight() -> None:
    with pytest.raises(ValueError, match="positive"):
        weighted_mean([("a", 0.0, {"w": np.ones(1)})])


def test_schema_check_names_the_missing_tensor() -> None:
    with pytest.raises(SchemaError, match="'conv.bias' is missing"):
        check_same_schema(
            expected={"conv.weight": np.ones(2), "conv.bias": np.ones(1)},
            actual={"conv.weight": np.ones(2)},
            where="update",
        )


def test_schema_check_names_the_tensor_with_the_wrong_shape() -> None:
    with pytest.raises(SchemaError, match=r"'head.weight' has shape \(3,\), expected \(2,\)"):
        check_same_schema(
            expected={"head.weight": np.ones(2)}, actual={"head.weight": np.ones(3)}, where="u"
        )


def test_schema_check_names_the_tensor_with_the_wrong_dtype() -> None:
    with pytest.raises(SchemaError, match="'w' has dtype float32"):
        check_same_schema(
            expected={"w": np.ones(2)}, actual={"w": np.ones(2, np.float32)}, where="u"
        )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_names_the_tensor_with_nan_or_inf(bad: float) -> None:
    with pytest.raises(NonFiniteError, match="'b'"):
        check_finite({"a": np.ones(2), "b": np.array([1.0, bad])}, where="update")


def test_schema_hash_ignores_values_but_not_shapes() -> None:
    assert schema_hash({"w": np.zeros(2)}) == schema_hash({"w": np.ones(2)})
    assert schema_hash({"w": np.zeros(2)}) != schema_hash({"w": np.zeros(3)})


def test_nbytes_counts_every_tensor() -> None:
    assert nbytes({"a": np.zeros(3, np.float32), "b": np.zeros(2)}) == 12 + 16
