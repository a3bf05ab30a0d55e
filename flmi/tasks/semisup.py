"""Local training with unlabeled images: FixMatch or thresholded pseudo-labels.

A site whose training images are partly or wholly without labels still helps
the federation (FedMatch, Jeong et al., ICLR 2021; FedPerl, Bdair et al.,
MICCAI 2021). Each step it takes a batch of unlabeled images and

- ``"fixmatch"`` (Sohn et al., NeurIPS 2020): predicts a weakly augmented
  view; where the top class probability reaches ``pseudo_label_threshold``,
  that class becomes the target of a strongly augmented view of the same image;
- ``"pseudo_label"`` (Lee, ICML-W 2013, with a confidence threshold): the
  confident prediction on the weak view becomes the target of that same view.

The unlabeled loss, cross-entropy averaged over the whole unlabeled batch with
the unconfident images masked out, is weighted by ``unlabeled_loss_weight``
and added to the supervised loss of a labeled batch when the site has labels.
No gradient flows through the targets.

Two options shape the pseudo-labels:

- ``pseudo_label_teacher = "global"``: a frozen copy of the global model the
  site received this round, in evaluation mode, predicts the targets instead
  of the moving local model. Within a round the targets then cannot drift with
  the site's own mistakes (confirmation bias), and every site of the round
  labels with the same model, which holds what the labeled sites taught it
  (the "global teacher" of federated semi-supervised methods such as SemiFL,
  Diao et al., NeurIPS 2022, and FedMatch's inter-client consistency).
- ``distribution_alignment``: the teacher's class probabilities are divided
  by their mean over the site's unlabeled images, computed once at the start
  of the round without augmentation, and renormalised (ReMixMatch's
  distribution alignment, Berthelot et al., ICLR 2020, with a uniform target
  since an unlabeled site knows no class prior). A model that calls most
  images benign then no longer hands out mostly "benign" pseudo-labels: the
  confident share of each class follows how far an image stands from the
  site's average prediction.
- ``soft_pseudo_labels``: the target of a confident image is the teacher's
  whole (aligned) class distribution, with cross-entropy against soft targets,
  rather than its top class (the soft targets of consistency training such as
  UDA, Xie et al., NeurIPS 2020, and Mean Teacher): an image the teacher finds
  70 % benign does not teach "100 % benign". With a threshold of 0 every
  unlabeled image then counts, weighted by nothing but the teacher's doubt.
- ``pseudo_label_selection = "class_quota"`` replaces the confidence
  threshold by a quota per class, chosen once a round
  (:func:`class_quota_selection`): the teacher (the received model, frozen)
  predicts every unlabeled image of the site without augmentation; its mean
  prediction is its estimate of the class prior; each image is assigned the
  class of its aligned prediction, and class ``c`` keeps its
  ``round(pseudo_label_quota * N * prior[c])`` most confident images. A
  single threshold on a model that favours the majority class either hands
  out mostly majority pseudo-labels or, after alignment, hardly any; a
  class-wise selection (after FlexMatch's class-wise thresholds, Zhang et
  al., NeurIPS 2021) keeps a steady share of both. The targets stay fixed for
  the round (a global teacher's labels, as in SemiFL).

A step with nothing to learn from (no
labeled batch, no confident image) is skipped rather than taken: with weight
decay or Adam, a step on a zero loss still moves the weights, and a site
without labels would otherwise shrink the model round after round before it
is ever confident.

One round is ``local_steps`` steps, or ``local_epochs`` passes over the larger
of the two sets (labeled, unlabeled), the smaller one cycling with a fresh
shuffle each pass. Batches, augmentations and targets come from the site's
generator for the round, so a round is reproducible and a resumed run repeats
it bit for bit.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from flmi.core.keys import (
    Metric,
    PseudoLabelSelection,
    PseudoLabelTeacher,
    SemiSupervised,
    TrainMetric,
)
from flmi.data.arrays import ArraySplit
from flmi.tasks.augment import random_flip_shift
from flmi.tasks.base import FitHooks, FitResult, LocalTraining
from flmi.tasks.batches import batch_indices
from flmi.tasks.strong_augment import strong_augment

#: ``(logits, targets) -> per-example loss``.
PerExampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``logits -> class probabilities (N, C)``.
ProbsFn = Callable[[torch.Tensor], torch.Tensor]
BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@runtime_checkable
class SemiSupervisedTask(Protocol):
    """A task that can also learn from unlabeled images."""

    def fit_semi_supervised(
        self,
        *,
        model: torch.nn.Module,
        labeled: ArraySplit,
        unlabeled: np.ndarray,
        training: LocalTraining,
        generator: torch.Generator,
        device: torch.device,
        hooks: FitHooks | None = None,
    ) -> FitResult:
        """Train ``model`` in place on labeled and unlabeled images."""
        ...


def _weak(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return random_flip_shift(x, generator=generator)


def _strong(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return strong_augment(x, generator=generator)


def _cycle(
    n: int, batch_size: int, steps: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    return batch_indices(
        n=n, batch_size=batch_size, local_epochs=1, local_steps=steps, generator=generator
    )


def frozen_teacher(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of ``model`` in evaluation mode: the round's global teacher."""
    teacher = copy.deepcopy(model)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def predict_probs(
    *,
    net: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
    probs_fn: ProbsFn,
) -> torch.Tensor:
    """The class probabilities of ``net`` for every image (evaluation mode, no augmentation).

    ``net`` is put back in the mode it was in. Returns an ``(N, C)`` tensor on ``device``.
    """
    if int(images.shape[0]) < 1:
        raise ValueError("predicting pseudo-labels needs at least one image")
    was_training = net.training
    net.eval()
    parts = [
        probs_fn(net(images[start : start + batch_size].to(device, non_blocking=True)))
        for start in range(0, int(images.shape[0]), batch_size)
    ]
    net.train(was_training)
    return torch.cat(parts)


