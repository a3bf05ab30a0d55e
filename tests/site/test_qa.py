"""Federated data QA: small counts never leave a site; a site unlike the others is flagged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from flmi.data.arrays import ArraySplit, SiteSplits
from flmi.data.synthetic import generate_hospitals, make_profiles
from flmi.report.heterogeneity import data_section, emd_distance, tv_distance
from flmi.site.qa import describe_site, suppress


def _splits(y: np.ndarray, x: np.ndarray | None = None) -> SiteSplits:
    x = np.zeros((len(y), 2), np.float32) if x is None else x
    train = ArraySplit(x=x, y=y)
    empty = train.take(np.arange(0))
    return SiteSplits(train=train, val=empty, test=train.take(np.arange(min(3, len(y)))))


def test_counts_below_min_count_are_suppressed_and_zero_is_kept() -> None:
    assert [suppress(n, min_count=5) for n in (0, 1, 4, 5, 90)] == [0, None, None, 5, 90]


def test_site_report_hides_small_cells_and_the_cell_that_would_reveal_them() -> None:
    y = np.array([0] * 40 + [1] * 2 + [2] * 9)

    report = describe_site(site="a", data=_splits(y), label_kind="classes", min_count=5)

    assert report.counts == {"n_train": 51, "n_val": 0, "n_test": None}  # 3 test rows: hidden
    # class 1 (2 patients) is hidden; so is class 2, else 51 - 40 - 9 would give it away
    assert report.labels == {"0": 40, "1": None, "2": None}


def test_survival_report_counts_events_with_secondary_suppression() -> None:
    y = np.stack([np.r_[np.ones(2), np.zeros(38)], np.arange(40.0)], axis=1).astype(np.float32)

    report = describe_site(site="a", data=_splits(y), label_kind="events", min_count=5)

    assert report.labels == {"event": None, "censored": None}


def test_regression_targets_are_reported_as_a_histogram_over_config_edges() -> None:
    y = np.array([20.0, 25, 31, 33, 35, 38, 39, 80], np.float32)

    report = describe_site(
        site="a",
        data=_splits(y),
        label_kind="histogram",
        min_count=2,
        label_edges=(20.0, 30.0, 40.0, 50.0),
    )

    # 80 is clipped into the last bin (1 patient: hidden); the smallest other cell goes with it
    assert report.labels == {"0": None, "1": 5, "2": None}
    assert "80" not in str(report.to_json())


def test_image_report_has_an_intensity_histogram_and_the_image_shape() -> None:
    x = np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32)

    report = describe_site(
        site="a", data=_splits(np.zeros(20, np.int64), x), label_kind="classes", min_count=5
    )

    assert report.image_shape == (1, 8, 8)
    assert len(report.intensity) == 20 and sum(c or 0 for c in report.intensity) <= 20 * 64


def test_distances_worked_by_hand() -> None:
    assert tv_distance(np.array([3.0, 1.0]), np.array([1.0, 3.0])) == pytest.approx(0.5)
    # all mass one bin apart out of 4 bins: a quarter of the range
    assert emd_distance(np.array([1.0, 0, 0, 0]), np.array([0, 1.0, 0, 0])) == pytest.approx(0.25)
    assert np.isnan(tv_distance(np.zeros(2), np.ones(2)))


def _hospitals(shifted: bool):  # type: ignore[no-untyped-def]
    profiles = make_profiles(num_sites=4, seed=0, n_patients_total=400)
    if shifted:  # a scanner that maps everything into a bright, flat band
        profiles[2] = dataclasses.replace(profiles[2], intensity_scale=2.5, intensity_offset=0.2)
    return generate_hospitals(profiles=profiles, seed=0, image_size=16)


def _section(data) -> dict[str, object]:  # type: ignore[no-untyped-def]
    reports = {
        n: describe_site(site=n, data=s, label_kind="classes", min_count=5)
        for n, s in data.sites.items()
    }
    return data_section(reports, min_count=5, flag_distance=0.25)


def test_a_site_with_a_strong_scanner_shift_is_flagged_and_the_others_are_not() -> None:
    section = _section(_hospitals(shifted=True))

    assert section["flagged"] == ["hospital_3"]
    sites = section["sites"]
    assert isinstance(sites, dict)
    assert sites["hospital_3"]["distance"]["intensity"] > 0.25


def test_ordinary_generated_hospitals_are_not_flagged() -> None:
    section = _section(_hospitals(shifted=False))
    assert section["flagged"] == []


def test_an_unlabeled_sites_images_are_in_its_intensity_histogram() -> None:
    # A site whose training images are all unlabeled still shows its scanner.
    x = np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32)
    site = dataclasses.replace(
        _splits(np.zeros(20, np.int64), x), train=ArraySplit(x=x[:0], y=np.zeros(0, np.int64))
    )
    site = dataclasses.replace(site, unlabeled=x)

    report = describe_site(site="a", data=site, label_kind="classes", min_count=5)
    labeled = describe_site(
        site="b", data=_splits(np.zeros(20, np.int64), x), label_kind="classes", min_count=5
    )

    assert report.intensity == labeled.intensity and sum(c or 0 for c in report.intensity) > 0


def test_a_site_without_images_does_not_stop_the_others_being_compared_on_intensity() -> None:
    # A shifted site is flagged even when another site sent no intensity histogram.
    data = _hospitals(shifted=True)
    reports = {
        n: describe_site(site=n, data=s, label_kind="classes", min_count=5)
        for n, s in data.sites.items()
    }
    reports["hospital_1"] = dataclasses.replace(reports["hospital_1"], intensity=())

    section = data_section(reports, min_count=5, flag_distance=0.25)

    sites = section["sites"]
    assert isinstance(sites, dict)
    flagged = section["flagged"]
    assert isinstance(flagged, list) and "hospital_3" in flagged
    compared = {
        n: sites[n]["distance"]["intensity"] for n in ("hospital_2", "hospital_3", "hospital_4")
    }
    assert (
        max(compared, key=lambda n: compared[n]) == "hospital_3" and compared["hospital_3"] > 0.25
    )
    assert sites["hospital_1"]["distance"].get("intensity") is None
