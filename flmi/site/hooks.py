"""Client-side parts of algorithms that change local training.

The server never runs these: it only names the client algorithm and sends
its hyperparameters and extra tensors in the instruction. The site builds the
hooks here, runs them inside its own training, and keeps whatever must persist
in its :class:`flmi.site.state.SiteState`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flmi.core.keys import Extra
from flmi.core.params import Params
from flmi.tasks.base import FitHooks


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def params_view_trainable(model: torch.nn.Module) -> Params:
    """Numpy views of the trainable parameters (what control variates are kept for)."""
    return {n: p.detach().cpu().numpy() for n, p in sorted(_trainable(model).items())}


def merge_hooks(hooks: list[FitHooks]) -> FitHooks | None:
    """One set of hooks from several (penalties add up; corrections run in order)."""
    if not hooks:
        return None
    penalties = [h.penalty for h in hooks if h.penalty is not None]
    steps = [h.before_step for h in hooks if h.before_step is not None]
    privates = [h.private for h in hooks if h.private is not None]
    if len(privates) > 1:
        raise ValueError("local training can be made private in one way at a time")

    def penalty(model: torch.nn.Module) -> torch.Tensor:
        return torch.stack([p(model) for p in penalties]).sum()

    def before_step(model: torch.nn.Module) -> None:
        for step in steps:
            step(model)

    return FitHooks(
        penalty=penalty if penalties else None,
        before_step=before_step if steps else None,
        private=privates[0] if privates else None,
    )


def proximal_penalty(
    *, model: torch.nn.Module, mu: float, anchor_params: Params | None = None
) -> FitHooks:
    """FedProx: ``mu / 2 * ||w - w_global||^2`` over trainable weights.

    Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020.
    The anchor is ``anchor_params`` when given (Ditto pulls a personal model
    toward the received global weights), else the model's weights when the
    hook is made, i.e. the global weights just received.
    """
    trainable = _trainable(model)
    if anchor_params is None:
        anchor = {n: p.detach().clone() for n, p in trainable.items()}
    else:
        anchor = {
            n: torch.from_numpy(np.array(anchor_params[n], copy=True)).to(p.device, p.dtype)
            for n, p in trainable.items()
        }

    def penalty(m: torch.nn.Module) -> torch.Tensor:
        terms = [((p - anchor[n]) ** 2).sum() for n, p in _trainable(m).items()]
        return 0.5 * mu * torch.stack(terms).sum()

    return FitHooks(penalty=penalty)


@dataclass(frozen=True)
class ScaffoldResult:
    """A site's new control variate (kept) and its change (sent)."""

    site_c: Params
    delta_c: Params


class ScaffoldCorrection:
    """SCAFFOLD's client side: correct each gradient by ``c - c_i``; update ``c_i`` after.

    Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for
    Federated Learning", ICML 2020, option II:
    ``c_i+ = c_i - c + (x - y_i) / (K * lr)`` after K plain SGD steps.

    Parameters
    ----------
    model
        The model holding the global weights ``x`` when the correction is made.
    server_c
        The server control variate, by parameter name.
    site_c
        This site's control variate (zeros on its first round).
    """

    def __init__(self, *, model: torch.nn.Module, server_c: Params, site_c: Params) -> None:
        params = _trainable(model)
        self._x = {n: p.detach().clone() for n, p in params.items()}
        self._site_c = {n: site_c.get(n, np.zeros(p.shape, np.float32)) for n, p in params.items()}
        self._correction = {
            n: torch.from_numpy(np.asarray(server_c[n] - self._site_c[n], dtype=np.float32)).to(
                device=p.device, dtype=p.dtype
            )
            for n, p in params.items()
        }

    def hooks(self) -> FitHooks:
        """The gradient correction, applied before every optimiser step."""

        def before_step(model: torch.nn.Module) -> None:
            with torch.no_grad():
                for name, param in _trainable(model).items():
                    if param.grad is not None:
                        param.grad += self._correction[name]

        return FitHooks(before_step=before_step)

    def finish(self, *, model: torch.nn.Module, num_steps: int, lr: float) -> ScaffoldResult:
        """The site's new variate and the change it sends, after ``num_steps`` steps."""
        new_c: Params = {}
        delta: Params = {}
        for name, param in _trainable(model).items():
            drift = (self._x[name] - param.detach()).cpu().numpy()
            correction = self._correction[name].cpu().numpy()
            old = self._site_c[name].astype(drift.dtype)
            # c_i+ = c_i - c + (x - y) / (K lr), and c_i - c is minus the correction.
            updated = -correction + drift / (max(num_steps, 1) * lr)
            new_c[name] = updated.astype(drift.dtype)
            delta[name] = (updated - old).astype(drift.dtype)
        return ScaffoldResult(site_c=new_c, delta_c=delta)


def server_variate(extras: Params) -> Params:
    """The server control variate ``c`` from an instruction's extras."""
    prefix = Extra.SCAFFOLD_C.value
    return {k[len(prefix) :]: v for k, v in extras.items() if k.startswith(prefix)}
