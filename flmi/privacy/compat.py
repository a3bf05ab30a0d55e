"""Which strategies each kind of differential privacy can run with, and why not the others.

Plain Python, so the config can check a run before anything heavy is imported.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Strategies DP-SGD (``privacy.dp = "sample"``) refuses, each with the reason.
SAMPLE_DP_REFUSED: Mapping[str, str] = {
    "fedbn": (
        "FedBN exists to keep batch-normalisation statistics at each site, and BatchNorm mixes "
        "the examples of a batch, so DP-SGD's per-example gradients (and its guarantee) do not "
        "exist for it; use a GroupNorm model with fedavg, fedavgm or fedadam"
    ),
    "fedpxn": (
        "FedPxN keeps batch-normalisation layers at each site, and BatchNorm mixes the examples "
        "of a batch, so DP-SGD's per-example gradients (and its guarantee) do not exist for it; "
        "use a GroupNorm model with fedavg, fedavgm or fedadam"
    ),
    "fedprox": (
        "DP-SGD replaces each gradient by its clipped, noised per-example sum, which drops "
        "FedProx's proximal term; use fedavg (or client-level DP, privacy.dp = 'client')"
    ),
    "ditto": (
        "DP-SGD replaces each gradient by its clipped, noised per-example sum, which drops "
        "Ditto's proximal pull; use fedavg or finetune"
    ),
    "scaffold": (
        "SCAFFOLD's gradient correction is overwritten by DP-SGD's noised gradient; use fedavg, "
        "fedavgm or fedadam"
    ),
    "fednorm": (
        "FedNorm scores each site with its modality group's normalisation layers, which "
        "flmi's DP-SGD wrapper does not pass on; use fedavg, or cusfl for a private head"
    ),
    "ifca": (
        "IFCA picks a cluster by each site's training loss, a choice DP-SGD does not privatise; "
        "use fedavg"
    ),
}

#: Strategies DP-FedAvg (``privacy.dp = "client"``) can wrap: a mean of updates and a server rule.
CLIENT_DP_STRATEGIES: tuple[str, ...] = (
    "fedavg",
    "fedprox",
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "finetune",
)


def client_dp_refusal(strategy: str) -> str | None:
    """Why ``strategy`` cannot run under client-level DP (``None``: it can)."""
    if strategy in CLIENT_DP_STRATEGIES:
        return None
    return (
        f"privacy.dp = 'client' clips each site's update and adds noise to their sum, which "
        f"only calibrates for an unweighted mean of updates followed by a server rule; "
        f"strategy '{strategy}' aggregates otherwise (or sends tensors the clip does not "
        f"bound). Use one of {', '.join(CLIENT_DP_STRATEGIES)}"
    )
