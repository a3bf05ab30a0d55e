"""A privacy audit that attacks a finished run's updates, as its server could.

The attacker is the server, and knows what the server knows: the run's
config (batch size, local steps, optimiser, learning rate, DP settings,
seed), the global model it sent in every round (the run's checkpoints), and
what each site sends back: its update, step count and example count. It
attacks the update of the run's *last* round, made from the global model the
server sent in that round (a trained model, not the initial one), by the site
code path under the run's settings from one batch of the run's batch size.
Under secure or homomorphic aggregation (``privacy.aggregation``) it holds no
site's update, only the aggregate the protocol gives it: every site trains on
a batch of its own, the real protocol runs in process (masking, fixed-point
quantisation, unmasking; or encryption, addition and decryption by a site),
and the attacker inverts that aggregate, reconstructing as many images as the
sum holds, of which the attacked site's are scored against their
best-matching reconstructions.

From a random image it runs a gradient-inversion attack (Geiping et al.,
"Inverting Gradients", NeurIPS 2020: cosine distance between gradients plus a
total-variation prior), with labels recovered from the last layer's bias
gradient as in iDLG (Zhao et al. 2020). The report gives PSNR and SSIM of
each reconstruction against its original (MONAI's metrics) and, as the floor,
the same for as many unrelated images of the data set put through the same
best-match pairing; the label recovery rate; and a loss-threshold
membership-inference AUC of the run's final model (Yeom et al. 2018):
training examples of every site against test examples, with the two groups'
mean losses, and the same attack calibrated by shadow models that never saw
the example scored (Watson et al. 2022, :func:`shadow_losses`). The
membership figure counts only if the loss attack separates the members of a
model overfit without DP (:func:`reference_membership`); otherwise the
attack is too weak to say anything.

The run's local optimiser decides what an update tells: a fresh Adam's first
step moves every weight by the learning rate times the sign of its gradient,
so under Adam the inverted "gradient" holds signs only, and the bias
gradient's sign gives one label for the whole batch.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flmi.config import Config, site_groups, training_hparams
from flmi.core.errors import ConfigError
from flmi.core.keys import Arm, HParam, Split
from flmi.core.messages import ClientError, ClientUpdate, TrainInstruction, UpdateKind
from flmi.core.params import Params, add_scaled
from flmi.core.strategy import StateRecord, Strategy
from flmi.data.arrays import ArraySplit, FederatedData, SiteSplits, concat_splits
from flmi.data.sources import load_data
from flmi.privacy.rederive import rederive_updates, replay_error
from flmi.privacy.setup import build_secure, protect_sites
from flmi.privacy.strategies import with_privacy
from flmi.privacy.update_membership import (
    alignment,
    calibrated_alignment,
    example_gradients,
    flat_update,
    label_matched_auc,
)
from flmi.report.rundir import MODEL, RunDir
from flmi.runtime.inprocess import InProcessRuntime
from flmi.site.site import Site
from flmi.strategies.registry import BuildContext, build_strategy
from flmi.tasks.classification import ClassificationTask
from flmi.tasks.device import resolve_device
from flmi.tasks.torch_params import head_names, load_params, params_copy
from flmi.tensorio import load_tensors


@dataclass(frozen=True)
class AttackSettings:
    """How hard the attacker tries.

    Parameters
    ----------
    batches
        Independent batches attacked (each of the run's batch size).
    iterations
        Optimisation steps of the reconstruction.
    lr
        Adam's learning rate on the image.
    tv_weight
        Weight of the total-variation prior.
    seed
        Seeds the choice of attacked examples and the random starting images.
    reference_members, reference_epochs
        The membership attack's sanity check: a model overfit without DP for
        ``reference_epochs`` epochs on ``reference_members`` training examples
        (see :func:`reference_membership`). On the BreastMNIST example (batch
        32, Adam at lr 0.001) 30 epochs (120 steps) left such a model at the
        class prior, no better on its members than on anyone else; 100 fit them.
    candidates
        The update-based membership attack scores at most this many members
        and as many held-out images per site (0: all of them).
    shadow_models, shadow_epochs
        The calibrated membership attack (:func:`shadow_losses`): that many
        shadow models, each trained for ``shadow_epochs`` epochs on all but
        one fold of the candidates; 0 shadow models leaves it out.
    """

    batches: int = 4
    iterations: int = 800
    lr: float = 0.1
    tv_weight: float = 0.05
    seed: int = 0
    reference_members: int = 100
    reference_epochs: int = 100
    shadow_models: int = 2
    shadow_epochs: int = 30
    candidates: int = 0

    def __post_init__(self) -> None:
        if self.batches < 1 or self.iterations < 1:
            raise ConfigError("audit: --batches and --iterations must be at least 1")
        if self.reference_epochs < 1 or self.shadow_epochs < 1:
            raise ConfigError("audit: --reference-epochs and shadow_epochs must be at least 1")
        if self.shadow_models == 1 or self.shadow_models < 0:
            raise ConfigError(
                "audit: --shadow-models must be 0 (no calibrated attack) or at least 2 "
                "(each candidate needs a shadow model that did not train on it)"
            )
        if self.candidates < 0:
            raise ConfigError("audit: --candidates must be 0 (all) or positive")
        if not self.lr > 0 or self.tv_weight < 0:
            raise ConfigError("audit: the attack's lr must be positive and tv_weight not negative")


def observed_gradient(
    *, sent: Params, update: ClientUpdate, lr: float, names: Sequence[str]
) -> dict[str, np.ndarray]:
    """The gradient the server can read off an update: ``(sent - received) / (lr * steps)``."""
    steps = max(update.num_steps, 1)
    out: dict[str, np.ndarray] = {}
    for name in names:
        moved = (
            update.params[name]
            if update.kind is UpdateKind.DELTA
            else update.params[name] - sent[name]
        )
        out[name] = -np.asarray(moved, dtype=np.float64) / (lr * steps)
    return out


def recover_labels(bias_gradient: np.ndarray, batch_size: int) -> list[int]:
    """Labels from the last layer's bias gradient (iDLG).

    With softmax cross-entropy the bias gradient of class ``c`` is the batch
    mean of ``p_c - 1[y = c]``: negative only for classes present in the
    batch. One logit (binary logistic): negative means label 1. For a batch,
    the classes with negative entries are shared out, most negative first.
    """
    g = np.asarray(bias_gradient, dtype=np.float64).ravel()
    if g.size == 1:
        return [1 if g[0] < 0 else 0] * batch_size
    present = [int(c) for c in np.argsort(g) if g[c] < 0] or [int(np.argmin(g))]
    return [present[i % len(present)] for i in range(batch_size)]


def _tv(x: torch.Tensor) -> torch.Tensor:
    dx = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    dy = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    return dx + dy


def invert(
    *,
    task: ClassificationTask,
    model: torch.nn.Module,
    target: dict[str, np.ndarray],
    labels: Sequence[int],
    shape: tuple[int, ...],
    settings: AttackSettings,
    generator: torch.Generator,
    device: torch.device,
) -> np.ndarray:
    """Images whose gradient points where ``target`` does (cosine loss + TV prior)."""
    params = [p for n, p in model.named_parameters() if n in target]
    names = [n for n, _ in model.named_parameters() if n in target]
    dtype = params[0].dtype
    goal = [torch.from_numpy(target[n]).to(device, dtype) for n in names]
    goal_norm = torch.sqrt(sum((g * g).sum() for g in goal))  # type: ignore[arg-type]
    x = torch.rand(shape, generator=generator).to(device, dtype).requires_grad_(True)
    y = torch.tensor(list(labels), dtype=torch.long, device=device)
    optimizer = torch.optim.Adam([x], lr=settings.lr)
    n = settings.iterations
    schedule = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[3 * n // 8, 5 * n // 8, 7 * n // 8], gamma=0.1
    )
    model.train()
    for _ in range(n):
        optimizer.zero_grad(set_to_none=True)
        loss = task.batch_loss(model, x, y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * t).sum() for g, t in zip(grads, goal, strict=True))
        norm = torch.sqrt(sum((g * g).sum() for g in grads))  # type: ignore[arg-type]
        objective = 1 - dot / (norm * goal_norm + 1e-12) + settings.tv_weight * _tv(x)
        objective.backward()  # type: ignore[union-attr, no-untyped-call]
        if x.grad is not None:
            x.grad.sign_()  # Inverting Gradients steps on the gradient's sign
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
    return x.detach().cpu().to(torch.float32).numpy()


def image_scores(reconstructed: np.ndarray, original: np.ndarray) -> tuple[float, float]:
    """PSNR and SSIM of one image against another, both in ``[0, 1]`` (MONAI's metrics)."""
    from monai.metrics.regression import PSNRMetric, SSIMMetric

    a = torch.from_numpy(np.clip(reconstructed, 0, 1)[None].astype(np.float32))
    b = torch.from_numpy(np.clip(original, 0, 1)[None].astype(np.float32))
    psnr = float(torch.as_tensor(PSNRMetric(max_val=1.0)(a, b)).mean())
    spatial = a.ndim - 2
    ssim_metric = SSIMMetric(spatial_dims=spatial, data_range=1.0, win_size=7)
    ssim = float(torch.as_tensor(ssim_metric(a, b)).mean())
    return psnr, ssim


def match_reconstructions(originals: np.ndarray, reconstructed: np.ndarray) -> list[int]:
    """For each original, its own reconstruction: the pairing with the best total PSNR.

    There may be more reconstructions than originals (an aggregate holds every
    site's images); each original gets a different one, the attacker's best case.
    """
    from scipy.optimize import linear_sum_assignment

    cost = np.array(
        [[-image_scores(r, o)[0] for r in reconstructed] for o in originals], dtype=np.float64
    )
    _, cols = linear_sum_assignment(cost)
    return [int(c) for c in cols]


def example_losses(
    *, task: ClassificationTask, model: torch.nn.Module, data: ArraySplit, device: torch.device
) -> np.ndarray:
    """Each example's cross-entropy under ``model`` in evaluation mode (no augmentation)."""
    probs, _ = task.predict_proba(model=model, x=data.x, device=device)
    picked = np.clip(probs[np.arange(len(data)), data.y], 1e-12, 1.0)
    out: np.ndarray = -np.log(picked)
    return out


def membership_auc(
    *,
    task: ClassificationTask,
    model: torch.nn.Module,
    members: ArraySplit,
    others: ArraySplit,
    device: torch.device,
) -> float:
    """Loss-threshold membership inference: AUC of ``-loss`` separating members from others."""
    from sklearn.metrics import roc_auc_score

    scores = np.concatenate(
        [
            -example_losses(task=task, model=model, data=members, device=device),
            -example_losses(task=task, model=model, data=others, device=device),
        ]
    )
    truth = np.concatenate([np.ones(len(members)), np.zeros(len(others))])
    return float(roc_auc_score(truth, scores))


def calibrated_auc(
    *, target_losses: np.ndarray, shadow_losses: np.ndarray, is_member: np.ndarray
) -> float:
    """Difficulty-calibrated membership AUC (Watson et al., ICLR 2022).

    An example's score is how much lower its loss is under the attacked
    model than under a shadow model that never saw it: ``shadow - target``.
    Examples that are simply easy (low loss under any model) no longer look
    like members, so what is left is what training on them added.
    """
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(is_member.astype(np.float64), shadow_losses - target_losses))


@dataclass(frozen=True)
class AuditReport:
    """What the audit found; :meth:`to_json` is written to ``audit.json``.

    ``attacked_round`` is the round whose update was attacked, made from the
    global model the server sent in it. ``membership_auc`` is the attack on
    the run's final model; ``reference_membership_auc`` the same attack on a
    model overfit without DP on ``reference_members`` examples, which it must
    separate (AUC at least :data:`MEMBERSHIP_SANITY_AUC`) for the run's figure to
    mean anything: ``membership_meaningful``. ``calibrated_membership_auc`` is
    the final model's attack with each example's loss calibrated by
    ``shadow_models`` shadow models that never saw it (:func:`calibrated_auc`).
    ``member_loss`` and ``nonmember_loss`` are the final model's mean loss on
    every site's training and test examples: the gap the attack feeds on.
    ``mean_image_psnr`` scores the pixel-wise mean of the central test images
    (what an attacker holding public images guesses without any update)
    against each attacked image; ``floor_psnr`` in :meth:`to_json` is the
    better of that and the matched unrelated images, the figure a
    reconstruction must beat.
    ``update_membership_auc`` (and its calibrated form) is the attack on each
    site's re-derived update of ``attacked_round`` (:func:`update_membership`;
    ``None`` under secure or homomorphic aggregation, where the server holds
    no site's update); ``replay_error`` how far those updates, aggregated, are
    from the run's recorded model.
    """

    site: str
    batch_size: int
    local_steps: int
    privacy: dict[str, Any]
    psnr: list[float]
    ssim: list[float]
    unrelated_psnr: list[float]
    unrelated_ssim: list[float]
    label_recovery_rate: float
    membership_auc: float | None
    aggregation: str = "plain"
    sites_in_update: int = 1
    images_reconstructed: int = 0
    attacked_round: int = 1
    reference_membership_auc: float | None = None
    reference_members: int = 0
    calibrated_membership_auc: float | None = None
    shadow_models: int = 0
    member_loss: float | None = None
    nonmember_loss: float | None = None
    mean_image_psnr: list[float] = dataclasses.field(default_factory=list)
    mean_image_ssim: list[float] = dataclasses.field(default_factory=list)
    update_membership_auc: dict[str, float] | None = None
    update_membership_calibrated_auc: dict[str, float] | None = None
    replay_error: float | None = None

    @property
    def membership_meaningful(self) -> bool:
        """Whether the attack separates an overfit model's members: its figure means something."""
        return (
            self.reference_membership_auc is not None
            and self.reference_membership_auc >= MEMBERSHIP_SANITY_AUC
        )

    def to_json(self) -> dict[str, Any]:
        """Every number, plus their means."""
        out = dataclasses.asdict(self)
        for key in (
            "psnr",
            "ssim",
            "unrelated_psnr",
            "unrelated_ssim",
            "mean_image_psnr",
            "mean_image_ssim",
        ):
            values = getattr(self, key)
            out[f"{key}_mean"] = float(np.mean(values)) if values else None
        floor = [
            out[k] for k in ("unrelated_psnr_mean", "mean_image_psnr_mean") if out[k] is not None
        ]
        out["floor_psnr"] = max(floor) if floor else None
        out["membership_meaningful"] = self.membership_meaningful
        return out


MEMBERSHIP_SANITY_AUC = 0.6


def audit_task(config: Config, data: FederatedData) -> ClassificationTask:
    """The run's classification task, for 2D images only (the attack reconstructs images)."""
    x = data.central_test.x
    if x.ndim != 4:
        raise ConfigError(
            "flmi audit reconstructs 2D images; this run's data is not 2D images "
            f"(shape {tuple(x.shape[1:])})"
        )
    return ClassificationTask(
        num_classes=config.task.num_classes,
        in_channels=int(x.shape[1]),
        spatial_dims=2,
        positive_label=config.task.positive_label,
        model=config.task.model,
        width=config.task.width,
        augment=False,
        dtype=config.task.dtype,
    )


@dataclass(frozen=True)
class AttackedRound:
    """The round attacked, and what the server sent in it.

    Parameters
    ----------
    rnd
        The round (the finished run's last).
    sent
        The global model the server sent in it (round ``rnd - 1``'s result).
    state
        The strategy state the server configured the round from (``None``:
        round 1, the initial state).
    """

    rnd: int
    sent: Params
    state: StateRecord | None


def attacked_round(*, run_dir: Path, initial: Params) -> AttackedRound:
    """The run's last round and the global model the server sent in it, from its checkpoints.

    ``initial`` is the seeded starting model, sent in round 1.
    """
    run = RunDir(path=run_dir)
    latest = run.latest_checkpoint(arm=Arm.FEDERATED)
    if latest is None:
        raise ConfigError(
            f"audit: {run_dir} holds no checkpoint of the federated arm; "
            "audit a finished run directory, or pass a config to run first"
        )
    last = latest[0]
    if last == 1:
        return AttackedRound(rnd=1, sent=initial, state=None)
    before = run.checkpoint(arm=Arm.FEDERATED, rnd=last - 1)
    if before is None:
        raise ConfigError(
            f"audit: {run_dir} no longer holds round {last - 1}'s checkpoint, the model the "
            f"server sent in round {last}"
        )
    _, params, state = before
    return AttackedRound(rnd=last, sent=params, state=state)


def run_audit(
    *,
    config: Config,
    run_dir: Path,
    out: Path,
    site: str | None = None,
    settings: AttackSettings | None = None,
) -> AuditReport:
    """Attack one site's update of the run's last round as its server would; write the report.

    Parameters
    ----------
    config
        The run's configuration (its batch size, local steps, optimiser and DP are used).
    run_dir
        The finished run: its checkpoints give the global model the server sent
        in the last round, its final model is attacked for membership.
    out
        Folder for ``audit.json`` and ``reconstructions.png``.
    site
        The attacked site (default: the first by name).
    settings
        The attack's own settings.
    """
    settings = settings or AttackSettings()
    torch.set_num_threads(config.runtime.torch_threads)
    device = resolve_device(config.runtime.device)
    data = load_data(config)
    task = audit_task(config, data)
    name = site or sorted(data.sites)[0]
    if name not in data.sites:
        raise ConfigError(f"audit --site {name}: no such site; the sites are {sorted(data.sites)}")
    model = task.build_model(seed=config.federation.seed).to(device)
    target = attacked_round(run_dir=run_dir, initial=params_copy(model))
    found = _invert_round(
        config=config,
        data=data,
        task=task,
        model=model,
        victim=name,
        target=target,
        settings=settings,
        device=device,
    )
    found_members = _run_final_membership(
        config=config,
        run_dir=run_dir,
        task=task,
        model=model,
        data=data,
        settings=settings,
        device=device,
    )
    reference, members = reference_membership(
        config=config, task=task, data=data, settings=settings, device=device
    )
    from_updates = _run_update_membership(
        config=config,
        run_dir=run_dir,
        data=data,
        target=target,
        settings=settings,
        device=device,
    )
    report = _audit_report(
        config=config,
        site=name,
        found=found,
        final_members=found_members,
        attacked_round=target.rnd,
        reference=(reference, members),
        settings=settings,
    )
    report = _with_update_membership(report, from_updates)
    _write_audit(report, found, out)
    return report


def _with_update_membership(
    report: AuditReport, from_updates: UpdateMembership | None
) -> AuditReport:
    """``report`` with the update-based attack's figures (unchanged without them)."""
    if from_updates is None:
        return report
    return dataclasses.replace(
        report,
        update_membership_auc=from_updates.auc,
        update_membership_calibrated_auc=from_updates.calibrated_auc,
        replay_error=from_updates.replay_error,
    )


def _write_audit(report: AuditReport, found: _Inversions, out: Path) -> None:
    """Write ``audit.json`` and ``reconstructions.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    save_pictures(found.shown, out / "reconstructions.png", title=_title(report))


def _run_final_membership(
    *,
    config: Config,
    run_dir: Path,
    task: ClassificationTask,
    model: torch.nn.Module,
    data: FederatedData,
    settings: AttackSettings,
    device: torch.device,
) -> _Membership | None:
    """Membership inference on the run's final model (``None`` when the run kept none)."""
    if not (run_dir / MODEL).is_file():
        return None
    final = load_tensors(path=run_dir / MODEL)[0]
    return _final_membership(
        config=config,
        task=task,
        model=model,
        data=data,
        final=final,
        settings=settings,
        device=device,
    )


def _run_update_membership(
    *,
    config: Config,
    run_dir: Path,
    data: FederatedData,
    target: AttackedRound,
    settings: AttackSettings,
    device: torch.device,
) -> UpdateMembership | None:
    """The update-based attack on ``target.rnd`` (``None`` unless the server saw plain updates)."""
    if config.privacy.aggregation != "plain":
        return None
    latest = RunDir(path=run_dir).latest_checkpoint(arm=Arm.FEDERATED)
    return update_membership(
        config=config,
        data=data,
        target=target,
        recorded=None if latest is None else latest[1],
        settings=settings,
        device=device,
    )


def _audit_report(
    *,
    config: Config,
    site: str,
    found: _Inversions,
    final_members: _Membership | None,
    attacked_round: int,
    reference: tuple[float, int],
    settings: AttackSettings,
) -> AuditReport:
    """The audit's figures in one report (membership ones ``None`` without a final model)."""
    return AuditReport(
        site=site,
        batch_size=found.batch,
        local_steps=found.steps,
        privacy={k: v for k, v in dataclasses.asdict(config.privacy).items() if v is not None},
        psnr=found.psnr,
        ssim=found.ssim,
        unrelated_psnr=found.unrelated_psnr,
        unrelated_ssim=found.unrelated_ssim,
        mean_image_psnr=found.mean_image_psnr,
        mean_image_ssim=found.mean_image_ssim,
        label_recovery_rate=found.labels_right / max(found.attacked, 1),
        membership_auc=None if final_members is None else final_members.auc,
        aggregation=config.privacy.aggregation,
        sites_in_update=found.sites_in_update,
        images_reconstructed=found.reconstructed,
        attacked_round=attacked_round,
        reference_membership_auc=reference[0],
        reference_members=reference[1],
        calibrated_membership_auc=None if final_members is None else final_members.calibrated,
        shadow_models=settings.shadow_models
        if final_members is not None and final_members.calibrated is not None
        else 0,
        member_loss=None if final_members is None else final_members.member_loss,
        nonmember_loss=None if final_members is None else final_members.nonmember_loss,
    )


@dataclass
class _Inversions:
    """What the inversion of every attacked batch gave (filled batch by batch)."""

    batch: int
    steps: int = 0
    sites_in_update: int = 1
    reconstructed: int = 0
    attacked: int = 0
    labels_right: int = 0
    psnr: list[float] = dataclasses.field(default_factory=list)
    ssim: list[float] = dataclasses.field(default_factory=list)
    unrelated_psnr: list[float] = dataclasses.field(default_factory=list)
    unrelated_ssim: list[float] = dataclasses.field(default_factory=list)
    mean_image_psnr: list[float] = dataclasses.field(default_factory=list)
    mean_image_ssim: list[float] = dataclasses.field(default_factory=list)
    shown: list[tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=list)


def _audit_strategy(config: Config, data: FederatedData) -> Strategy[Any]:
    """The run's strategy, wrapped in its privacy settings, as the server built it."""
    f = config.federation
    return with_privacy(
        build_strategy(
            name=config.strategy.name,
            hparams=training_hparams(config),
            options=config.strategy.options,
            context=BuildContext(
                num_sites=len(data.sites),
                seed=f.seed,
                site_groups=site_groups(config),
                site_names=tuple(sorted(data.sites)),
            ),
        ),
        privacy=config.privacy,
        rounds=f.rounds,
        sites_per_round=len(data.sites),
        seed=f.seed,
    )


def _round_instructions(
    config: Config, data: FederatedData, target: AttackedRound
) -> Mapping[str, TrainInstruction]:
    """What the server sent every site in ``target.rnd``, rebuilt from the run's strategy state."""
    strategy = _audit_strategy(config, data)
    state = (
        strategy.init(target.sent)
        if target.state is None
        else strategy.state_from_record(target.state)
    )
    return strategy.configure(target.rnd, state, sorted(data.sites))


def _invert_round(
    *,
    config: Config,
    data: FederatedData,
    task: ClassificationTask,
    model: torch.nn.Module,
    victim: str,
    target: AttackedRound,
    settings: AttackSettings,
    device: torch.device,
) -> _Inversions:
    """Invert the victim's update of ``target.rnd`` on ``settings.batches`` batches."""
    names = sorted(data.sites)
    instructions = _round_instructions(config, data, target)
    lr = float(instructions[victim].hparams["lr"])
    rng = np.random.default_rng(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    trainable = [n for n, _ in model.named_parameters()]
    bias = next(n for n in sorted(head_names(model)) if n.endswith("bias"))
    found = _Inversions(batch=min(config.federation.batch_size, len(data.sites[victim].train)))
    for b in range(settings.batches):
        # Every site's batch is drawn under every setting, so each attacks the same images.
        batches = {s: _pick(data.sites[s].train, found.batch, rng) for s in names}
        view = server_view(
            config=config,
            task=task,
            batches={s: data.sites[s].train.take(c) for s, c in batches.items()},
            victim=victim,
            instructions=instructions,
            sent=target.sent,
            seed=config.federation.seed + b,
            device=device,
        )
        found.steps, found.sites_in_update = view.update.num_steps, view.sites
        count = sum(len(batches[s]) for s in view.summed)
        gradient = observed_gradient(sent=target.sent, update=view.update, lr=lr, names=trainable)
        labels = recover_labels(gradient[bias], count)
        load_params(model, target.sent, where="audit")
        images = invert(
            task=task,
            model=model,
            target=gradient,
            labels=labels,
            shape=(count, *data.sites[victim].train.x.shape[1:]),
            settings=settings,
            generator=generator,
            device=device,
        )
        _score(found, data.sites[victim].train.take(batches[victim]), images, labels, data, rng)
    return found


@dataclass(frozen=True)
class UpdateMembership:
    """The update-based membership attack on one round (see :mod:`flmi.privacy.update_membership`).

    ``auc`` and ``calibrated_auc`` map each site to the attack's AUC on its
    re-derived update (its training images against label-matched held-out
    images; calibrated: against the other sites' updates too).
    ``replay_error`` is the largest gap between the re-derived updates,
    aggregated, and the run's recorded model of the round (0 up to rounding:
    they are the updates the server held; ``None`` when not recorded).
    """

    rnd: int
    auc: dict[str, float]
    calibrated_auc: dict[str, float]
    members: dict[str, int]
    nonmembers: int
    replay_error: float | None


def update_membership(
    *,
    config: Config,
    data: FederatedData,
    target: AttackedRound,
    recorded: Params | None,
    settings: AttackSettings,
    device: torch.device,
) -> UpdateMembership:
    """Membership inference from every site's update of ``target.rnd``, as the server runs it.

    The updates are re-derived through the site code path from the model
    the server sent (:mod:`flmi.privacy.rederive`); each candidate's
    gradient at that model is scored against them. Non-members are every
    held-out image (the central test set and the sites' test splits).
    """
    from flmi.tasks.registry import build_task

    names = sorted(data.sites)
    instructions = _round_instructions(config, data, target)
    run_task = build_task(config, data)
    updates = rederive_updates(
        config=config, data=data, task=run_task, instructions=instructions, device=device
    )
    replay = (
        None
        if recorded is None
        else replay_error(sent=target.sent, updates=updates, recorded=recorded)
    )
    task = audit_task(config, data)
    model = task.build_model(seed=config.federation.seed).to(device)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    deltas = {s: flat_update(u.delta, trainable) for s, u in updates.items()}
    rng = np.random.default_rng(settings.seed)
    held_out = concat_splits(
        [data.central_test, *(getattr(data.sites[s], Split.TEST.value) for s in names)]
    )
    held_out = _subsample(held_out, settings.candidates, rng)
    held_grads = example_gradients(
        task=task, model=model, sent=target.sent, data=held_out, names=trainable, device=device
    )
    auc, calibrated, counts = _site_update_aucs(
        task=task,
        model=model,
        data=data,
        target=target,
        deltas=deltas,
        held_out=(held_out, held_grads),
        names=trainable,
        settings=settings,
        rng=rng,
        device=device,
    )
    return UpdateMembership(
        rnd=target.rnd,
        auc=auc,
        calibrated_auc=calibrated,
        members=counts,
        nonmembers=len(held_out),
        replay_error=replay,
    )


def _site_update_aucs(
    *,
    task: ClassificationTask,
    model: torch.nn.Module,
    data: FederatedData,
    target: AttackedRound,
    deltas: Mapping[str, np.ndarray],
    held_out: tuple[ArraySplit, np.ndarray],
    names: Sequence[str],
    settings: AttackSettings,
    rng: np.random.Generator,
    device: torch.device,
) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """Each site's plain and calibrated AUC, and member count, against the held-out gradients.

    ``held_out`` is the non-member split and its per-example gradients;
    sites whose AUC is undefined (a label without both kinds) are left out.
    """
    split, held_grads = held_out
    auc: dict[str, float] = {}
    calibrated: dict[str, float] = {}
    counts: dict[str, int] = {}
    for s in sorted(deltas):
        members = _subsample(data.sites[s].train, settings.candidates, rng)
        grads = np.concatenate(
            [
                example_gradients(
                    task=task,
                    model=model,
                    sent=target.sent,
                    data=members,
                    names=names,
                    device=device,
                ),
                held_grads,
            ]
        )
        is_member = np.concatenate([np.ones(len(members)), np.zeros(len(split))])
        labels = np.concatenate([np.asarray(members.y), np.asarray(split.y)])
        plain = label_matched_auc(
            scores=alignment(grads, deltas[s]), is_member=is_member, labels=labels
        )
        cal = label_matched_auc(
            scores=calibrated_alignment(grads, deltas, s), is_member=is_member, labels=labels
        )
        if plain is not None and cal is not None:
            auc[s], calibrated[s], counts[s] = plain, cal, len(members)
    return auc, calibrated, counts


def _subsample(split: ArraySplit, limit: int, rng: np.random.Generator) -> ArraySplit:
    """At most ``limit`` examples of ``split`` (all of them for 0)."""
    if limit == 0 or len(split) <= limit:
        return split
    return split.take(np.sort(rng.choice(len(split), size=limit, replace=False)))


def _score(
    found: _Inversions,
    targets: ArraySplit,
    images: np.ndarray,
    labels: Sequence[int],
    data: FederatedData,
    rng: np.random.Generator,
) -> None:
    """Score one batch's reconstructions, and as the floor as many unrelated images.

    The floor goes through the same matching as the reconstructions: as many
    images of the central test set (no site's training image) as were
    reconstructed, each original paired with its best-matching one, so the
    attacker's best-case pairing is no advantage over it.
    """
    found.reconstructed += len(images)
    found.attacked += len(targets)
    pairing = match_reconstructions(targets.x, images)
    truth = sorted(int(v) for v in targets.y)
    guessed = [labels[i] for i in pairing]
    found.labels_right += sum(min(guessed.count(c), truth.count(c)) for c in set(truth))
    pool = data.central_test.x
    drawn = rng.choice(len(pool), size=len(images), replace=len(pool) < len(images))
    unrelated = pool[drawn]
    floor = match_reconstructions(targets.x, unrelated)
    for j, (i, u) in enumerate(zip(pairing, floor, strict=True)):
        p, s = image_scores(images[i], targets.x[j])
        found.psnr.append(p)
        found.ssim.append(s)
        p, s = image_scores(unrelated[u], targets.x[j])
        found.unrelated_psnr.append(p)
        found.unrelated_ssim.append(s)
        p, s = image_scores(pool.mean(axis=0), targets.x[j])
        found.mean_image_psnr.append(p)
        found.mean_image_ssim.append(s)
        found.shown.append((targets.x[j], images[i]))


@dataclass(frozen=True)
class _Membership:
    """The final model's membership figures (see :class:`AuditReport`)."""

    auc: float
    calibrated: float | None
    member_loss: float
    nonmember_loss: float


def _final_membership(
    *,
    config: Config,
    task: ClassificationTask,
    model: torch.nn.Module,
    data: FederatedData,
    final: Params,
    settings: AttackSettings,
    device: torch.device,
) -> _Membership:
    """Membership inference on the run's final model: every site's training examples vs test.

    The loss-threshold AUC, the shadow-calibrated one (``None`` without
    shadow models) and the mean losses of both groups.
    """
    names = sorted(data.sites)
    members = concat_splits([data.sites[s].train for s in names])
    others = concat_splits([getattr(data.sites[s], Split.TEST.value) for s in names])
    load_params(model, final, where="the run's final model")
    candidates = concat_splits([members, others])
    target = example_losses(task=task, model=model, data=candidates, device=device)
    is_member = np.concatenate([np.ones(len(members)), np.zeros(len(others))])
    from sklearn.metrics import roc_auc_score

    calibrated = None
    if settings.shadow_models > 0:
        shadow = shadow_losses(
            config=config, task=task, candidates=candidates, settings=settings, device=device
        )
        calibrated = calibrated_auc(target_losses=target, shadow_losses=shadow, is_member=is_member)
    return _Membership(
        auc=float(roc_auc_score(is_member, -target)),
        calibrated=calibrated,
        member_loss=float(target[: len(members)].mean()),
        nonmember_loss=float(target[len(members) :].mean()),
    )


def reference_membership(
    *,
    config: Config,
    task: ClassificationTask,
    data: FederatedData,
    settings: AttackSettings,
    device: torch.device,
) -> tuple[float, int]:
    """The attack's sanity check: membership AUC on a model overfit without DP.

    A fresh model trains through the site code path, without DP and with the
    run's optimiser, learning rate and batch size, for
    ``settings.reference_epochs`` epochs on ``settings.reference_members``
    training examples (drawn from every site); the attack then scores those
    against as many test examples. An attack that cannot separate these
    cannot measure privacy on the run.

    Returns
    -------
    tuple
        The AUC and the number of members.
    """
    pooled_train = concat_splits([data.sites[s].train for s in sorted(data.sites)])
    pooled_test = data.central_test
    rng = np.random.default_rng(settings.seed)
    n = min(settings.reference_members, len(pooled_train), len(pooled_test))
    members = pooled_train.take(np.sort(rng.choice(len(pooled_train), size=n, replace=False)))
    others = pooled_test.take(np.sort(rng.choice(len(pooled_test), size=n, replace=False)))
    model = train_centrally(
        config=config,
        task=task,
        train=members,
        epochs=settings.reference_epochs,
        seed=settings.seed,
        device=device,
    )
    auc = membership_auc(task=task, model=model, members=members, others=others, device=device)
    return auc, n


def train_centrally(
    *,
    config: Config,
    task: ClassificationTask,
    train: ArraySplit,
    epochs: int,
    seed: int,
    device: torch.device,
) -> torch.nn.Module:
    """A fresh model trained on ``train`` through the site code path, without DP.

    The run's optimiser, learning rate, weight decay and batch size, for
    ``epochs`` epochs; the model comes back with the trained weights loaded.
    """
    model = task.build_model(seed=seed).to(device)
    hparams = {
        **training_hparams(config),
        HParam.LOCAL_EPOCHS: epochs,
        HParam.LOCAL_STEPS: 0,
    }
    site = Site(
        name="reference",
        data=SiteSplits(train=train, val=train, test=train),
        task=task,
        seed=seed,
        device=device,
        model=model,
    )
    sent = params_copy(model)
    update = site.train(TrainInstruction(rnd=1, params=sent, hparams=hparams, extras={}))
    if isinstance(update, ClientError):
        raise ConfigError(f"audit: a reference model did not train: {update.message}")
    trained = (
        update.params if update.kind is UpdateKind.FULL else add_scaled(sent, update.params, 1.0)
    )
    load_params(model, trained, where="the reference model")
    return model


def shadow_losses(
    *,
    config: Config,
    task: ClassificationTask,
    candidates: ArraySplit,
    settings: AttackSettings,
    device: torch.device,
) -> np.ndarray:
    """Each candidate's loss under a shadow model that did not train on it.

    The candidates (members and non-members alike: the attacker does not
    know which is which) are shuffled into ``settings.shadow_models`` folds;
    shadow ``k`` trains (:func:`train_centrally`, ``settings.shadow_epochs``
    epochs) on every fold but ``k`` and scores fold ``k``. The attacker so
    needs the candidates' images and labels, as any membership test does,
    and nothing of the run but its training settings.
    """
    folds = np.random.default_rng(settings.seed).permutation(len(candidates)) % (
        settings.shadow_models
    )
    out = np.zeros(len(candidates), dtype=np.float64)
    for k in range(settings.shadow_models):
        model = train_centrally(
            config=config,
            task=task,
            train=candidates.take(np.flatnonzero(folds != k)),
            epochs=settings.shadow_epochs,
            seed=settings.seed + 1 + k,
            device=device,
        )
        held_out = np.flatnonzero(folds == k)
        out[held_out] = example_losses(
            task=task, model=model, data=candidates.take(held_out), device=device
        )
    return out


@dataclass(frozen=True)
class ServerView:
    """What the server holds after round 1: one update, and how many sites it sums.

    Parameters
    ----------
    update
        The attacked site's own update (plain aggregation) or the aggregate the
        secure protocol recovered (a delta: the sites' linear combination).
    sites
        How many sites' updates it holds (the protocol tells the server this count).
    summed
        The sites in it, for scoring only: the server is not told who they are.
    """

    update: ClientUpdate
    sites: int
    summed: tuple[str, ...]


def _pick(train: ArraySplit, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of one batch of ``train`` (all of it if smaller)."""
    return rng.choice(len(train), size=min(batch, len(train)), replace=False)


def server_view(
    *,
    config: Config,
    task: ClassificationTask,
    batches: dict[str, ArraySplit],
    victim: str,
    instructions: Mapping[str, TrainInstruction],
    sent: Params,
    seed: int,
    device: torch.device,
) -> ServerView:
    """Round 1 as the server sees it: each site trains on its batch through the real protocol.

    Under plain aggregation only the victim matters and its update is returned.
    Under ``"secagg"`` or ``"he"`` every site trains and the configured
    protocol runs in process exactly as in a run (each site's update held
    back, validated, quantised and masked, or encrypted); the server's share is
    the recovered aggregate.
    """

    def site(s: str) -> Site:
        splits = SiteSplits(train=batches[s], val=batches[s], test=batches[s])
        return Site(name=s, data=splits, task=task, seed=seed, device=device)

    if config.privacy.aggregation == "plain":
        update = site(victim).train(instructions[victim])
        if isinstance(update, ClientError):
            raise ConfigError(f"audit: the site refused to train: {update.message}")
        return ServerView(update=update, sites=1, summed=(victim,))
    names = sorted(batches)
    runtime = InProcessRuntime(
        sites=protect_sites(config.privacy, [site(s) for s in names], federation=config.federation)
    )
    secure = build_secure(config.privacy, strategy=config.strategy.name, site_names=names)
    assert secure is not None
    replies = runtime.train({s: instructions[s] for s in names})
    outcome = secure.aggregate(rnd=1, exchange=runtime, replies=replies, reference=sent)
    if outcome.update is None or victim in outcome.errors:
        why = "; ".join(f"{s}: {e.message}" for s, e in sorted(outcome.errors.items()))
        raise ConfigError(
            f"audit: privacy.aggregation = '{config.privacy.aggregation}' gave the server no "
            f"aggregate holding site '{victim}' ({why or 'no reason given'})"
        )
    summed = tuple(s for s in names if s not in outcome.errors)
    return ServerView(update=outcome.update, sites=outcome.contributors, summed=summed)


def _title(report: AuditReport) -> str:
    dp = report.privacy.get("dp", "none")
    held = (
        f"{report.aggregation} sum of {report.sites_in_update} sites"
        if report.aggregation != "plain"
        else "its own update"
    )
    return (
        f"site {report.site}, batch {report.batch_size}, {report.local_steps} local step(s), "
        f"dp = {dp}, server holds {held}: PSNR {np.mean(report.psnr):.1f} dB "
        f"(unrelated image {np.mean(report.unrelated_psnr):.1f} dB)"
    )


def save_pictures(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]], path: Path, *, title: str
) -> None:
    """Originals (top row) above their reconstructions (bottom row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(pairs)[:8]
    fig, axes = plt.subplots(2, len(shown), figsize=(1.6 * len(shown) + 0.4, 3.6), squeeze=False)
    for k, (original, reconstruction) in enumerate(shown):
        for row, image in enumerate((original, reconstruction)):
            ax = axes[row][k]
            picture = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
            ax.imshow(np.clip(picture, 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][k].set_title(f"#{k + 1}", fontsize=8)
    axes[0][0].set_ylabel("original", fontsize=8)
    axes[1][0].set_ylabel("reconstructed", fontsize=8)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
