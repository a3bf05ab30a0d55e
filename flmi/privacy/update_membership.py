"""Membership inference from a site's update, as the server can run it.

The server holds the global model ``w`` it sent in a round and every
site's update ``delta``. Local training moves the weights against the
gradients of the site's own examples, so the gradient of a candidate's loss
at ``w`` points along ``-delta`` more for an example the site trained on
than for one it never saw (the gradient-alignment attacks of Nasr et al.,
S&P 2019, and of the federated membership literature). The score of a
candidate for site ``s`` is the cosine between its gradient at ``w`` and
``-delta_s``; calibrated, the same minus the candidate's mean cosine with
the *other* sites' updates of the round, which the server also holds, so an
example whose gradient simply points where every site's update goes (an
easy, typical image) no longer looks like a member.

Members are the site's training images; non-members are held-out images
of the same data set, weighted per label so their label mix is the
members' (the sites' label skew alone would otherwise separate them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from flmi.core.params import Params
from flmi.data.arrays import ArraySplit
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.torch_params import load_params


def example_gradients(
    *,
    task: ClassificationTask,
    model: torch.nn.Module,
    sent: Params,
    data: ArraySplit,
    names: Sequence[str],
    device: torch.device,
) -> np.ndarray:
    """Each example's loss gradient at ``sent``, flattened over ``names``: ``(N, P)``.

    The model is in evaluation mode (no dropout, fixed normalisation), one
    example at a time, as the attacker scores candidates it holds.
    """
    load_params(model, sent, where="the attacked round's global model")
    model.eval()
    params = dict(model.named_parameters())
    chosen = [params[n] for n in names]
    dtype = chosen[0].dtype
    rows = []
    for i in range(len(data)):
        x = torch.from_numpy(data.x[i : i + 1]).to(device, dtype)
        y = torch.from_numpy(np.asarray(data.y[i : i + 1])).to(device)
        loss = task.batch_loss(model, x, y)
        grads = torch.autograd.grad(loss, chosen)
        rows.append(torch.cat([g.reshape(-1) for g in grads]).detach().cpu().double().numpy())
    return np.stack(rows) if rows else np.zeros((0, 0))


def flat_update(delta: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """An update (a delta: received minus sent) flattened in the order of ``names``."""
    return np.concatenate([np.asarray(delta[n], dtype=np.float64).ravel() for n in names])


def alignment(gradients: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Cosine of each gradient row with the descent direction ``-delta``."""
    norms = np.linalg.norm(gradients, axis=1) * np.linalg.norm(delta) + 1e-30
    out: np.ndarray = -(gradients @ delta) / norms
    return out


def calibrated_alignment(
    gradients: np.ndarray, deltas: Mapping[str, np.ndarray], site: str
) -> np.ndarray:
    """Alignment with ``site``'s update minus the mean alignment with the other sites' updates.

    With no other site the plain alignment comes back.
    """
    own = alignment(gradients, deltas[site])
    others = [alignment(gradients, d) for s, d in deltas.items() if s != site]
    return own - np.mean(others, axis=0) if others else own


def label_matched_auc(
    *, scores: np.ndarray, is_member: np.ndarray, labels: np.ndarray
) -> float | None:
    """AUC of ``scores`` separating members, non-members weighted to the members' label mix.

    A non-member of label ``c`` weighs ``members_c / nonmembers_c`` (scaled to
    the non-members' total), so a score that only tells labels apart gets
    AUC 0.5. Labels no member has get weight 0. ``None`` when either group
    is empty.
    """
    from sklearn.metrics import roc_auc_score

    members = is_member.astype(bool)
    if members.all() or not members.any():
        return None
    weights = np.ones(len(scores), dtype=np.float64)
    for c in np.unique(labels):
        m = int(np.sum(members & (labels == c)))
        o = int(np.sum(~members & (labels == c)))
        if o:
            weights[~members & (labels == c)] = m / o
    if not weights[~members].sum() > 0:
        return None
    weights[~members] *= (~members).sum() / weights[~members].sum()
    return float(roc_auc_score(members.astype(np.float64), scores, sample_weight=weights))
