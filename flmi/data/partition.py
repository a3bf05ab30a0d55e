"""Split one data set into simulated sites: IID or Dirichlet label skew.

A simulation with no natural hospital split (e.g. MedMNIST) partitions the
official train, validation and test splits into ``site_1`` .. ``site_N``.
With label skew every site's validation and test splits follow that site's own
label distribution, as a real hospital's would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flmi.core.errors import ConfigError, PartitionError
from flmi.core.keys import Split
from flmi.data.arrays import ArraySplit, FederatedData, SiteSplits

METHODS = ("iid", "dirichlet", "quantity")

# Stream id of the Dirichlet proportions; labels array ``i`` is shuffled with stream ``1 + i``.
_PROPORTIONS_STREAM = 0


def partition(
    *,
    train: ArraySplit,
    val: ArraySplit,
    test: ArraySplit,
    method: str,
    num_sites: int,
    seed: int,
    alpha: float = 0.5,
    min_examples_per_site: int = 1,
) -> FederatedData:
    """Partition train, validation and test splits into ``num_sites`` sites.

    Parameters
    ----------
    train, val, test
        The splits to partition; every example goes to exactly one site.
    method
        ``"iid"``: each split is shuffled and cut into near-equal parts.
        ``"dirichlet"``: label skew; for each class ``c`` site proportions
        ``p_c ~ Dirichlet(alpha * ones(num_sites))`` are drawn once and applied
        to the train, validation and test splits alike.
        ``"quantity"``: quantity skew; site shares ``q ~ Dirichlet(alpha *
        ones(num_sites))`` are drawn once and every split is shuffled and cut
        at those shares, so sites differ in size but not in label mix.
    num_sites
        Number of sites, named ``"site_1"`` .. ``"site_N"``.
    seed
        Seed of every random draw; the same seed gives the same partition.
    alpha
        Dirichlet concentration (``"dirichlet"`` only): small values give
        strongly skewed label distributions, large values near-uniform ones.
    min_examples_per_site
        Fewest training examples a site may hold.

    Returns
    -------
    FederatedData
        The sites' splits (indices kept in original order within each site)
        and, as ``central_test``, the whole ``test`` split unchanged.

    Raises
    ------
    ConfigError
        ``method`` is unknown, ``num_sites`` is below 1, ``alpha`` is not
        positive or ``min_examples_per_site`` is negative.
    PartitionError
        A site holds fewer than ``min_examples_per_site`` training examples or
        an empty validation or test split.
    """
    if min_examples_per_site < 0:
        raise ConfigError(
            f"partition.min_examples_per_site: must be >= 0, got {min_examples_per_site}; "
            "set [partition] min_examples_per_site"
        )
    train_idx, val_idx, test_idx = partition_indices(
        labels=[train.y, val.y, test.y], method=method, num_sites=num_sites, seed=seed, alpha=alpha
    )
    sites = {
        f"site_{k + 1}": SiteSplits(
            train=train.take(train_idx[k]),
            val=val.take(val_idx[k]),
            test=test.take(test_idx[k]),
        )
        for k in range(num_sites)
    }
    data = FederatedData(sites=sites, central_test=test)
    check_min_examples(data=data, min_examples_per_site=min_examples_per_site)
    return data


def partition_indices(
    *,
    labels: Sequence[np.ndarray],
    method: str,
    num_sites: int,
    seed: int,
    alpha: float = 0.5,
) -> list[list[np.ndarray]]:
    """Assign the examples of several label arrays (e.g. train, val, test) to sites.

    The index-level core of :func:`partition`, for data held in any container.

    Parameters
    ----------
    labels
        One int label array ``(N_i,)`` per split. With ``"dirichlet"`` every
        split shares the same per-class site proportions.
    method
        ``"iid"`` or ``"dirichlet"``, as in :func:`partition`.
    num_sites
        Number of sites.
    seed
        Seed of every random draw.
    alpha
        Dirichlet concentration (``"dirichlet"`` only).

    Returns
    -------
    list[list[np.ndarray]]
        ``result[i][k]``: the sorted int64 indices into ``labels[i]`` given to
        site ``k``; for each ``i`` they cover ``0..N_i-1`` exactly once.

    Raises
    ------
    ConfigError
        ``method`` is unknown, ``num_sites`` is below 1 or ``alpha`` is not positive.
    """
    if method not in METHODS:
        raise ConfigError(
            f"partition.method: unknown method {method!r}; use one of {', '.join(METHODS)}"
        )
    if num_sites < 1:
        raise ConfigError(
            f"partition.num_sites: must be at least 1, got {num_sites}; set [partition] num_sites"
        )
    if not alpha > 0.0:
        raise ConfigError(
            f"partition.alpha: must be > 0, got {alpha}; set [partition] alpha "
            "(e.g. 0.5 for strong label skew, 100 for nearly none)"
        )
    if method == "iid":
        return [
            _iid_indices(n=y.shape[0], num_sites=num_sites, rng=_rng(seed, 1 + i))
            for i, y in enumerate(labels)
        ]
    if method == "quantity":
        shares = _rng(seed, _PROPORTIONS_STREAM).dirichlet(np.full(num_sites, alpha))
        return [
            _cut(order=_rng(seed, 1 + i).permutation(y.shape[0]), shares=shares)
            for i, y in enumerate(labels)
        ]
    classes = np.unique(np.concatenate([np.asarray(y).ravel() for y in labels] or [np.empty(0)]))
    proportions = _rng(seed, _PROPORTIONS_STREAM).dirichlet(
        np.full(num_sites, alpha), size=classes.size
    )
    return [
        _dirichlet_indices(y=y, classes=classes, proportions=proportions, rng=_rng(seed, 1 + i))
        for i, y in enumerate(labels)
    ]


def _cut(*, order: np.ndarray, shares: np.ndarray) -> list[np.ndarray]:
    """Cut a permutation at cumulative ``shares``; each part sorted."""
    bounds = np.round(np.cumsum(shares)[:-1] * order.size).astype(np.int64)
    return [np.sort(part).astype(np.int64) for part in np.split(order, bounds)]


def check_min_examples(
    *, data: FederatedData, min_examples_per_site: int, require_val: bool = True
) -> None:
    """Check that every site can train, validate and test.

    Parameters
    ----------
    data
        The sites to check (in sorted site order).
    min_examples_per_site
        Fewest training examples a site may hold, labeled or not.
    require_val
        Whether an empty validation split is an error (``False`` for protocols
        without one, such as FLamby's Fed-Heart-Disease).

    Raises
    ------
    PartitionError
        A site holds fewer than ``min_examples_per_site`` training examples, or
        its validation or test split is empty; the message names the site, its
        count and the settings to change.
    """
    for name in sorted(data.sites):
        splits = data.sites[name]
        # Unlabeled training images count: a site may train on them (semi-supervised).
        n_train = len(splits.train) + splits.num_unlabeled
        if n_train < min_examples_per_site:
            raise PartitionError(
                f"partition: site '{name}' has {n_train} training examples, below "
                f"[partition] min_examples_per_site = {min_examples_per_site}; raise "
                "partition.alpha, lower partition.num_sites or lower min_examples_per_site"
            )
        if splits.num_unlabeled and not len(splits.train) + len(splits.val) + len(splits.test):
            continue  # a site that labeled nothing: it trains on its images, is scored nowhere
        checked = [(Split.VAL, splits.val)] if require_val else []
        for split_name, split in [*checked, (Split.TEST, splits.test)]:
            if len(split) == 0:
                raise PartitionError(
                    f"partition: site '{name}' has an empty {split_name} split; raise "
                    "partition.alpha or lower partition.num_sites so every site holds "
                    "validation and test examples"
                )


def site_label_summary(*, data: FederatedData) -> dict[str, dict[str, object]]:
    """Summarise each site's split sizes and label counts (JSON-ready).

    Parameters
    ----------
    data
        The sites to summarise.

    Returns
    -------
    dict[str, dict[str, object]]
        Per site, in sorted site order: ``{"n_train": int, "n_val": int,
        "n_test": int, "label_counts": {"train": {"0": n, ...}, "val": {...},
        "test": {...}}}``.
    """
    summary: dict[str, dict[str, object]] = {}
    for name in sorted(data.sites):
        splits = data.sites[name]
        by_split = {Split.TRAIN: splits.train, Split.VAL: splits.val, Split.TEST: splits.test}
        entry: dict[str, object] = {f"n_{key}": len(split) for key, split in by_split.items()}
        entry["label_counts"] = {str(key): split.label_counts() for key, split in by_split.items()}
        summary[name] = entry
    return summary


def _rng(seed: int, stream: int) -> np.random.Generator:
    """An independent generator for one named random draw of the partition."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def _iid_indices(*, n: int, num_sites: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle ``0..n-1`` and cut it into near-equal parts, each sorted."""
    parts = np.array_split(rng.permutation(n), num_sites)
    return [np.sort(p) for p in parts]


def _dirichlet_indices(
    *,
    y: np.ndarray,
    classes: np.ndarray,
    proportions: np.ndarray,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Cut each class's shuffled indices at its cumulative site proportions.

    ``proportions[i]`` holds the site shares of ``classes[i]``; each site's
    indices come back sorted.
    """
    num_sites = proportions.shape[1]
    parts: list[list[np.ndarray]] = [[] for _ in range(num_sites)]
    for label, shares in zip(classes, proportions, strict=True):
        idx = rng.permutation(np.flatnonzero(y == label))
        cuts = np.round(np.cumsum(shares)[:-1] * idx.size).astype(np.int64)
        for k, piece in enumerate(np.split(idx, cuts)):
            parts[k].append(piece)
    return [np.sort(np.concatenate(p)) if p else np.empty(0, dtype=np.int64) for p in parts]
