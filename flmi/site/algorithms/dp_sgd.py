"""DP-SGD in local training: per-example clipping and noise, the site's ledger kept."""

from __future__ import annotations

from dataclasses import replace

from flmi.core.keys import ClientAlgorithm, KeepLocal, Personal, PrivacyKey
from flmi.privacy.accounting import Ledger
from flmi.privacy.dp_sgd import DPSGD, SampleDPSettings
from flmi.site.algorithms.base import ClientStep, LocalSite, LocalUpdate, PassStep, RoundContext
from flmi.tasks.base import FitHooks, FitResult, HParamError


class _PrivateStep(PassStep):
    def __init__(self, *, dp_sgd: DPSGD) -> None:
        self._dp_sgd = dp_sgd

    def before_fit(self, site: LocalSite) -> FitHooks | None:
        """Train through DP-SGD's session."""
        return FitHooks(private=self._dp_sgd)

    def after_fit(self, site: LocalSite, update: LocalUpdate, result: FitResult) -> LocalUpdate:
        """Report the spending so far and keep the ledger in the site's state."""
        reported = update.with_metrics(self._dp_sgd.report(steps_this_round=result.num_steps))
        meta = {**update.meta, PrivacyKey.LEDGER.value: self._dp_sgd.ledger.to_json()}
        return replace(reported, meta=meta)


class SampleDP:
    """Runs when the instruction asks for sample-level DP (``dp = "sample"``)."""

    name = "dp_sgd"

    def start(self, context: RoundContext) -> ClientStep | None:
        """DP-SGD for this round, with this site's ledger so far, or ``None``."""
        settings = SampleDPSettings.from_hparams(context.instruction.hparams)
        if settings is None:
            return None
        training = context.training
        if (
            training.prox_mu > 0
            or training.client_algorithm != ClientAlgorithm.STANDARD
            or training.keep_local in (KeepLocal.NORM, KeepLocal.GROUP_NORM)
            or training.personal != Personal.NONE
        ):
            raise HParamError(
                "DP-SGD runs only plain local training: no proximal term, SCAFFOLD, IFCA, "
                "FedDyn, MOON, local normalisation layers or personal model"
            )
        ledger = Ledger.from_json(context.state.meta.get(PrivacyKey.LEDGER.value, []))
        return _PrivateStep(dp_sgd=DPSGD(settings=settings, ledger=ledger, noise=context.noise))
