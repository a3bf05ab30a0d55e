"""The local training loop every task shares: seeded batches, optimiser, hooks."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from flmi.core.keys import Metric
from flmi.tasks.base import FitHooks, FitResult, LocalTraining, PrivateSession
from flmi.tasks.batches import batch_indices

LossFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
BatchTransform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def train_local(
    *,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    training: LocalTraining,
    generator: torch.Generator,
    device: torch.device,
    loss_fn: LossFn,
    transform: BatchTransform | None = None,
    hooks: FitHooks | None = None,
) -> FitResult:
    """Run one round of local training in place and report steps and mean loss.

    Parameters
    ----------
    model
        The model, already holding the weights to start from.
    x, y
        The site's training inputs and targets (CPU tensors).
    training
        Learning rate, epochs or steps, batch size and optimiser.
    generator
        The site's generator for this round: batch order and augmentation.
    device
        Where the batches are moved.
    loss_fn
        ``loss_fn(model, xb, yb)`` returns the batch's mean loss.
    transform
        Optional augmentation applied to each input batch.
    hooks
        Algorithm hooks: a penalty added to the loss (FedProx) and a gradient
        correction before each optimiser step (SCAFFOLD), or DP-SGD, which
        trains through the session it starts (Opacus: per-example clipping,
        noise, Poisson-sampled batches).
    """
    model.train()
    module, optimizer, batches, session = _optimizer_and_batches(
        model=model,
        num_examples=int(y.shape[0]),
        training=training,
        generator=generator,
        hooks=hooks,
    )
    steps, loss_sum, seen = 0, 0.0, 0
    try:
        for index in batches:
            xb = x[index]
            if transform is not None:
                xb = transform(xb, generator)
            xb, yb = xb.to(device, non_blocking=True), y[index].to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(module, xb, yb)
            objective = loss
            if hooks is not None and hooks.penalty is not None:
                objective = loss + hooks.penalty(model)
            objective.backward()  # type: ignore[no-untyped-call]
            if hooks is not None and hooks.before_step is not None:
                hooks.before_step(model)
            optimizer.step()
            steps += 1
            if len(index):  # a Poisson-sampled batch may be empty: noise, but no loss
                loss_sum += float(loss.detach()) * len(index)
                seen += len(index)
    finally:
        if session is not None:
            session.close()
    mean_loss = loss_sum / seen if seen else float("nan")
    return FitResult(num_steps=steps, metrics={Metric.LOSS: mean_loss})


def _optimizer_and_batches(
    *,
    model: torch.nn.Module,
    num_examples: int,
    training: LocalTraining,
    generator: torch.Generator,
    hooks: FitHooks | None,
) -> tuple[torch.nn.Module, torch.optim.Optimizer, Iterable[torch.Tensor], PrivateSession | None]:
    """The module to run, its optimiser and the round's index batches.

    Plain training runs ``model`` on seeded shuffled batches; DP-SGD
    (``hooks.private``) starts a session whose module, optimiser and
    Poisson-sampled batches replace them; the caller closes that session.
    """
    optimizer = training.make_optimizer(model)
    module = model
    batches: Iterable[torch.Tensor] = batch_indices(
        n=num_examples,
        batch_size=training.batch_size,
        local_epochs=training.local_epochs,
        local_steps=training.local_steps,
        generator=generator,
    )
    session: PrivateSession | None = None
    if hooks is not None and hooks.private is not None:
        session = hooks.private.start(
            model=model,
            optimizer=optimizer,
            num_examples=num_examples,
            training=training,
            generator=generator,
        )
        module, optimizer, batches = session.module, session.optimizer, session.batches()
    return module, optimizer, batches, session
