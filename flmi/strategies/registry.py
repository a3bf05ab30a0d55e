"""The strategies a config can select by ``[strategy] name``.

:data:`STRATEGIES` is a :class:`flmi.registry.Registry` of
:class:`~flmi.strategies.spec.StrategySpec`: flmi's own strategies are
registered below, one call each, in alphabetical order; a plug-in package adds
its own through the ``flmi.strategies`` entry-point group (see
``docs/extending.md``), and a script through ``STRATEGIES.register(name, spec)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flmi.core.messages import HParamValue
from flmi.core.strategy import Strategy
from flmi.registry import BUILTIN_ORIGIN, Registry, instance_check
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
from flmi.strategies.options import options_of
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
from flmi.strategies.spec import BuildContext, Builder, StrategySpec, fixed

__all__ = ["STRATEGIES", "BuildContext", "Builder", "StrategySpec", "build_strategy"]

STRATEGIES: Registry[StrategySpec] = Registry(
    kind="strategy",
    group="flmi.strategies",
    field="strategy.name",
    check=instance_check("strategy", StrategySpec),
)


def _builtin(name: str, spec: StrategySpec) -> None:
    STRATEGIES.register(name, spec, origin=BUILTIN_ORIGIN)


_builtin(
    "cusfl",
    StrategySpec(
        summary="cusfl: federated feature extractor, a private head at every site (FedPer/FedRep)",
        options={},
        build=fixed(lambda h: CustomHead(hparams=h)),
        linear=True,
    ),
)

_builtin(
    "cyclic",
    StrategySpec(
        summary="Cyclic weight transfer: the model visits one site per round (Chang et al. 2018)",
        options=options_of(CyclicOptions),
        build=lambda h, o, c: Cyclic(
            hparams=h, seed=c.seed, deterministic_cycle=CyclicOptions(**o).deterministic_cycle
        ),
        max_updates=1,
    ),
)

_builtin(
    "ditto",
    StrategySpec(
        summary="Ditto: FedAvg plus a regularised personal model per site (Li et al. 2021)",
        options=options_of(DittoOptions),
        build=lambda h, o, _c: Ditto(hparams=h, options=DittoOptions(**o)),
        linear=True,
    ),
)

_builtin(
    "fedadagrad",
    StrategySpec(
        summary="FedAdagrad: Adagrad on the server's pseudo-gradient (Reddi et al. 2021)",
        options=options_of(AdagradOptions),
        build=lambda h, o, _c: FedAdagrad(hparams=h, options=AdagradOptions(**o)),
        linear=True,
    ),
)

_builtin(
    "fedadam",
    StrategySpec(
        summary="FedAdam: Adam on the server's pseudo-gradient (Reddi et al. 2021)",
        options=options_of(AdaptiveOptions),
        build=lambda h, o, _c: FedAdam(hparams=h, options=AdaptiveOptions(**o)),
        linear=True,
    ),
)

_builtin(
    "fedavg",
    StrategySpec(
        summary="FedAvg: example-weighted mean of site models (McMahan et al. 2017)",
        options={},
        build=fixed(lambda h: FedAvg(hparams=h)),
        linear=True,
    ),
)

_builtin(
    "fedavgm",
    StrategySpec(
        summary="FedAvgM: FedAvg with server momentum (Hsu et al. 2019)",
        options=options_of(MomentumOptions),
        build=lambda h, o, _c: FedAvgM(hparams=h, options=MomentumOptions(**o)),
        linear=True,
    ),
)

_builtin(
    "fedbn",
    StrategySpec(
        summary="FedBN: normalisation layers stay at each site (Li et al. 2021)",
        options={},
        build=fixed(lambda h: FedBN(hparams=h, mu=0.0, name="fedbn")),
        linear=True,
    ),
)

_builtin(
    "fednorm",
    StrategySpec(
        summary="FedNorm: normalisation layers averaged per modality group (Bernecker et al. 2022)",
        options={},
        build=lambda h, _o, c: FedNorm(hparams=h, groups=c.site_groups, sites=c.site_names),
        linear=True,
    ),
)

_builtin(
    "fednova",
    StrategySpec(
        summary="FedNova: averaging normalised by local steps (Wang et al. 2020)",
        options={},
        build=fixed(lambda h: FedNova(hparams=h)),
        linear=True,
    ),
)

_builtin(
    "fedprox",
    StrategySpec(
        summary="FedProx: FedAvg plus a proximal term in local training (Li et al. 2020)",
        options=options_of(ProxOptions),
        build=lambda h, o, _c: FedProx(hparams=h, options=ProxOptions(**o)),
        linear=True,
    ),
)

_builtin(
    "fedpxn",
    StrategySpec(
        summary="FedPxN: FedProx plus site-local normalisation layers",
        options=options_of(ProxOptions),
        build=lambda h, o, _c: build_fedpxn(h, ProxOptions(**o)),
        linear=True,
    ),
)

_builtin(
    "fedyogi",
    StrategySpec(
        summary="FedYogi: Yogi on the server's pseudo-gradient (Reddi et al. 2021)",
        options=options_of(AdaptiveOptions),
        build=lambda h, o, _c: FedYogi(hparams=h, options=AdaptiveOptions(**o)),
        linear=True,
    ),
)

_builtin(
    "finetune",
    StrategySpec(
        summary="FedAvg, then each site fine-tunes the model locally before it is scored",
        options=options_of(FinetuneOptions),
        build=lambda h, o, _c: FineTune(hparams=h, options=FinetuneOptions(**o)),
        linear=True,
    ),
)

_builtin(
    "geometric_median",
    StrategySpec(
        summary="Geometric median by Weiszfeld (RFA), robust (Pillutla et al. 2022)",
        options=options_of(GeometricMedianOptions),
        build=lambda h, o, _c: GeometricMedian(hparams=h, options=GeometricMedianOptions(**o)),
    ),
)

_builtin(
    "ifca",
    StrategySpec(
        summary="IFCA: k cluster models, each site trains its best fit (Ghosh et al. 2020)",
        options=options_of(IfcaOptions),
        build=lambda h, o, c: Ifca(hparams=h, options=IfcaOptions(**o), seed=c.seed),
    ),
)

_builtin(
    "krum",
    StrategySpec(
        summary="Krum / Multi-Krum: the most central updates, robust (Blanchard et al. 2017)",
        options=options_of(KrumOptions),
        build=lambda h, o, _c: Krum(hparams=h, options=KrumOptions(**o)),
        min_updates=lambda o: KrumOptions(**o).min_updates(),
    ),
)

_builtin(
    "median",
    StrategySpec(
        summary="Coordinate-wise median, example-weighted with a cap per site or uniform, "
        "robust (Yin et al. 2018)",
        options=options_of(MedianOptions),
        build=lambda h, o, _c: Median(hparams=h, options=MedianOptions(**o)),
    ),
)

_builtin(
    "scaffold",
    StrategySpec(
        summary="SCAFFOLD: control variates correct client drift (Karimireddy et al. 2020)",
        options=options_of(ScaffoldOptions),
        build=lambda h, o, c: Scaffold(
            hparams=h, server_lr=ScaffoldOptions(**o).server_lr, num_sites=c.num_sites
        ),
        linear=True,
    ),
)

_builtin(
    "trimmed_mean",
    StrategySpec(
        summary="Coordinate-wise trimmed mean: drop sites at each end, weighted or plain mean "
        "of the rest, robust (Yin et al. 2018)",
        options=options_of(TrimmedMeanOptions),
        build=lambda h, o, _c: TrimmedMean(hparams=h, options=TrimmedMeanOptions(**o)),
    ),
)


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
    spec = STRATEGIES.lookup(name)
    return spec.build(
        hparams, spec.resolve_options(options), context if context is not None else BuildContext()
    )


_builtin(
    "feddyn",
    StrategySpec(
        summary="FedDyn: dynamic regularisation of local training (Acar et al. 2021)",
        options=options_of(FedDynOptions),
        build=lambda h, o, c: FedDyn(hparams=h, options=FedDynOptions(**o), num_sites=c.num_sites),
        linear=True,
    ),
)

_builtin(
    "moon",
    StrategySpec(
        summary="MOON: FedAvg plus a model-contrastive local loss (Li et al. 2021)",
        options=options_of(MoonOptions),
        build=lambda h, o, _c: Moon(hparams=h, options=MoonOptions(**o)),
        linear=True,
    ),
)
