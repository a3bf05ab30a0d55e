"""cusfl: a federated feature extractor with a private head at every site."""

from __future__ import annotations

from collections.abc import Mapping

from flmi.core.keys import HParam, KeepLocal
from flmi.core.messages import HParamValue
from flmi.strategies.fedbn import FedBN


class CustomHead(FedBN):
    """cusfl: the feature extractor is federated; each site keeps a private head.

    In the line of FedPer (Arivazhagan et al., "Federated Learning with
    Personalization Layers", 2019) and FedRep (Collins et al., "Exploiting
    Shared Representations for Personalized Federated Learning", ICML 2021):
    every layer but the last is averaged by examples as in FedAvg, while each
    site trains its own classifier head on top of the federated extractor and
    keeps it in its site state; the head never leaves the site. Each site is
    scored with the shared extractor and its own head. Suits sites whose
    label definitions or prevalence differ while the imaging features are
    shared.

    Parameters
    ----------
    hparams
        Local-training settings sent to every site each round.
    """

    def __init__(self, *, hparams: Mapping[str, HParamValue]) -> None:
        super().__init__(hparams=hparams, mu=0.0, name="cusfl")
        self._hparams = {**self._hparams, HParam.KEEP_LOCAL: KeepLocal.HEAD.value}
