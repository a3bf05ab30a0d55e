"""Tensors a site keeps to itself: FedBN's normalisation layers, cusfl's head, FedNorm's groups."""

from __future__ import annotations

import numpy as np
import torch

from flmi.core.keys import Extra, KeepLocal
from flmi.core.params import Params
from flmi.site.algorithms.base import ClientStep, LocalSite, LocalUpdate, PassStep, RoundContext
from flmi.tasks.base import FitHooks, FitResult
from flmi.tasks.torch_params import float_entries, head_names, normalisation_names


def kept_names(model: torch.nn.Module, keep_local: str) -> set[str]:
    """Names of the tensors a site keeps to itself under ``keep_local``."""
    if keep_local in (KeepLocal.NORM, KeepLocal.GROUP_NORM):
        return normalisation_names(model)
    if keep_local == KeepLocal.HEAD:
        return head_names(model)
    return set()


def restore_local(model: torch.nn.Module, local: Params) -> None:
    """Put a site's kept tensors (``local/`` in its state, prefix removed) into ``model``."""
    if local:
        entries = float_entries(model)
        with torch.no_grad():
            for name, value in local.items():
                entries[name].copy_(torch.from_numpy(np.array(value, copy=True)))


class _LocalLayersStep(PassStep):
    def __init__(self, *, keep_local: str, local: Params) -> None:
        self._keep_local = keep_local
        self._local = local
        self._kept: set[str] = set()

    def before_fit(self, site: LocalSite) -> FitHooks | None:
        """Put the kept tensors back over the received ones (FedNorm trains the received ones)."""
        self._kept = kept_names(site.model, self._keep_local)
        if self._kept and self._keep_local != KeepLocal.GROUP_NORM:
            restore_local(site.model, self._local)
        return None

    def after_fit(self, site: LocalSite, update: LocalUpdate, result: FitResult) -> LocalUpdate:
        """Keep the kept tensors out of the weights sent; keep them (or send them apart)."""
        kept = {k: v for k, v in update.params.items() if k in self._kept}
        tensors = {k: v for k, v in update.tensors.items() if not k.startswith(Extra.LOCAL)}
        extras = dict(update.extras)
        if self._keep_local == KeepLocal.GROUP_NORM:
            # FedNorm: normalisation tensors travel apart, to be averaged within the site's group.
            extras.update({Extra.NORM + k: v for k, v in kept.items()})
        else:
            tensors.update({Extra.LOCAL + k: v for k, v in kept.items()})
        return LocalUpdate(
            params={k: v for k, v in update.params.items() if k not in self._kept},
            extras=extras,
            tensors=tensors,
            meta=update.meta,
            metrics=update.metrics,
        )


class LocalLayers:
    """Runs when the instruction's ``keep_local`` is not ``"none"`` (FedBN, cusfl, FedNorm)."""

    name = "local_layers"

    def start(self, context: RoundContext) -> ClientStep | None:
        """A step that keeps ``keep_local``'s tensors at the site, or ``None``."""
        keep_local = context.training.keep_local
        if keep_local == KeepLocal.NONE:
            return None
        return _LocalLayersStep(keep_local=keep_local, local=context.kept(Extra.LOCAL))
