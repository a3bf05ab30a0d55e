"""Strategy names the config can select, their options, and how each is built."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flmi.core.errors import ConfigError
from flmi.core.messages import HParamValue
from flmi.core.strategy import Strategy
from flmi.strategies.cusfl import CustomHead
from flmi.strategies.cyclic import Cyclic, CyclicOptions
from flmi.strategies.ditto import Ditto, DittoOptions
from flmi.strategies.fedavg import FedAvg
from flmi.strategies.fedbn import FedBN, build_fedpxn
from flmi.strategies.feddyn import FedDyn, FedDynOptions
from flmi.strategies.fednorm import FedNorm
from flmi.strategies.fednova import FedNova
from flmi.strategies.fedopt import (
    AdagradOptions,
    AdaptiveOptions,
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedYogi,
    MomentumOptions,
)
from flmi.strategies.fedprox import FedProx, ProxOptions
from flmi.strategies.finetune import FineTune, FinetuneOptions
from flmi.strategies.ifca import Ifca, IfcaOptions
from flmi.strategies.moon import Moon, MoonOptions
from flmi.strategies.options import Option, OptionValue, check_type, options_of
from flmi.strategies.robust import (
    GeometricMedian,
    GeometricMedianOptions,
    Krum,
    KrumOptions,
    Median,
    MedianOptions,
    TrimmedMean,
    TrimmedMeanOptions,
)
from flmi.strategies.scaffold import Scaffold, ScaffoldOptions


@dataclass(frozen=True)
class BuildContext:
    """What some strategies need to know about the federation they serve.

    Parameters
    ----------
    num_sites
        Sites in the federation (SCAFFOLD's ``N``).
    seed
        The run seed (the order in which cyclic training visits sites).
    site_groups
        ``{site: group}`` from ``[sites.NAME] group`` (FedNorm's modalities).
    site_names
        Every site's name, once the data is loaded (empty while only the
        config is checked).
    """

    num_sites: int = 1
    seed: int = 0
    site_groups: Mapping[str, str] = field(default_factory=dict)
    site_names: tuple[str, ...] = ()


Builder = Callable[[Mapping[str, HParamValue], Mapping[str, Any], BuildContext], Strategy[Any]]


def _one_update(_options: Mapping[str, Any]) -> int:
    return 1


@dataclass(frozen=True)
class StrategySpec:
    """A selectable strategy.

    Parameters
    ----------
    summary
        One line for ``flmi strategies``: what it does and its paper.
    options
        Its own ``[strategy]`` keys, each with a type, a default and a help line.
    build
        Builds the strategy from the local-training settings and the options,
        which :meth:`resolve_options` has already type-checked and completed
        with defaults. Out-of-range values raise a :class:`ConfigError` naming
        ``strategy.KEY``.
    linear
        Whether the aggregate is a linear function of the updates (a weighted
        sum), which secure aggregation requires.
    min_updates
        The fewest valid updates a round needs under the given (resolved) options.
    max_updates
        The most updates a round produces (cyclic training: one), if bounded.
    """

    summary: str
    options: Mapping[str, Option]
    build: Builder
    linear: bool = False
    min_updates: Callable[[Mapping[str, Any]], int] = field(default=_one_update)
    max_updates: int | None = None

    def option_types(self) -> dict[str, type]:
        """``{key: type}`` for every option (what the config checks values against)."""
        return {key: option.type for key, option in self.options.items()}

    def defaults(self) -> dict[str, OptionValue]:
        """``{key: default}`` for every option."""
        return {key: option.default for key, option in self.options.items()}

    def resolve_options(self, options: Mapping[str, Any]) -> dict[str, OptionValue]:
        """Every option's value: the given ones, type-checked, and defaults for the rest.

        Raises
        ------
        ConfigError
            An unknown key, or a value of the wrong type, naming ``strategy.KEY``.
        """
        resolved = self.defaults()
        for key, value in sorted(options.items()):
            if key not in self.options:
                allowed = ", ".join(sorted(["name", *self.options]))
                raise ConfigError(f"unknown key 'strategy.{key}'; this strategy takes: {allowed}")
            resolved[key] = check_type(key, value, self.options[key].type)
        return resolved


def _fixed(make: Callable[[Mapping[str, HParamValue]], Strategy[Any]]) -> Builder:
    def build(
        hparams: Mapping[str, HParamValue], _options: Mapping[str, Any], _context: BuildContext
    ) -> Strategy[Any]:
        return make(hparams)

    return build


STRATEGIES: Mapping[str, StrategySpec] = {
    "fedavg": StrategySpec(
        summary="FedAvg: example-weighted mean of site models (McMahan et al. 2017)",
        options={},
        build=_fixed(lambda h: FedAvg(hparams=h)),
        linear=True,
    ),
    "fedprox": StrategySpec(
        summary="FedProx: FedAvg plus a proximal term in local training (Li et al. 2020)",
        options=options_of(ProxOptions),
        build=lambda h, o, _c: FedProx(hparams=h, options=ProxOptions(**o)),
        linear=True,
    ),
    "scaffold": StrategySpec(
        summary="SCAFFOLD: control variates correct client drift (Karimireddy et al. 2020)",
        options=options_of(ScaffoldOptions),
        build=lambda h, o, c: Scaffold(
            hparams=h, server_lr=ScaffoldOptions(**o).server_lr, num_sites=c.num_sites
        ),
        linear=True,
    ),
    "cyclic": StrategySpec(
        summary="Cyclic weight transfer: the model visits one site per round (Chang et al. 2018)",
        options=options_of(CyclicOptions),
        build=lambda h, o, c: Cyclic(
            hparams=h, seed=c.seed, deterministic_cycle=CyclicOptions(**o).deterministic_cycle
        ),
        max_updates=1,
    ),
    "fedbn": StrategySpec(
        summary="FedBN: normalisation layers stay at each site (Li et al. 2021)",
        options={},
        build=_fixed(lambda h: FedBN(hparams=h, mu=0.0, name="fedbn")),
        linear=True,
    ),
    "fedpxn": StrategySpec(
        summary="FedPxN: FedProx plus site-local normalisation layers",
        options=options_of(ProxOptions),
        build=lambda h, o, _c: build_fedpxn(h, ProxOptions(**o)),
        linear=True,
    ),
    "ditto": StrategySpec(
        summary="Ditto: FedAvg plus a regularised personal model per site (Li et al. 2021)",
        options=options_of(DittoOptions),
        build=lambda h, o, _c: Ditto(hparams=h, options=DittoOptions(**o)),
        linear=True,
    ),
    "ifca": StrategySpec(
        summary="IFCA: k cluster models, each site trains its best fit (Ghosh et al. 2020)",
        options=options_of(IfcaOptions),
        build=lambda h, o, c: Ifca(hparams=h, options=IfcaOptions(**o), seed=c.seed),
    ),
    "cusfl": StrategySpec(
        summary="cusfl: federated feature extractor, a private head at every site (FedPer/FedRep)",
        options={},
        build=_fixed(lambda h: CustomHead(hparams=h)),
        linear=True,
    ),
    "finetune": StrategySpec(
        summary="FedAvg, then each site fine-tunes the model locally before it is scored",
        options=options_of(FinetuneOptions),
        build=lambda h, o, _c: FineTune(hparams=h, options=FinetuneOptions(**o)),
        linear=True,
    ),
    "fednorm": StrategySpec(
        summary="FedNorm: normalisation layers averaged per modality group (Bernecker et al. 2022)",
        options={},
        build=lambda h, _o, c: FedNorm(hparams=h, groups=c.site_groups, sites=c.site_names),
        linear=True,
    ),
    "fedavgm": StrategySpec(
        summary="FedAvgM: FedAvg with server momentum (Hsu et al. 2019)",
        options=options_of(MomentumOptions),
        build=lambda h, o, _c: FedAvgM(hparams=h, options=MomentumOptions(**o)),
        linear=True,
    ),
    "fedadam": StrategySpec(
        summary="FedAdam: Adam on the server's pseudo-gradient (Reddi et al. 2021)",
        options=options_of(AdaptiveOptions),
        build=lambda h, o, _c: FedAdam(hparams=h, options=AdaptiveOptions(**o)),
        linear=True,
    ),
    "fedyogi": StrategySpec(
        summary="FedYogi: Yogi on the server's pseudo-gradient (Reddi et al. 2021)",
        options=options_of(AdaptiveOptions),
        build=lambda h, o, _c: FedYogi(hparams=h, options=AdaptiveOptions(**o)),
        linear=True,
    ),
    "fedadagrad": StrategySpec(
        summary="FedAdagrad: Adagrad on the server's pseudo-gradient (Reddi et al. 2021)",
        options=options_of(AdagradOptions),
        build=lambda h, o, _c: FedAdagrad(hparams=h, options=AdagradOptions(**o)),
        linear=True,
    ),
    "fednova": StrategySpec(
        summary="FedNova: averaging normalised by local steps (Wang et al. 2020)",
        options={},
        build=_fixed(lambda h: FedNova(hparams=h)),
        linear=True,
    ),
    "median": StrategySpec(
        summary="Coordinate-wise median, example-weighted with a cap per site or uniform, "
        "robust (Yin et al. 2018)",
        options=options_of(MedianOptions),
        build=lambda h, o, _c: Median(hparams=h, options=MedianOptions(**o)),
    ),
    "trimmed_mean": StrategySpec(
        summary="Coordinate-wise trimmed mean: drop sites at each end, weighted or plain mean "
        "of the rest, robust (Yin et al. 2018)",
        options=options_of(TrimmedMeanOptions),
        build=lambda h, o, _c: TrimmedMean(hparams=h, options=TrimmedMeanOptions(**o)),
    ),
    "krum": StrategySpec(
        summary="Krum / Multi-Krum: the most central updates, robust (Blanchard et al. 2017)",
        options=options_of(KrumOptions),
        build=lambda h, o, _c: Krum(hparams=h, options=KrumOptions(**o)),
        min_updates=lambda o: KrumOptions(**o).min_updates(),
    ),
    "geometric_median": StrategySpec(
        summary="Geometric median by Weiszfeld (RFA), robust (Pillutla et al. 2022)",
        options=options_of(GeometricMedianOptions),
        build=lambda h, o, _c: GeometricMedian(hparams=h, options=GeometricMedianOptions(**o)),
    ),
    "feddyn": StrategySpec(
        summary="FedDyn: dynamic regularisation of local training (Acar et al. 2021)",
        options=options_of(FedDynOptions),
        build=lambda h, o, c: FedDyn(hparams=h, options=FedDynOptions(**o), num_sites=c.num_sites),
        linear=True,
    ),
    "moon": StrategySpec(
        summary="MOON: FedAvg plus a model-contrastive local loss (Li et al. 2021)",
        options=options_of(MoonOptions),
        build=lambda h, o, _c: Moon(hparams=h, options=MoonOptions(**o)),
        linear=True,
    ),
}


def build_strategy(
    *,
    name: str,
    hparams: Mapping[str, HParamValue],
    options: Mapping[str, Any],
    context: BuildContext | None = None,
) -> Strategy[Any]:
    """Build the strategy the config names, or raise a :class:`ConfigError`.

    ``options`` may omit keys (their defaults apply); unknown keys, wrong
    types and out-of-range values raise a :class:`ConfigError` naming
    ``strategy.KEY``.
    """
    spec = STRATEGIES.get(name)
    if spec is None:
        raise ConfigError(
            f"strategy.name: unknown strategy '{name}'; choose one of {sorted(STRATEGIES)} "
            "(`flmi strategies` lists them)"
        )
    return spec.build(
        hparams, spec.resolve_options(options), context if context is not None else BuildContext()
    )