def mean_prediction(
    *,
    net: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int,
    device: torch.device,
    probs_fn: ProbsFn,
) -> torch.Tensor:
    """The mean class probabilities of ``net`` over ``images`` (evaluation mode, no augmentation).

    ``net`` is put back in the mode it was in. Returns a ``(C,)`` tensor on ``device``.
    """
    probs = predict_probs(
        net=net, images=images, batch_size=batch_size, device=device, probs_fn=probs_fn
    )
    return probs.mean(dim=0)


def class_quota_selection(
    *, probs: torch.Tensor, quota: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, the teacher's most confident images, in numbers set by its class prior.

    Parameters
    ----------
    probs
        ``(N, C)`` teacher probabilities for a site's unlabeled images.
    quota
        Share of the ``N`` images to pseudo-label, in (0, 1].

    Returns
    -------
    tuple of torch.Tensor
        ``(chosen, target)``: a boolean ``(N,)`` mask of the images that get a
        pseudo-label and their ``(N,)`` classes (the aligned top class; for
        images not chosen, meaningless). The prior is the mean of ``probs``;
        each image belongs to the top class of its aligned prediction
        (:func:`align`), and class ``c`` keeps the ``round(quota * N *
        prior[c])`` images it holds with the highest probability of ``c``
        (ties to the lower index), or all it holds when fewer. The result
        depends on ``probs`` alone.
    """
    if not 0.0 < quota <= 1.0:
        raise ValueError(f"pseudo_label_quota must be in (0, 1], got {quota}")
    n, num_classes = int(probs.shape[0]), int(probs.shape[1])
    prior = probs.mean(dim=0)
    target = align(probs, prior).argmax(dim=1)
    chosen = torch.zeros(n, dtype=torch.bool, device=probs.device)
    for c in range(num_classes):
        members = torch.nonzero(target == c).flatten()
        k = min(round(quota * n * float(prior[c])), int(members.numel()))
        if k < 1:
            continue
        order = torch.sort(probs[members, c], descending=True, stable=True).indices
        chosen[members[order[:k]]] = True
    return chosen, target


def align(probs: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Distribution alignment to a uniform target: ``probs / mean``, renormalised per row.

    Classes the teacher never predicts (mean 0) are left at 0.
    """
    scaled = probs / mean.clamp_min(1e-12)
    return scaled / scaled.sum(dim=1, keepdim=True).clamp_min(1e-12)


def soft_cross_entropy(
    *, logits: torch.Tensor, targets: torch.Tensor, probs_fn: ProbsFn
) -> torch.Tensor:
    """Per-example cross-entropy of ``probs_fn(logits)`` against target distributions ``(N, C)``."""
    return -(targets * torch.log(probs_fn(logits).clamp_min(1e-12))).sum(dim=1)


def train_semi_supervised(
    *,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    unlabeled: torch.Tensor,
    training: LocalTraining,
    generator: torch.Generator,
    device: torch.device,
    loss_fn: PerExampleLoss,
    probs_fn: ProbsFn,
    transform: BatchTransform | None = None,
    hooks: FitHooks | None = None,
) -> FitResult:
    """One round of semi-supervised local training, in place.

    Parameters
    ----------
    model
        The model, holding the weights to start from.
    x, y
        Labeled training images and labels (CPU tensors; may be empty).
    unlabeled
        Unlabeled training images (CPU tensor, at least one).
    training
        Local-training settings, with ``semi_supervised`` set to ``"fixmatch"``
        or ``"pseudo_label"``.
    generator
        The site's generator for this round.
    device
        Where the batches are moved.
    loss_fn
        Per-example loss of logits against integer targets.
    probs_fn
        Class probabilities from logits.
    transform
        Augmentation of the labeled batches (as in supervised training).
    hooks
        Algorithm hooks (FedProx's penalty, SCAFFOLD's correction).

    Returns
    -------
    FitResult
        Steps taken, and the metrics: ``loss`` (supervised, only when the
        site has labels), ``unlabeled_loss``, ``pseudo_label_rate`` (share of
        unlabeled draws confident enough to be used), ``num_labeled`` and
        ``num_unlabeled`` (the unlabeled images that got a pseudo-label at
        least once this round: the ones the site trained on).
    """
    if training.semi_supervised not in (SemiSupervised.FIXMATCH, SemiSupervised.PSEUDO_LABEL):
        raise ValueError(f"semi_supervised = '{training.semi_supervised}' trains no unlabeled data")
    if int(unlabeled.shape[0]) < 1:
        raise ValueError("semi-supervised training needs at least one unlabeled image")
    labeler = _pseudo_labeler(
        model=model, unlabeled=unlabeled, training=training, device=device, probs_fn=probs_fn
    )
    return _train_steps(
        model=model,
        x=x,
        y=y,
        unlabeled=unlabeled,
        labeler=labeler,
        training=training,
        generator=generator,
        device=device,
        loss_fn=loss_fn,
        probs_fn=probs_fn,
        transform=transform,
        hooks=hooks,
    )


@dataclass(frozen=True)
class _PseudoLabeler:
    """The round's pseudo-labels: fixed class-quota labels, or confident predictions of ``net``.

    ``net`` is the frozen global teacher, or the moving local model itself;
    ``fixed`` holds ``(chosen, target, probs)`` for every unlabeled image under
    class-quota selection; ``alignment`` is the mean prediction that
    distribution alignment divides by.
    """

    net: torch.nn.Module
    threshold: float
    probs_fn: ProbsFn
    device: torch.device
    fixed: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None
    alignment: torch.Tensor | None

    def label(
        self, u_index: torch.Tensor, weak: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(chosen, target, probs)`` for the unlabeled batch ``u_index`` (weak view ``weak``)."""
        if self.fixed is not None:
            on_device = u_index.to(self.device)
            return (
                self.fixed[0][u_index].to(self.device),
                self.fixed[1][on_device],
                self.fixed[2][on_device],
            )
        with torch.no_grad():
            probs = self.probs_fn(self.net(weak))
            if self.alignment is not None:
                probs = align(probs, self.alignment)
            confidence, target = probs.max(dim=1)
            chosen = confidence >= self.threshold
        return chosen, target, probs


def _pseudo_labeler(
    *,
    model: torch.nn.Module,
    unlabeled: torch.Tensor,
    training: LocalTraining,
    device: torch.device,
    probs_fn: ProbsFn,
) -> _PseudoLabeler:
    """How this round pseudo-labels: its teacher, and what it computes once at the start."""
    teacher = (
        frozen_teacher(model)
        if training.pseudo_label_teacher == PseudoLabelTeacher.GLOBAL
        else None
    )
    net = teacher if teacher is not None else model
    quota = training.pseudo_label_selection == PseudoLabelSelection.CLASS_QUOTA
    fixed = (
        _class_quota_labels(
            net=net, unlabeled=unlabeled, training=training, device=device, probs_fn=probs_fn
        )
        if quota
        else None
    )
    alignment = (
        mean_prediction(
            net=net,
            images=unlabeled,
            batch_size=training.batch_size,
            device=device,
            probs_fn=probs_fn,
        )
        if training.distribution_alignment and not quota
        else None
    )
    return _PseudoLabeler(
        net=net,
        threshold=training.pseudo_label_threshold,
        probs_fn=probs_fn,
        device=device,
        fixed=fixed,
        alignment=alignment,
    )


def _class_quota_labels(
    *,
    net: torch.nn.Module,
    unlabeled: torch.Tensor,
    training: LocalTraining,
    device: torch.device,
    probs_fn: ProbsFn,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(chosen, target, probs)`` for every unlabeled image, fixed for the round by class quota."""
    all_probs = predict_probs(
        net=net,
        images=unlabeled,
        batch_size=training.batch_size,
        device=device,
        probs_fn=probs_fn,
    )
    fixed_chosen, fixed_target = class_quota_selection(
        probs=all_probs, quota=training.pseudo_label_quota
    )
    soft = align(all_probs, all_probs.mean(dim=0)) if training.distribution_alignment else all_probs
    return (fixed_chosen.cpu(), fixed_target, soft)


@dataclass
class _Tally:
    """Running sums over one round's steps, for its metrics."""

    sup_sum: float = 0.0
    sup_seen: int = 0
    unsup_sum: float = 0.0
    confident: int = 0
    unsup_seen: int = 0
    taken: int = 0

    def metrics(self, *, num_labeled: int, used: torch.Tensor) -> dict[str, float]:
        """The round's metrics; ``loss`` only when a labeled batch was seen."""
        metrics: dict[str, float] = {
            TrainMetric.UNLABELED_LOSS: self.unsup_sum / self.unsup_seen,
            TrainMetric.PSEUDO_LABEL_RATE: self.confident / self.unsup_seen,
            TrainMetric.NUM_LABELED: float(num_labeled),
            TrainMetric.NUM_UNLABELED: float(int(used.sum())),
        }
        if self.sup_seen:
            metrics[Metric.LOSS] = self.sup_sum / self.sup_seen
        return metrics


def _train_steps(
    *,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    unlabeled: torch.Tensor,
    labeler: _PseudoLabeler,
    training: LocalTraining,
    generator: torch.Generator,
    device: torch.device,
    loss_fn: PerExampleLoss,
    probs_fn: ProbsFn,
    transform: BatchTransform | None,
    hooks: FitHooks | None,
) -> FitResult:
    """The round's steps: a labeled batch when there are labels, an unlabeled batch always."""
    n_labeled, n_unlabeled = int(y.shape[0]), int(unlabeled.shape[0])
    passes = math.ceil(max(n_labeled, n_unlabeled) / training.batch_size)
    steps = training.local_steps if training.local_steps > 0 else passes * training.local_epochs
    labeled_batches = (
        _cycle(n_labeled, training.batch_size, steps, generator) if n_labeled else None
    )
    unlabeled_batches = _cycle(n_unlabeled, training.batch_size, steps, generator)
    fixmatch = training.semi_supervised == SemiSupervised.FIXMATCH
    model.train()
    optimizer = training.make_optimizer(model)
    tally = _Tally()
    used = torch.zeros(n_unlabeled, dtype=torch.bool)
    for _ in range(steps):
        objective = torch.zeros((), device=device)
        if labeled_batches is not None:
            index = next(labeled_batches)
            xb = x[index]
            if transform is not None:
                xb = transform(xb, generator)
            xb, yb = xb.to(device, non_blocking=True), y[index].to(device, non_blocking=True)
            sup = loss_fn(model(xb), yb).mean()
            objective = objective + sup
            tally.sup_sum += float(sup.detach()) * len(index)
            tally.sup_seen += len(index)
        u_index = next(unlabeled_batches)
        u = unlabeled[u_index]
        weak = _weak(u, generator).to(device, non_blocking=True)
        chosen, target, probs = labeler.label(u_index, weak)
        mask = chosen.to(weak.dtype)
        view = _strong(u, generator).to(device, non_blocking=True) if fixmatch else weak
        tally.unsup_seen += int(u.shape[0])
        chosen_cpu = chosen.cpu()
        if not bool(chosen_cpu.any()) and labeled_batches is None:
            continue  # nothing to learn from: no step (see the module notes)
        used[u_index[chosen_cpu]] = True
        if training.soft_pseudo_labels:
            per_image = soft_cross_entropy(logits=model(view), targets=probs, probs_fn=probs_fn)
        else:
            per_image = loss_fn(model(view), target)
        unsup = (per_image * mask).mean()
        objective = objective + training.unlabeled_loss_weight * unsup
        tally.unsup_sum += float(unsup.detach()) * u.shape[0]
        tally.confident += int(chosen_cpu.sum())
        _optimizer_step(model=model, optimizer=optimizer, objective=objective, hooks=hooks)
        tally.taken += 1
    return FitResult(num_steps=tally.taken, metrics=tally.metrics(num_labeled=n_labeled, used=used))


def _optimizer_step(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    objective: torch.Tensor,
    hooks: FitHooks | None,
) -> None:
    """Add the hooks' penalty to ``objective``, backpropagate, correct the gradient, step."""
    if hooks is not None and hooks.penalty is not None:
        objective = objective + hooks.penalty(model)
    optimizer.zero_grad(set_to_none=True)
    objective.backward()  # type: ignore[no-untyped-call]
    if hooks is not None and hooks.before_step is not None:
        hooks.before_step(model)
    optimizer.step()
