"""A conformance suite any strategy can be run through, including your own.

:func:`check_strategy` drives a strategy with inputs that Hypothesis
generates and raises :class:`AssertionError` on the first property it
breaks, naming the property. Run it from a test::

    from flmi.testing import check_strategy
    from my_project.strategies import make_my_strategy   # a top-level function

    def test_my_strategy_conforms() -> None:
        check_strategy(make_my_strategy)

Hypothesis generates rounds: global weights of one to three float32 or
float64 tensors (including 0-d ones), between ``min_sites`` and
``max_sites`` sites whose names do not sort in the order they arrive, and
updates that are all full weights or all deltas, with random example counts
and local step counts. The checks, in order:

``name``
    ``factory()`` builds a strategy with a non-empty ``name``.
``order``
    Permuting the sites changes neither ``configure``'s instructions nor the
    new weights nor the new state record, bit for bit; ``aggregate`` changes
    neither the state nor the updates it was given.
``determinism``
    Aggregating the same updates from the same state twice gives the same
    weights and state record, bit for bit (no state hidden in ``self``, no
    unseeded randomness).
``identity``
    N identical updates (with different example counts) aggregate to that
    update (full weights; ``global + delta`` for deltas). For a strategy that
    implements ``aggregate_updates``
    (:class:`flmi.strategies.base.AggregatesUpdates`, as every composed
    strategy does) this is checked *before* its server step; otherwise on the
    new global weights.
``scale``
    Multiplying every example count by the same integer factor changes the
    new weights and state record by no more than the tolerances.
``schema``
    An update with one tensor renamed or reshaped raises an exception whose
    message names that tensor in quotes (``'conv.weight'``).
``wrapped``
    Wrapped in each layer a run may put around it (``[sites.NAME]``
    overrides, the unlabeled-site weightings, sample-level DP), the strategy
    keeps its :class:`~flmi.core.strategy.Capabilities` (DP adds privacy
    reporting and secure-round accounting) and its results, bit for bit: the
    same tensors sent, the same settings apart from the layer's own, the same
    new weights and state, each site scored with the same model.
``resume``
    Four rounds straight equal two rounds, the state record saved with
    :func:`flmi.tensorio.save_tensors`, then loaded and run for two more rounds
    in a **new process**, bit for bit (weights and state record), for
    full-weight and for delta updates. Updates are a deterministic function
    of (round, weights sent, site), so both runs see the same inputs.

This module needs the ``hypothesis`` package (``pip install flmi[dev]``).
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import pickle
import tempfile
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flmi.core.keys import HParam, PrivacyKey
from flmi.core.messages import ClientUpdate, HParamValue, TrainInstruction, UpdateKind
from flmi.core.params import Params
from flmi.core.strategy import StateRecord, Strategy, capabilities_of
from flmi.privacy.strategies import META_KEY as DP_META_KEY
from flmi.privacy.strategies import PARAMS_PREFIX as DP_PARAMS_PREFIX
from flmi.privacy.strategies import SampleDP
from flmi.strategies.base import AggregatesUpdates
from flmi.strategies.per_site import PerSiteSettings
from flmi.strategies.unlabeled_added import UnlabeledAdded
from flmi.strategies.unlabeled_weight import UnlabeledWeight
from flmi.tensorio import load_tensors, save_tensors

StrategyFactory = Callable[[], Strategy[Any]]

_NAMES = ("conv.weight", "conv.bias", "head.weight")
_DTYPES: tuple[np.dtype[Any], ...] = (np.dtype(np.float32), np.dtype(np.float64))
_VALUES = st.floats(min_value=-10.0, max_value=10.0, allow_nan=False, width=32)


@dataclass(frozen=True)
class _Case:
    """One generated round: the global weights and the sites' updates."""

    params: Params
    updates: tuple[ClientUpdate, ...]


