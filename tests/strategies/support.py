"""Helpers shared by the strategy tests: updates, contributions and Hypothesis generators."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.core.params import Params
from flmi.strategies.base import Contribution

HPARAMS = {"lr": 0.1, "batch_size": 8}
SHAPES = {"conv.weight": (2, 3), "head.bias": (4,)}
FINITE = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=64)


def update(
    site: str,
    params: Params,
    n: int = 1,
    *,
    kind: UpdateKind = UpdateKind.FULL,
    steps: int = 1,
) -> ClientUpdate:
    """A client update with no metrics."""
    return ClientUpdate(
        site=site, params=params, kind=kind, num_examples=n, num_steps=steps, metrics={}
    )


def vec(*values: float) -> Params:
    """One float64 tensor ``w`` holding ``values``."""
    return {"w": np.array(values, dtype=np.float64)}


def zeros() -> Params:
    """Zero float64 tensors of :data:`SHAPES`."""
    return {k: np.zeros(s) for k, s in SHAPES.items()}


@st.composite
def params_of_shapes(draw: st.DrawFn, elements: st.SearchStrategy[float] = FINITE) -> Params:
    """Float64 tensors of :data:`SHAPES`."""
    return {k: draw(arrays(np.float64, s, elements=elements)) for k, s in SHAPES.items()}


@st.composite
def site_updates(
    draw: st.DrawFn,
    min_sites: int = 1,
    max_sites: int = 6,
    kind: UpdateKind = UpdateKind.FULL,
) -> list[ClientUpdate]:
    """Updates from distinct sites (names not in sorted order), random counts and steps."""
    count = draw(st.integers(min_value=min_sites, max_value=max_sites))
    ids = draw(st.lists(st.integers(0, 99), min_size=count, max_size=count, unique=True))
    return [
        update(
            f"site_{i}",
            draw(params_of_shapes()),
            draw(st.integers(1, 10_000)),
            kind=kind,
            steps=draw(st.integers(1, 8)),
        )
        for i in ids
    ]


def as_contributions(updates: Sequence[ClientUpdate]) -> list[Contribution]:
    """Contributions in sorted site order, as a composed strategy hands them to an aggregator."""
    return [
        Contribution(
            site=u.site, weight=float(u.num_examples), num_steps=u.num_steps, tensors=u.params
        )
        for u in sorted(updates, key=lambda u: u.site)
    ]


def permuted(updates: Sequence[ClientUpdate], seed: int) -> list[ClientUpdate]:
    """``updates`` in a seeded random order."""
    order = np.random.default_rng(seed).permutation(len(updates))
    return [updates[i] for i in order]


def scaled(updates: Sequence[ClientUpdate], factor: int) -> list[ClientUpdate]:
    """``updates`` with every example count multiplied by ``factor``."""
    return [
        update(u.site, u.params, u.num_examples * factor, kind=u.kind, steps=u.num_steps)
        for u in updates
    ]


def copies_of(one: ClientUpdate, counts: Sequence[int]) -> list[ClientUpdate]:
    """Identical updates (same tensors and steps) from distinct sites with the given counts."""
    return [
        update(f"copy_{i}", one.params, n, kind=one.kind, steps=one.num_steps)
        for i, n in enumerate(counts)
    ]


def assert_same_bits(a: Params, b: Params) -> None:
    """Same names, dtypes, shapes and bytes."""
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name


def assert_close(a: Params, b: Params, *, rtol: float = 1e-12, atol: float = 1e-9) -> None:
    """Same names and allclose values."""
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=atol, err_msg=name)
