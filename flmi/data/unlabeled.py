"""Semi-supervised sites in simulation: hide a site's training labels, or shrink a site.

A hospital whose images were never annotated has images and no labels. The
simulation makes one from a labeled data set by moving a seeded share of a
site's training examples into :attr:`SiteSplits.unlabeled`, which holds images
only: the labels of those examples are dropped here and reach no array the
site gets. The site's validation and test splits keep their labels, so the
simulation can still score every site's model.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

import numpy as np

from flmi.config import Config, labeled_fractions, partition_seed, train_fractions
from flmi.core.errors import ConfigError
from flmi.core.rng import generator
from flmi.data.arrays import FederatedData, SiteSplits

log = logging.getLogger(__name__)


def hide_labels(
    *, data: FederatedData, labeled_fractions: Mapping[str, float], seed: int
) -> FederatedData:
    """Keep the labels of ``labeled_fractions[site]`` of each named site's training split.

    Parameters
    ----------
    data
        The federation's sites, fully labeled.
    labeled_fractions
        ``{site: fraction}`` with fractions in ``[0, 1]``; sites not named keep
        every label. ``0`` makes the whole training split unlabeled.
    seed
        Chooses which examples keep their labels, per site (the same seed
        gives the same choice).

    Returns
    -------
    FederatedData
        The same data, where each named site's training split holds only the
        examples that kept their labels and ``unlabeled`` holds the images of
        the rest (in their original order), without labels.
    """
    sites: dict[str, SiteSplits] = dict(data.sites)
    for name, fraction in sorted(labeled_fractions.items()):
        if name not in sites:
            raise ConfigError(
                f"[sites.{name}]: no site is named '{name}'; "
                f"the sites are {', '.join(sorted(sites))}"
            )
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"sites.{name}.labeled_fraction must be in [0, 1], got {fraction}")
        if fraction == 1.0:
            continue
        splits = sites[name]
        n = len(splits.train)
        keep = round(fraction * n)
        order = generator(seed=seed, party=name, rnd=0, purpose="labeled").permutation(n)
        labeled = np.sort(order[:keep])
        hidden = np.sort(order[keep:])
        images = np.ascontiguousarray(splits.train.x[hidden])
        if splits.unlabeled is not None:
            images = np.concatenate([splits.unlabeled, images])
        sites[name] = dataclasses.replace(
            splits, train=splits.train.take(labeled), unlabeled=images
        )
    return FederatedData(sites=sites, central_test=data.central_test, unreadable=data.unreadable)


def keep_training_share(
    *, data: FederatedData, fractions: Mapping[str, float], seed: int
) -> FederatedData:
    """Keep only ``fractions[site]`` of each named site's training examples, dropping the rest.

    A smaller hospital, for studies where labels are scarce: the dropped
    examples are gone (neither labeled nor unlabeled), unlike
    :func:`hide_labels`, which keeps their images. Validation and test splits
    are untouched.

    Parameters
    ----------
    data
        The federation's sites.
    fractions
        ``{site: fraction}`` with fractions in ``(0, 1]``; sites not named keep
        every example. At least one example is kept.
    seed
        Chooses which examples stay, per site (the same seed gives the same choice).

    Returns
    -------
    FederatedData
        The same data with each named site's training split cut to its share,
        the kept examples in their original order.
    """
    sites: dict[str, SiteSplits] = dict(data.sites)
    for name, fraction in sorted(fractions.items()):
        if name not in sites:
            raise ConfigError(
                f"[sites.{name}]: no site is named '{name}'; "
                f"the sites are {', '.join(sorted(sites))}"
            )
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"sites.{name}.train_fraction must be in (0, 1], got {fraction}")
        if fraction == 1.0:
            continue
        splits = sites[name]
        n = len(splits.train)
        keep = max(1, round(fraction * n))
        order = generator(seed=seed, party=name, rnd=0, purpose="train_share").permutation(n)
        sites[name] = dataclasses.replace(splits, train=splits.train.take(np.sort(order[:keep])))
    return FederatedData(sites=sites, central_test=data.central_test, unreadable=data.unreadable)


def without_unlabeled_sites(data: FederatedData) -> tuple[FederatedData, list[str]]:
    """Leave out the sites whose training images are all unlabeled.

    Without semi-supervised training such a site has nothing to train on.
    Returns the remaining data and the names left out, sorted.
    """
    left_out = sorted(
        name for name, s in data.sites.items() if len(s.train) == 0 and s.num_unlabeled > 0
    )
    kept = {name: s for name, s in data.sites.items() if name not in left_out}
    return (
        FederatedData(sites=kept, central_test=data.central_test, unreadable=data.unreadable),
        left_out,
    )


def semi_supervised_data(config: Config, data: FederatedData) -> tuple[FederatedData, list[str]]:
    """Hide the training labels ``[sites.NAME]`` asks to hide; drop sites that cannot train.

    Unlabeled images may also come from the data itself (a manifest with
    ``data.empty_labels = "unlabeled"``).

    Which examples keep their labels is drawn from the partition seed, so it
    stays fixed when only training seeds vary. Without
    ``federation.semi_supervised``, a site left with no labeled training
    example sits out of training (it has nothing to train on): the returned
    names. Their removal must leave ``federation.min_sites`` sites.

    Sites with ``train_fraction`` are first cut to that share of their
    training examples (drawn from the partition seed too). ``flmi run`` and
    ``flmi client`` (when it builds its split from the federation's config)
    both call this, so a site holds the same examples in both.
    """
    if not any(len(s.train) + len(s.val) + len(s.test) for s in data.sites.values()):
        raise ConfigError(
            "no site holds a labeled example: nothing could train the model toward the task "
            "or score it; label some images (data.empty_labels marks the unlabeled ones)"
        )
    seed = partition_seed(config)
    shares = train_fractions(config)
    if shares:
        data = keep_training_share(data=data, fractions=shares, seed=seed)
    fractions = labeled_fractions(config)
    if fractions:
        data = hide_labels(data=data, labeled_fractions=fractions, seed=seed)
    if config.federation.semi_supervised != "none" or not any(
        s.num_unlabeled for s in data.sites.values()
    ):
        return data, []
    data, left_out = without_unlabeled_sites(data)
    if left_out:
        log.warning(
            "sites %s hold no labeled training example and federation.semi_supervised = "
            "'none': they sit out",
            ", ".join(left_out),
        )
    if len(data.sites) < config.federation.min_sites:
        raise ConfigError(
            f"only {len(data.sites)} site(s) hold labeled training examples, fewer than "
            f"federation.min_sites = {config.federation.min_sites}; set "
            "federation.semi_supervised = 'fixmatch' (or 'pseudo_label') so unlabeled sites "
            "take part, or lower federation.min_sites"
        )
    return data, left_out