@st.composite
def _cases(draw: st.DrawFn, min_sites: int, max_sites: int) -> _Case:
    count = draw(st.integers(min_value=1, max_value=len(_NAMES)))
    schema: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] = {
        name: (
            tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))),
            draw(st.sampled_from(_DTYPES)),
        )
        for name in _NAMES[:count]
    }

    def tensors() -> Params:
        return {
            name: draw(arrays(dtype, shape, elements=_VALUES))
            for name, (shape, dtype) in schema.items()
        }

    n = draw(st.integers(min_value=min_sites, max_value=max_sites))
    # Numbers in names make their sorted order differ from the generated order.
    ids = draw(st.lists(st.integers(0, 99), min_size=n, max_size=n, unique=True))
    kind = draw(st.sampled_from([UpdateKind.FULL, UpdateKind.DELTA]))
    updates = tuple(
        ClientUpdate(
            site=f"site-{i}",
            params=tensors(),
            kind=kind,
            num_examples=draw(st.integers(1, 10_000)),
            num_steps=draw(st.integers(1, 5)),
            metrics={},
        )
        for i in ids
    )
    return _Case(params=tensors(), updates=updates)


def _fail(check: str, message: str) -> AssertionError:
    return AssertionError(f"check_strategy[{check}]: {message}")


