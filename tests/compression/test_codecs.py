"""The codecs: unbiased bounded quantisation, exact top-k and PowerSGD, error feedback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flmi.compression.base import RESIDUAL, Compressor
from flmi.compression.payload import Compressed, wire_bytes
from flmi.compression.powersgd import PowerSGD
from flmi.compression.quantize import Quantize, levels, pack, unpack
from flmi.compression.topk import TopK
from flmi.core.errors import SchemaError
from flmi.tensorio import load_tensors, save_tensors

_values = arrays(
    np.float32,
    st.integers(1, 12),
    elements=st.floats(-100, 100, width=32, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=20, deadline=None)
@given(x=_values, bits=st.sampled_from([8, 4, 2]), seed=st.integers(0, 2**32 - 1))
def test_stochastic_quantisation_is_unbiased_within_six_standard_errors(
    x: np.ndarray, bits: int, seed: int
) -> None:
    q = Compressor(codec=Quantize(bits=bits), error_feedback=False)
    rng = np.random.default_rng(seed)
    draws = 400
    total = np.zeros(x.shape, dtype=np.float64)
    for _ in range(draws):
        payload, _ = q.compress(update={"w": x}, state={}, rng=rng)
        total += q.decompress(payload=payload, like={"w": x})["w"]
    step = float(np.max(np.abs(x))) / levels(bits)
    # Each draw rounds to one of two levels a step apart: std <= step / 2 per draw.
    bound = 6 * step / (2 * np.sqrt(draws)) + 1e-5 * (step + 1)
    assert np.all(np.abs(total / draws - x) <= bound)


@settings(max_examples=30, deadline=None)
@given(x=_values, bits=st.sampled_from([8, 4, 2]), seed=st.integers(0, 2**32 - 1))
def test_every_quantised_value_is_within_one_step_of_its_input(
    x: np.ndarray, bits: int, seed: int
) -> None:
    q = Compressor(codec=Quantize(bits=bits), error_feedback=False)
    payload, _ = q.compress(update={"w": x}, state={}, rng=np.random.default_rng(seed))
    decoded = q.decompress(payload=payload, like={"w": x})["w"]
    step = float(np.max(np.abs(x))) / levels(bits)
    assert np.all(np.abs(decoded - x) <= step * (1 + 1e-5) + 1e-6)


def test_two_bit_quantisation_rounds_to_the_two_neighbouring_levels() -> None:
    # scale 1, one level a side: 1 -> 1 always, -0.5 -> -1 or 0, 0 -> 0 always.
    x = np.array([1.0, -0.5, 0.0], dtype=np.float32)
    q = Compressor(codec=Quantize(bits=2), error_feedback=False)
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(50):
        payload, _ = q.compress(update={"w": x}, state={}, rng=rng)
        d = q.decompress(payload=payload, like={"w": x})["w"]
        assert d[0] == 1.0 and d[2] == 0.0
        seen.add(float(d[1]))
    assert seen == {-1.0, 0.0}


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_packing_round_trips_every_code(bits: int) -> None:
    codes = np.arange(2 * levels(bits) + 1, dtype=np.uint8).repeat(3)
    assert np.array_equal(unpack(pack(codes, bits), bits, codes.size), codes)
    assert pack(codes, bits).size == -(-codes.size // (8 // bits))


@pytest.mark.parametrize(("bits", "ratio"), [(8, 3.99), (4, 7.9), (2, 15.7)])
def test_quantised_bytes_on_the_wire_shrink_by_32_over_bits(bits: int, ratio: float) -> None:
    x = np.random.default_rng(1).standard_normal(100_000).astype(np.float32)
    q = Compressor(codec=Quantize(bits=bits), error_feedback=False)
    payload, _ = q.compress(update={"w": x}, state={}, rng=np.random.default_rng(2))
    assert x.nbytes / wire_bytes(payload) >= ratio


def test_topk_keeps_the_largest_magnitudes_and_error_feedback_keeps_the_rest() -> None:
    x = np.array([0.1, -5.0, 3.0, 0.2], dtype=np.float32)
    c = Compressor(codec=TopK(fraction=0.5), error_feedback=True)
    payload, state = c.compress(update={"w": x}, state={}, rng=np.random.default_rng(0))
    assert np.array_equal(c.decompress(payload=payload, like={"w": x})["w"], [0, -5, 3, 0])
    assert np.allclose(state[RESIDUAL + "w"], [0.1, 0, 0, 0.2])
    # Next round the residual rides along: 0.2 + 0.3 now beats the rest.
    y = np.array([0.0, 0.0, 0.0, 0.3], dtype=np.float32)
    payload, state = c.compress(update={"w": y}, state=state, rng=np.random.default_rng(0))
    assert np.allclose(c.decompress(payload=payload, like={"w": y})["w"], [0.1, 0, 0, 0.5])


def _sum_sent_and_residual(c: Compressor, updates: list[dict[str, np.ndarray]]) -> tuple:
    state: dict[str, np.ndarray] = {}
    sent = {k: np.zeros(v.shape) for k, v in updates[0].items()}
    rng = np.random.default_rng(3)
    for u in updates:
        payload, state = c.compress(update=u, state=state, rng=rng)
        for k, v in c.decompress(payload=payload, like=u).items():
            sent[k] += v
    return sent, state


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rounds=st.integers(1, 6))
@pytest.mark.parametrize(
    "codec", [TopK(fraction=0.05), TopK(fraction=0.5), PowerSGD(rank=1)], ids=repr
)
def test_error_feedback_restores_the_dropped_mass(
    codec: TopK | PowerSGD, seed: int, rounds: int
) -> None:
    rng = np.random.default_rng(seed)
    updates = [
        {"w": rng.standard_normal((6, 5)).astype(np.float32), "b": rng.standard_normal(5)}
        for _ in range(rounds)
    ]
    updates = [{k: np.asarray(v, np.float32) for k, v in u.items()} for u in updates]
    sent, state = _sum_sent_and_residual(Compressor(codec=codec, error_feedback=True), updates)
    for k in ("w", "b"):
        total = sum(u[k].astype(np.float64) for u in updates)
        assert np.allclose(sent[k] + state[RESIDUAL + k], total, atol=1e-4)


def test_without_error_feedback_top_k_loses_mass() -> None:
    updates = [{"w": np.array([1.0, 0.5, 0.25, 0.1], np.float32)}] * 3
    sent, state = _sum_sent_and_residual(
        Compressor(codec=TopK(fraction=0.25), error_feedback=False), updates
    )
    assert RESIDUAL + "w" not in state
    assert np.allclose(sent["w"], [3.0, 0, 0, 0])


def test_powersgd_recovers_a_rank_one_matrix_exactly() -> None:
    u, v = np.array([1.0, 2.0, -1.0, 0.5]), np.array([3.0, -1.0, 2.0, 1.0, 0.0])
    m = np.outer(u, v).astype(np.float32)
    c = Compressor(codec=PowerSGD(rank=1), error_feedback=True)
    payload, state = c.compress(update={"w": m}, state={}, rng=np.random.default_rng(0))
    assert np.allclose(c.decompress(payload=payload, like={"w": m})["w"], m, atol=1e-5)
    assert np.allclose(state[RESIDUAL + "w"], 0, atol=1e-5)
    assert set(payload.arrays) == {"w/p", "w/q"}  # 4 + 5 values instead of 20


def test_error_feedback_state_survives_a_checkpoint(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    updates = [{"w": rng.standard_normal((8, 8)).astype(np.float32)} for _ in range(3)]
    c = Compressor(codec=PowerSGD(rank=2), error_feedback=True)
    _, state = c.compress(update=updates[0], state={}, rng=np.random.default_rng(1))
    save_tensors(path=tmp_path / "state.safetensors", tensors=state, meta={})
    restored, _ = load_tensors(path=tmp_path / "state.safetensors")
    a, _ = c.compress(update=updates[1], state=state, rng=np.random.default_rng(2))
    b, _ = c.compress(update=updates[1], state=dict(restored), rng=np.random.default_rng(2))
    assert a.meta == b.meta and sorted(a.arrays) == sorted(b.arrays)
    for key in a.arrays:
        assert np.array_equal(a.arrays[key], b.arrays[key])
    assert len(a.to_bytes()) == len(b.to_bytes())


def test_a_payload_round_trips_through_its_bytes_and_garbage_is_refused() -> None:
    payload = Compressed(
        method="topk",
        arrays={"w/index": np.array([1, 3], np.uint16), "w/value": np.ones(2, np.float32)},
        meta={"x": "1"},
    )
    back = Compressed.from_bytes(payload.to_bytes())
    assert back.method == "topk" and back.meta == {"x": "1"}
    assert np.array_equal(back.arrays["w/index"], [1, 3])
    assert back.arrays["w/index"].dtype == np.uint16
    with pytest.raises(SchemaError):
        Compressed.from_bytes(b"\x00" * 3)
    with pytest.raises(SchemaError):
        Compressed.from_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{abc}")


def test_a_payload_of_another_method_is_refused_by_the_decoder() -> None:
    x = {"w": np.ones(4, np.float32)}
    payload, _ = Compressor(codec=TopK(fraction=0.5), error_feedback=True).compress(
        update=x, state={}, rng=np.random.default_rng(0)
    )
    with pytest.raises(SchemaError, match="compression.method|\\[compression\\] method"):
        Compressor(codec=Quantize(bits=8), error_feedback=False).decompress(payload=payload, like=x)


def test_topk_indices_outside_the_tensor_are_refused() -> None:
    bad = Compressed(
        method="topk",
        arrays={"index": np.array([9], np.uint16), "value": np.ones(1, np.float32)},
        meta={"names": '["w"]', "counts": "[1]"},
    )
    with pytest.raises(SchemaError, match="outside"):
        TopK(fraction=0.5).decode(payload=bad, like={"w": np.zeros(4, np.float32)})
