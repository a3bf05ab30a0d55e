"""Checks across tables, and against the registries, each naming the key to change.

A table's own values are checked when it is made (:mod:`flmi.config.schema`);
a data source checks its own ``[data]`` keys through its registry entry
(:attr:`flmi.data.source_registry.DataSourceSpec.check`), a task its own
``[task]`` keys through its entry (:attr:`flmi.tasks.registry.TaskSpec.check`),
and a strategy its options when it is built. :func:`check_config` runs them all, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from flmi.config.derived import site_groups, training_hparams
from flmi.config.privacy_checks import check_dp, check_privacy
from flmi.core.errors import ConfigError
from flmi.core.suggest import one_line
from flmi.data.source_registry import SOURCES, source_for
from flmi.runtime.registry import RUNTIMES
from flmi.strategies.registry import STRATEGIES, BuildContext, build_strategy
from flmi.tasks.model_registry import MODELS
from flmi.tasks.registry import TASKS

if TYPE_CHECKING:
    from flmi.config.schema import Config


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_config(c: Config) -> None:
    """Every check across tables, each naming the key to change."""
    f, p = c.federation, c.partition
    _require(
        f.min_sites <= p.num_sites,
        f"federation.min_sites = {f.min_sites} exceeds partition.num_sites = {p.num_sites}",
    )
    check_task_fits(c)
    _check_task(c)
    check_strategy_fits(c)
    check_privacy(c)
    RUNTIMES.lookup(c.runtime.name)
    check_dp(c)
    _check_record(c)
    check_compression(c)
    source_for(c.data.source).check(c)


def _check_record(c: Config) -> None:
    """``[record] updates`` keeps each site's update: only where the server sees one."""
    if not c.record.updates:
        return
    v = c.privacy
    _require(
        v.aggregation == "plain",
        f"record.updates = true with privacy.aggregation = '{v.aggregation}': individual "
        "updates are hidden by design (the server only ever sees their sum), so there is "
        "nothing to record; set record.updates = false, or privacy.aggregation = 'plain'",
    )
    _require(
        v.dp != "client" or v.noise_at == "site",
        "record.updates = true with privacy.dp = 'client' and privacy.noise_at = 'server': "
        "the server's DP noise is OS randomness nobody can draw again, so no round could be "
        "replayed; use privacy.noise_at = 'site' or set record.updates = false",
    )


def check_site_names(config: Config, names: Sequence[str]) -> None:
    """Every ``[sites.NAME]`` table must name a site of the federation."""
    for name in sorted(config.sites):
        if name not in names:
            raise ConfigError(
                f"[sites.{name}]: no site is named '{name}'; "
                f"the sites are {', '.join(sorted(names))}"
            )


def check_strategy_fits(c: Config) -> None:
    """The strategy's options, their fit with local training, and the updates a round needs."""
    f = c.federation
    # Building the strategy range-checks its options and their fit with local training.
    build_strategy(
        name=c.strategy.name,
        hparams=training_hparams(c),
        options=c.strategy.options,
        context=BuildContext(
            num_sites=c.partition.num_sites, seed=f.seed, site_groups=site_groups(c)
        ),
    )
    spec = STRATEGIES[c.strategy.name]
    needed = spec.min_updates(spec.resolve_options(c.strategy.options))
    _require(
        f.min_sites >= needed,
        f"strategy '{c.strategy.name}' needs at least {needed} updates a round with these "
        f"options; raise federation.min_sites to {needed} if the federation has that many "
        "sites, or change the strategy's options (for krum, lower strategy.num_byzantine)",
    )
    if spec.max_updates is not None:
        _require(
            f.min_sites <= spec.max_updates,
            f"strategy '{c.strategy.name}' receives {spec.max_updates} update(s) a round; "
            f"set federation.min_sites = {spec.max_updates}",
        )


def check_task_fits(c: Config) -> None:
    """The task, its model and its data must go together; each message names the key.

    The generic rules are here; what only one task needs it checks itself
    (:attr:`flmi.tasks.registry.TaskSpec.check`).
    """
    t = c.task
    network = MODELS.lookup(t.model)
    spec = TASKS.lookup(t.name)
    if t.name != "segmentation":
        _require(
            network.serves(t.name) or not network.serves("segmentation"),
            f"task.model = '{t.model}' is a segmentation network; set task.name = "
            "'segmentation', or choose 'small_cnn' or 'densenet121' to classify",
        )
        _require(
            not t.patch_size,
            "task.patch_size applies to segmentation only; remove it or set "
            "task.name = 'segmentation'",
        )
    if spec.check is not None:
        spec.check(c)
    _require(
        t.norm == "auto" or network.takes_norm,
        f"task.norm applies to MONAI networks; task.model = '{t.model}' has its own "
        "normalisation: leave task.norm = 'auto'",
    )


def _check_task(c: Config) -> None:
    """The task exists and fits the data source, and every site's fault suits it.

    A task fits a source when the task lists the source or the source lists the task.
    """
    t = c.task
    task = TASKS.lookup(t.name)
    source_for(c.data.source)  # an unknown source is named before the fit is checked
    fitting = [n for n in SOURCES.names() if n in task.sources or t.name in SOURCES[n].tasks]
    _require(
        c.data.source in fitting,
        f"task.name = '{t.name}' does not fit data.source = '{c.data.source}'; "
        f"use one of {one_line(fitting)}",
    )
    if t.name != "classification":
        for name, site in sorted(c.sites.items()):
            _require(
                site.fault != "label_flip",
                f"sites.{name}.fault = 'label_flip' needs class labels; "
                f"task.name = '{t.name}' has none: choose another fault",
            )


def check_compression(c: Config) -> None:
    """The compressor exists and fits the privacy setting (see docs/communication.md)."""
    method = c.compression.method
    if method == "none":
        return
    from flmi.compression.registry import COMPRESSORS

    spec = COMPRESSORS.lookup(method)
    aggregation = c.privacy.aggregation
    _require(
        aggregation == "plain" or spec.linear,
        f"compression.method = '{method}' is not linear: a secure sum of sparse or "
        f"low-rank updates is not the sum of the updates, so privacy.aggregation = "
        f"'{aggregation}' refuses it; use compression.method = 'quantize', or "
        "privacy.aggregation = 'plain'",
    )
    _require(
        aggregation == "plain",
        f"privacy.aggregation = '{aggregation}' already sends each value as a fixed-point "
        "word: lower privacy.secagg_bits to send fewer bytes, and set compression.method = "
        "'none'",
    )