def _call(check: str, what: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; an exception it raises becomes an AssertionError naming the check."""
    try:
        return fn()
    except AssertionError:
        raise
    except Exception as exc:
        raise _fail(check, f"{what} raised {type(exc).__name__}: {exc}") from exc


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _assert_same_params(check: str, what: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> None:
    if sorted(a) != sorted(b):
        raise _fail(check, f"{what}: tensor names differ: {sorted(a)} vs {sorted(b)}")
    for name in sorted(a):
        if not _same_bits(a[name], b[name]):
            raise _fail(check, f"{what}: tensor '{name}' differs bit for bit")


def _assert_same_record(check: str, what: str, a: StateRecord, b: StateRecord) -> None:
    _assert_same_params(check, f"{what} (state record tensors)", a.tensors, b.tensors)
    meta_a = json.loads(json.dumps(dict(a.meta), sort_keys=True))
    meta_b = json.loads(json.dumps(dict(b.meta), sort_keys=True))
    if meta_a != meta_b:
        raise _fail(check, f"{what}: state record meta differs: {meta_a} vs {meta_b}")


def _assert_close(
    check: str,
    what: str,
    got: Mapping[str, Any],
    expected: Mapping[str, Any],
    *,
    rtol: float,
    atol: float,
    scale: float,
) -> None:
    if sorted(got) != sorted(expected):
        raise _fail(check, f"{what}: tensor names {sorted(got)}, expected {sorted(expected)}")
    for name in sorted(expected):
        g, e = np.asarray(got[name]), np.asarray(expected[name])
        if g.shape != e.shape or g.dtype != e.dtype:
            raise _fail(
                check,
                f"{what}: tensor '{name}' is {g.dtype}{list(g.shape)}, "
                f"expected {e.dtype}{list(e.shape)}",
            )
        floor = 64.0 * float(np.finfo(e.dtype).eps)
        r, a = max(rtol, floor), max(atol, floor) * max(1.0, scale)
        if not np.allclose(g, e, rtol=r, atol=a):
            worst = float(np.max(np.abs(g.astype(np.float64) - e.astype(np.float64))))
            raise _fail(
                check, f"{what}: tensor '{name}' is off by up to {worst:.3g} (rtol {r}, atol {a})"
            )


def _magnitude(*groups: Mapping[str, np.ndarray]) -> float:
    return max(
        (float(np.max(np.abs(v))) for g in groups for v in g.values() if v.size), default=1.0
    )


def _frozen_copy(record: StateRecord) -> StateRecord:
    """A deep copy, so later in-place changes to the strategy's arrays cannot reach it."""
    tensors = {k: np.array(v, copy=True) for k, v in record.tensors.items()}
    return StateRecord(tensors=tensors, meta=json.loads(json.dumps(dict(record.meta))))


def _check_name(factory: StrategyFactory) -> None:
    strategy: Strategy[Any] = _call("name", "the factory", factory)
    name = _call("name", "name", lambda: strategy.name)
    if not isinstance(name, str) or not name:
        raise _fail("name", f"strategy.name must be a non-empty string, got {name!r}")


def _check_order(factory: StrategyFactory, case: _Case, order: Sequence[int]) -> None:
    strategy = factory()
    state = _call("order", "init", lambda: strategy.init(case.params))
    before = _frozen_copy(
        _call("order", "state_to_record", lambda: strategy.state_to_record(state))
    )
    sites = [u.site for u in case.updates]
    shuffled = [case.updates[i] for i in order]
    sent_a = _call("order", "configure", lambda: strategy.configure(1, state, sites))
    sent_b = _call("order", "configure", lambda: strategy.configure(1, state, sorted(sites)[::-1]))
    if sorted(sent_a) != sorted(sent_b):
        raise _fail("order", "configure addressed different sites when given them in another order")
    for site in sorted(sent_a):
        _assert_same_params(
            "order", f"configure's params for '{site}'", sent_a[site].params, sent_b[site].params
        )
    copies = [{k: np.array(v, copy=True) for k, v in u.params.items()} for u in case.updates]
    state_a, params_a = _call(
        "order", "aggregate", lambda: strategy.aggregate(1, state, case.updates)
    )
    for update, copy in zip(case.updates, copies, strict=True):
        _assert_same_params(
            "order", f"aggregate changed the update from '{update.site}'", update.params, copy
        )
    after = _call("order", "state_to_record", lambda: strategy.state_to_record(state))
    _assert_same_record("order", "aggregate changed the state it was given", before, after)
    state_c, params_c = _call(
        "determinism", "aggregate", lambda: strategy.aggregate(1, state, case.updates)
    )
    repeat = (
        "aggregating the same updates from the same state twice gave different results "
        "(keep all state in the state object, never in self; seed every random generator)"
    )
    _assert_same_params("determinism", repeat, params_a, params_c)
    _assert_same_record(
        "determinism",
        repeat,
        strategy.state_to_record(state_a),
        strategy.state_to_record(state_c),
    )
    state_b, params_b = _call("order", "aggregate", lambda: strategy.aggregate(1, state, shuffled))
    _assert_same_params(
        "order", "the new global weights depend on the order of updates", params_a, params_b
    )
    _assert_same_record(
        "order",
        "the new state depends on the order of updates",
        strategy.state_to_record(state_a),
        strategy.state_to_record(state_b),
    )


def _check_identity(factory: StrategyFactory, case: _Case, *, rtol: float, atol: float) -> None:
    strategy = factory()
    state = _call("identity", "init", lambda: strategy.init(case.params))
    one = case.updates[0]
    same = [
        ClientUpdate(
            site=u.site,
            params={k: np.array(v, copy=True) for k, v in one.params.items()},
            kind=one.kind,
            num_examples=u.num_examples,
            num_steps=one.num_steps,
            metrics={},
        )
        for u in case.updates
    ]
    if one.kind is UpdateKind.FULL:
        expected = dict(one.params)
    else:
        expected = {
            k: (case.params[k].astype(np.float64) + one.params[k]).astype(case.params[k].dtype)
            for k in case.params
        }
    if isinstance(strategy, AggregatesUpdates):
        got = _call(
            "identity", "aggregate_updates", lambda: strategy.aggregate_updates(1, state, same)
        )
        what = f"aggregate_updates of {len(same)} identical {one.kind} updates"
    else:
        _, got = _call("identity", "aggregate", lambda: strategy.aggregate(1, state, same))
        what = (
            f"aggregate of {len(same)} identical {one.kind} updates (a strategy whose server "
            "step moves the model elsewhere should implement aggregate_updates, see "
            "flmi.strategies.base.AggregatesUpdates)"
        )
    scale = _magnitude(case.params, one.params)
    _assert_close("identity", what, got, expected, rtol=rtol, atol=atol, scale=scale)


def _check_scale(
    factory: StrategyFactory, case: _Case, factor: int, *, rtol: float, atol: float
) -> None:
    strategy = factory()
    state = _call("scale", "init", lambda: strategy.init(case.params))
    scaled = [
        ClientUpdate(
            site=u.site,
            params=u.params,
            kind=u.kind,
            num_examples=u.num_examples * factor,
            num_steps=u.num_steps,
            metrics={},
        )
        for u in case.updates
    ]
    state_a, params_a = _call(
        "scale", "aggregate", lambda: strategy.aggregate(1, state, case.updates)
    )
    state_b, params_b = _call("scale", "aggregate", lambda: strategy.aggregate(1, state, scaled))
    scale = _magnitude(case.params, *(u.params for u in case.updates))
    what = f"example counts times {factor}"
    _assert_close(
        "scale", f"{what}: new weights", params_b, params_a, rtol=rtol, atol=atol, scale=scale
    )
    record_a, record_b = strategy.state_to_record(state_a), strategy.state_to_record(state_b)
    _assert_close(
        "scale",
        f"{what}: state record",
        record_b.tensors,
        record_a.tensors,
        rtol=rtol,
        atol=atol,
        scale=max(scale, _magnitude(record_a.tensors)),
    )


def _check_schema(factory: StrategyFactory, case: _Case, victim: int, rename: bool) -> None:
    strategy = factory()
    state = _call("schema", "init", lambda: strategy.init(case.params))
    target = case.updates[victim]
    name = sorted(target.params)[0]
    params = dict(target.params)
    if rename:
        params[f"{name}.renamed"] = params.pop(name)
        accepted: tuple[str, ...] = (name, f"{name}.renamed")
        change = f"tensor '{name}' renamed"
    else:
        params[name] = np.zeros((*params[name].shape, 2), dtype=params[name].dtype)
        accepted = (name,)
        change = f"tensor '{name}' reshaped to {params[name].shape}"
    broken = ClientUpdate(
        site=target.site,
        params=params,
        kind=target.kind,
        num_examples=target.num_examples,
        num_steps=target.num_steps,
        metrics={},
    )
    updates = [broken if i == victim else u for i, u in enumerate(case.updates)]
    try:
        strategy.aggregate(1, state, updates)
    except AssertionError:
        raise
    except Exception as exc:
        if not any(f"'{n}'" in str(exc) for n in accepted):
            raise _fail(
                "schema",
                f"an update with {change} raised {type(exc).__name__}({str(exc)!r}), "
                "which does not name the tensor in quotes",
            ) from exc
        return
    raise _fail("schema", f"aggregate accepted an update from '{target.site}' with {change}")


# -- wrapped by flmi's own layers ------------------------------------------------------------

#: The setting the per-site layer overrides for one site, and its value there.
_OVERRIDE: dict[str, HParamValue] = {HParam.LR.value: 1e-3}
#: What a DP-SGD site reports with each update (the DP layer charges it to the site's ledger).
_DP_REPORT: dict[str, float] = {
    PrivacyKey.NOISE_MULTIPLIER: 1.0,
    PrivacyKey.SAMPLE_RATE: 0.1,
    PrivacyKey.STEPS: 2.0,
}
#: The instruction settings the DP layer adds.
_DP_HPARAMS = frozenset(h.value for h in HParam if h.value.startswith("dp"))


@dataclass(frozen=True)
class _Layer:
    """One of the wrappers a run puts around a strategy, and what it changes on purpose."""

    name: str
    wrap: Callable[[Strategy[Any], str], Strategy[Any]]
    adds: frozenset[str] = frozenset()
    own_hparams: frozenset[str] = frozenset()


def _sample_dp(inner: Strategy[Any], _site: str) -> Strategy[Any]:
    return SampleDP(
        inner=inner,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        delta=1e-5,
        accountant="rdp",
        target_epsilon=None,
        rounds=2,
    )


_LAYERS = (
    _Layer(
        name="per-site settings",
        wrap=lambda inner, site: PerSiteSettings(inner=inner, overrides={site: _OVERRIDE}),
        own_hparams=frozenset(_OVERRIDE),
    ),
    _Layer(
        name="unlabeled weight", wrap=lambda inner, _s: UnlabeledWeight(inner=inner, weight=0.5)
    ),
    _Layer(name="unlabeled added", wrap=lambda inner, _s: UnlabeledAdded(inner=inner, weight=0.5)),
    _Layer(
        name="sample-level DP",
        wrap=_sample_dp,
        adds=frozenset({"privacy_record", "note_secure_round"}),
        own_hparams=_DP_HPARAMS,
    ),
)


def _inner_record(record: StateRecord) -> StateRecord:
    """A record without what a DP layer adds to it (its ledgers and its copy of the weights)."""
    return StateRecord(
        tensors={k: v for k, v in record.tensors.items() if not k.startswith(DP_PARAMS_PREFIX)},
        meta={k: v for k, v in record.meta.items() if k != DP_META_KEY},
    )


#: Members that offer a capability, by the name of the :class:`Capabilities` field.
_CAPABILITY_MEMBERS = ("personalised", "site_params", "evaluation_hparams", "privacy_record")


def _check_declared(strategy: Strategy[Any]) -> None:
    """A member that offers a capability is declared in ``capabilities``, or nothing reads it."""
    declared = _call("wrapped", "capabilities", lambda: capabilities_of(strategy)).declared
    for member in _CAPABILITY_MEMBERS:
        if hasattr(type(strategy), member) and member not in declared:
            raise _fail(
                "wrapped",
                f"the strategy has '{member}' but does not declare it: the federation reads "
                "capabilities only from a `capabilities` property returning "
                f"flmi.core.strategy.Capabilities({member}=...)",
            )


def _check_capabilities(layer: _Layer, bare: Strategy[Any], wrapped: Strategy[Any]) -> None:
    _check_declared(bare)
    mine = capabilities_of(bare)
    theirs = _call("wrapped", f"capabilities under {layer.name}", lambda: capabilities_of(wrapped))
    what = f"under {layer.name}, the wrapped strategy's capabilities"
    if theirs.declared != mine.declared | layer.adds:
        raise _fail(
            "wrapped",
            f"{what} are {sorted(theirs.declared)}, expected {sorted(mine.declared | layer.adds)} "
            "(declare them with a `capabilities` property returning "
            "flmi.core.strategy.Capabilities)",
        )
    if dict(theirs.evaluation_hparams) != dict(mine.evaluation_hparams):
        raise _fail("wrapped", f"{what}: the evaluation settings differ")


def _check_hparams(
    layer: _Layer, site: str, got: Mapping[str, Any], bare: Mapping[str, Any]
) -> None:
    own = layer.own_hparams
    expected = {k: v for k, v in bare.items() if k not in own}
    kept = {k: v for k, v in got.items() if k not in own}
    if kept != expected:
        raise _fail(
            "wrapped",
            f"under {layer.name}, configure's settings for '{site}': {kept}, expected {expected}",
        )


def _check_configure(
    layer: _Layer, sent: Mapping[str, TrainInstruction], bare: Mapping[str, TrainInstruction]
) -> None:
    if sorted(sent) != sorted(bare):
        raise _fail("wrapped", f"under {layer.name}, configure addressed other sites")
    for site in sorted(bare):
        where = f"under {layer.name}, configure's"
        _assert_same_params(
            "wrapped", f"{where} params for '{site}'", sent[site].params, bare[site].params
        )
        _assert_same_params(
            "wrapped", f"{where} extras for '{site}'", sent[site].extras, bare[site].extras
        )
        _check_hparams(layer, site, sent[site].hparams, bare[site].hparams)


def _check_wrapped(factory: StrategyFactory, case: _Case, layer: _Layer) -> None:
    """The strategy under one of flmi's layers: the same capabilities and the same results."""
    sites = sorted(u.site for u in case.updates)
    bare = factory()
    wrapped = _call("wrapped", f"wrapping in {layer.name}", lambda: layer.wrap(factory(), sites[0]))
    _check_capabilities(layer, bare, wrapped)
    bare_state = _call("wrapped", "init", lambda: bare.init(case.params))
    state = _call("wrapped", f"init under {layer.name}", lambda: wrapped.init(case.params))
    _check_configure(
        layer,
        _call(
            "wrapped", f"configure under {layer.name}", lambda: wrapped.configure(1, state, sites)
        ),
        _call("wrapped", "configure", lambda: bare.configure(1, bare_state, sites)),
    )
    updates = [replace(u, metrics={**u.metrics, **_DP_REPORT}) for u in case.updates]
    bare_state, params = _call(
        "wrapped", "aggregate", lambda: bare.aggregate(1, bare_state, updates)
    )
    state, got = _call(
        "wrapped", f"aggregate under {layer.name}", lambda: wrapped.aggregate(1, state, updates)
    )
    what = f"under {layer.name}"
    _assert_same_params("wrapped", f"{what}, the new global weights", got, params)
    _assert_same_record(
        "wrapped",
        f"{what}, the new state",
        _inner_record(wrapped.state_to_record(state)),
        bare.state_to_record(bare_state),
    )
    mine, theirs = capabilities_of(bare).site_params, capabilities_of(wrapped).site_params
    if mine is None or theirs is None:
        return  # the capabilities check found both without per-site models
    for site in sites:
        _assert_same_params(
            "wrapped",
            f"{what}, the model '{site}' is scored with",
            _call(
                "wrapped", f"site_params under {layer.name}", functools.partial(theirs, state, site)
            ),
            _call("wrapped", "site_params", functools.partial(mine, bare_state, site)),
        )


# -- resume in a new process ------------------------------------------------------------------


@dataclass(frozen=True)
class _ResumeSpec:
    """The fixed scenario of the resume check (picklable, sent to the new process)."""

    sites: tuple[str, ...]
    min_sites: int
    rounds_before: int
    rounds_after: int
    seed: int


def _resume_initial(spec: _ResumeSpec) -> Params:
    rng = np.random.default_rng([spec.seed, 0])
    return {
        "block.bias": rng.normal(size=3).astype(np.float64),
        "block.weight": rng.normal(size=(3, 2)).astype(np.float32),
    }


def _resume_update(
    spec: _ResumeSpec, kind: UpdateKind, rnd: int, site: str, sent: Params
) -> ClientUpdate:
    """A deterministic function of (round, the weights the site was sent, site)."""
    index = spec.sites.index(site)
    target = np.random.default_rng([spec.seed, 1, index])
    noise = np.random.default_rng([spec.seed, 2, index, rnd])
    tensors: Params = {}
    for name in sorted(sent):
        x = np.asarray(sent[name], dtype=np.float64)
        y = x + 0.3 * (target.normal(size=x.shape) - x) + 0.05 * noise.normal(size=x.shape)
        tensors[name] = (y if kind is UpdateKind.FULL else y - x).astype(sent[name].dtype)
    return ClientUpdate(
        site=site,
        params=tensors,
        kind=kind,
        num_examples=5 + 3 * index,
        num_steps=1 + index % 3,
        metrics={},
    )


def _resume_rounds(
    strategy: Strategy[Any], state: Any, spec: _ResumeSpec, kind: UpdateKind, rounds: range
) -> tuple[Any, Params]:
    params: Params = {}
    for rnd in rounds:
        skip = spec.sites[rnd % len(spec.sites)] if len(spec.sites) > spec.min_sites else None
        sampled = [s for s in spec.sites if s != skip]
        sent = strategy.configure(rnd, state, sampled)
        updates = [_resume_update(spec, kind, rnd, s, sent[s].params) for s in sorted(sent)]
        state, params = strategy.aggregate(rnd, state, updates)
    return state, params


def _run_in_process(
    factory: StrategyFactory, spec: _ResumeSpec, kind: UpdateKind, rounds: range
) -> tuple[Params, StateRecord]:
    """A fresh strategy from the initial weights through ``rounds``: weights and state record."""
    try:
        strategy = factory()
        state, params = _resume_rounds(
            strategy, strategy.init(_resume_initial(spec)), spec, kind, rounds
        )
        return params, strategy.state_to_record(state)
    except AssertionError:
        raise
    except Exception as exc:
        raise _fail(
            "resume", f"{len(rounds)} rounds of {kind} updates raised {type(exc).__name__}: {exc}"
        ) from exc


def _resume_child(factory: StrategyFactory, folder: str, spec: _ResumeSpec) -> None:
    """Run in a new process: load each saved state, run the remaining rounds, save the results."""
    root = Path(folder)
    try:
        strategy = factory()
        first = spec.rounds_before + 1
        for kind in UpdateKind:
            tensors, meta = load_tensors(path=root / f"{kind}-state.safetensors")
            state = strategy.state_from_record(StateRecord(tensors=tensors, meta=meta))
            rounds = range(first, first + spec.rounds_after)
            state, params = _resume_rounds(strategy, state, spec, kind, rounds)
            save_tensors(path=root / f"{kind}-final.safetensors", tensors=params, meta={})
            record = strategy.state_to_record(state)
            save_tensors(
                path=root / f"{kind}-final-state.safetensors",
                tensors=record.tensors,
                meta=record.meta,
            )
    except BaseException:
        (root / "error.txt").write_text(traceback.format_exc())
        raise SystemExit(1) from None


def _check_resume(factory: StrategyFactory, *, min_sites: int, seed: int, timeout_s: float) -> None:
    try:
        pickle.dumps(factory)
    except Exception as exc:
        raise _fail(
            "resume",
            f"the factory cannot be sent to a new process ({type(exc).__name__}: {exc}); pass "
            "a top-level function or class of an importable module (or a functools.partial "
            "of one), not a lambda or a nested function",
        ) from exc
    n = max(min_sites, 3) + 1
    spec = _ResumeSpec(
        sites=tuple(f"site-{i}" for i in range(n)),
        min_sites=min_sites,
        rounds_before=2,
        rounds_after=2,
        seed=seed,
    )
    total = range(1, spec.rounds_before + spec.rounds_after + 1)
    straight: dict[UpdateKind, tuple[Params, StateRecord]] = {}
    with tempfile.TemporaryDirectory(prefix="flmi-check-") as folder:
        root = Path(folder)
        for kind in UpdateKind:
            straight[kind] = _run_in_process(factory, spec, kind, total)
            _, record = _run_in_process(factory, spec, kind, range(1, spec.rounds_before + 1))
            save_tensors(
                path=root / f"{kind}-state.safetensors", tensors=record.tensors, meta=record.meta
            )
        process = multiprocessing.get_context("spawn").Process(
            target=_resume_child, args=(factory, folder, spec)
        )
        process.start()
        process.join(timeout_s)
        if process.is_alive():
            process.terminate()
            process.join()
            raise _fail("resume", f"the new process did not finish within {timeout_s} s")
        error = root / "error.txt"
        if process.exitcode != 0:
            detail = error.read_text() if error.is_file() else f"exit code {process.exitcode}"
            raise _fail("resume", f"resuming in a new process failed:\n{detail}")
        for kind in UpdateKind:
            params, record = straight[kind]
            resumed, _ = load_tensors(path=root / f"{kind}-final.safetensors")
            what = (
                f"{kind} updates: {spec.rounds_before} rounds, save, {spec.rounds_after} more "
                f"in a new process differs from {len(total)} rounds straight"
            )
            _assert_same_params("resume", what, resumed, params)
            tensors, meta = load_tensors(path=root / f"{kind}-final-state.safetensors")
            _assert_same_record("resume", what, StateRecord(tensors=tensors, meta=meta), record)


def _settings(max_examples: int) -> settings:
    """Hypothesis settings of every property: derandomised, no deadline, no database."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
    )


def _properties(
    factory: StrategyFactory, cases: st.SearchStrategy[_Case], *, rtol: float, atol: float
) -> list[Callable[[], None]]:
    """The generated checks, in the order they run (see the module docstring)."""

    @given(case=cases, data=st.data())
    def order(case: _Case, data: st.DataObject) -> None:
        permutation = data.draw(st.permutations(range(len(case.updates))), label="permutation")
        _check_order(factory, case, permutation)

    @given(case=cases)
    def identity(case: _Case) -> None:
        _check_identity(factory, case, rtol=rtol, atol=atol)

    @given(case=cases, factor=st.integers(2, 1000))
    def scale(case: _Case, factor: int) -> None:
        _check_scale(factory, case, factor, rtol=rtol, atol=atol)

    @given(case=cases, data=st.data(), rename=st.booleans())
    def schema(case: _Case, data: st.DataObject, rename: bool) -> None:
        victim = data.draw(st.integers(0, len(case.updates) - 1), label="victim")
        _check_schema(factory, case, victim, rename)

    @given(case=cases, layer=st.sampled_from(_LAYERS))
    def wrapped(case: _Case, layer: _Layer) -> None:
        _check_wrapped(factory, case, layer)

    return [order, identity, scale, schema, wrapped]


def check_strategy(
    factory: StrategyFactory,
    *,
    min_sites: int = 1,
    max_sites: int | None = None,
    max_examples: int = 25,
    rtol: float = 1e-9,
    atol: float = 1e-9,
    check_resume: bool = True,
    resume_timeout_s: float = 120.0,
    seed: int = 0,
) -> None:
    """Run a strategy through the conformance suite; raise AssertionError on the first failure.

    The checks (``name``, ``order``, ``determinism``, ``identity``, ``scale``,
    ``schema``, ``wrapped``, ``resume``) and the rounds Hypothesis generates
    for them are described in :mod:`flmi.testing`.

    Parameters
    ----------
    factory
        Builds a fresh strategy; called once per generated example. The resume
        check sends it to a process started with the ``spawn`` method, which
        pickles it *by reference*: it must be a top-level function or class of
        a module the new process can import (or a :func:`functools.partial`
        of one with picklable arguments), never a lambda, a nested function or
        something defined in ``__main__`` of an interactive session. Call
        ``check_strategy`` from a test, or from a script under
        ``if __name__ == "__main__":``, since ``spawn`` re-imports the main module.
    min_sites
        Fewest updates per round the strategy accepts (Krum with ``f``
        Byzantine sites needs ``2 f + 3``).
    max_sites
        Most updates per round (default ``min_sites + 4``).
    max_examples
        Hypothesis examples per property.
    rtol, atol
        Tolerances of the ``identity`` and ``scale`` checks; never below 64
        machine epsilons of each tensor's dtype, and ``atol`` scales with the
        largest magnitude involved.
    check_resume
        Run the resume check (it starts one process).
    resume_timeout_s
        How long the new process may take.
    seed
        Seed of the resume scenario. Hypothesis runs derandomised, so the
        suite is reproducible.

    Raises
    ------
    AssertionError
        ``check_strategy[<check>]: <what broke>``, on the first failure.
    """
    upper = max_sites if max_sites is not None else min_sites + 4
    if not 1 <= min_sites <= upper:
        raise ValueError(f"need 1 <= min_sites <= max_sites, got {min_sites} and {upper}")
    _check_name(factory)
    config = _settings(max_examples)
    for prop in _properties(factory, _cases(min_sites, upper), rtol=rtol, atol=atol):
        config(prop)()
    if check_resume:
        _check_resume(factory, min_sites=min_sites, seed=seed, timeout_s=resume_timeout_s)
