"""Federated Kaplan-Meier: exact equality with lifelines, only count tables leave a site."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifelines import KaplanMeierFitter

from flmi.core.errors import DataError
from flmi.data.arrays import ArraySplit, SiteSplits
from flmi.report.km_report import km_section, site_km_message
from flmi.tasks.km import WIRE_KEYS, KMTable, combine_km, km_table


def _sites(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, n in (("a", 120), ("b", 35), ("c", 80)):
        time = np.round(rng.exponential(300, n))  # whole days: ties within and across sites
        out[name] = (time, (rng.random(n) < 0.4).astype(np.int64))
    return out


def _lifelines(time: np.ndarray, event: np.ndarray) -> KaplanMeierFitter:
    return KaplanMeierFitter().fit(time, event)


def test_exact_federated_curve_equals_lifelines_on_the_pooled_patients() -> None:
    sites = _sites(0)
    sent = {s: km_table(site=s, time=t, event=e).to_wire() for s, (t, e) in sites.items()}

    curve = combine_km([KMTable.from_wire(m) for m in sent.values()])

    pooled_t = np.concatenate([t for t, _ in sites.values()])
    pooled_e = np.concatenate([e for _, e in sites.values()])
    reference = _lifelines(pooled_t, pooled_e).survival_function_.iloc[:, 0]
    np.testing.assert_allclose(
        curve.survival, reference.loc[curve.time].to_numpy(), rtol=0, atol=1e-9
    )
    assert set(curve.time) == set(np.unique(pooled_t))


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 40), st.integers(0, 1)), min_size=1, max_size=25),
        min_size=1,
        max_size=4,
    )
)
def test_any_split_of_patients_into_sites_gives_the_pooled_curve(
    sites: list[list[tuple[int, int]]],
) -> None:
    tables = [
        km_table(
            site=str(i),
            time=np.array([t for t, _ in rows], float),
            event=np.array([e for _, e in rows]),
        )
        for i, rows in enumerate(sites)
    ]
    rows = [r for site in sites for r in site]
    pooled = _lifelines(np.array([t for t, _ in rows], float), np.array([e for _, e in rows]))

    curve = combine_km(tables)

    expected = pooled.survival_function_.iloc[:, 0].loc[curve.time].to_numpy()
    np.testing.assert_allclose(curve.survival, expected, rtol=0, atol=1e-9)


def test_sites_send_only_aggregate_count_tables() -> None:
    sites = _sites(1)
    splits = {
        s: SiteSplits(
            train=ArraySplit(
                x=np.full((len(t), 2), 7.25, np.float32), y=np.stack([e, t], 1).astype(np.float32)
            ),
            val=ArraySplit(x=np.zeros((0, 2), np.float32), y=np.zeros((0, 2), np.float32)),
            test=ArraySplit(x=np.zeros((0, 2), np.float32), y=np.zeros((0, 2), np.float32)),
        )
        for s, (t, e) in sites.items()
    }

    messages = {
        s: site_km_message(site=s, data=d, bin_width=0.0, min_count=5) for s, d in splits.items()
    }

    for site, payload in messages.items():
        message = json.loads(payload)
        time, event = sites[site]
        assert sorted(message) == sorted(WIRE_KEYS)  # counts per time, nothing else
        assert message["site"] == site
        n_rows = len(message["time"])
        assert (
            n_rows == np.unique(time).size < time.size
        )  # one row per distinct time, not per patient
        assert all(len(message[k]) == n_rows for k in ("events", "removed", "at_risk"))
        assert sum(message["removed"]) == time.size and sum(message["events"]) == int(event.sum())
        assert "7.25" not in payload.decode()  # no feature value travels
    section = km_section(messages, bin_width=0.0, min_count=5)
    assert section["mode"] == "exact" and set(section["sites"]) == set(sites)  # type: ignore[arg-type]


def test_binned_rows_each_speak_for_at_least_min_count_patients_and_stay_close() -> None:
    sites = _sites(2)
    exact = combine_km([km_table(site=s, time=t, event=e) for s, (t, e) in sites.items()])

    tables = [
        km_table(site=s, time=t, event=e, bin_width=30.0, min_count=5)
        for s, (t, e) in sites.items()
    ]
    binned = combine_km(tables)

    for table in tables:
        assert min(table.removed) >= 5
        assert all(t % 30 == 0 for t in table.time)
        assert sum(table.removed) == sites[table.site][0].size  # nobody dropped
    at = np.searchsorted(exact.time, binned.time, side="right") - 1
    gap = np.abs(exact.survival[at] - binned.survival)
    assert gap[binned.at_risk >= 50].max() < 0.04  # close while many are followed
    assert gap.max() < 0.1  # the sparse tail pays for the pooled rows


def test_a_site_smaller_than_min_count_sends_an_empty_binned_table() -> None:
    table = km_table(
        site="tiny", time=np.array([3.0, 9.0]), event=np.array([1, 0]), bin_width=10, min_count=5
    )
    assert table.time == () and table.at_risk == ()


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"not json", "not valid JSON"),
        (b'{"site": "a", "time": [1.0], "events": [1], "removed": [1]}', "exactly the keys"),
        (
            b'{"site": "a", "time": [2.0, 1.0], "events": [0, 0], "removed": [1, 1], '
            b'"at_risk": [2, 1]}',
            "increase strictly",
        ),
        (
            b'{"site": "a", "time": [1.0], "events": [3], "removed": [1], "at_risk": [1]}',
            "events <= removed",
        ),
        (
            b'{"site": "a", "time": [1.0, 2.0], "events": [0, 0], "removed": [1, 1], '
            b'"at_risk": [5, 1]}',
            "at risk minus removed",
        ),
    ],
)
def test_a_malformed_table_is_refused_by_the_server(payload: bytes, match: str) -> None:
    with pytest.raises(DataError, match=match):
        KMTable.from_wire(payload)


def test_bad_patient_data_is_refused_at_the_site() -> None:
    with pytest.raises(DataError, match="events 0 or 1"):
        km_table(site="a", time=np.array([1.0]), event=np.array([2]))
    with pytest.raises(DataError, match="finite and >= 0"):
        km_table(site="a", time=np.array([-1.0]), event=np.array([1]))


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 100), st.integers(0, 1)), min_size=1, max_size=30),
        min_size=2,
        max_size=4,
    ),
    st.integers(1, 6),
    st.randoms(use_true_random=False),
)
def test_binned_tables_keep_every_patient_in_rows_of_min_count_in_any_site_order(
    sites: list[list[tuple[int, int]]], min_count: int, rnd: object
) -> None:
    tables = [
        km_table(
            site=str(i),
            time=np.array([t for t, _ in rows], float),
            event=np.array([e for _, e in rows]),
            bin_width=7.0,
            min_count=min_count,
        )
        for i, rows in enumerate(sites)
    ]
    for table, rows in zip(tables, sites, strict=True):
        if len(rows) < min_count:
            assert table.time == ()
            continue
        assert sum(table.removed) == len(rows) and sum(table.events) == sum(e for _, e in rows)
        assert min(table.removed) >= min_count
        table.check()
    shuffled = list(tables)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]

    a, b = combine_km(tables), combine_km(shuffled)

    np.testing.assert_array_equal(a.time, b.time)
    np.testing.assert_array_equal(a.survival, b.survival)
