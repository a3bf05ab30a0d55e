"""Transfer learning: start from local pretrained weights, freeze chosen layers.

Weights come from a local ``.safetensors`` file only (a previous run's
``model.safetensors`` works as it is); nothing is downloaded and nothing
pickled is ever read. Names are the model's ``state_dict`` names; prefixes are
module paths (``"features.0"`` covers ``"features.0.weight"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file

from flmi.core.errors import ConfigError, DataError
from flmi.tasks.base import matches_prefix
from flmi.tasks.torch_params import float_entries


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a local ``.safetensors`` file (never a pickle).

    Raises
    ------
    flmi.core.errors.DataError
        Naming the file and ``task.init_weights`` when it is missing or unreadable.
    """
    if path.suffix != ".safetensors":
        raise DataError(
            f"task.init_weights = '{path}': only .safetensors files are read; "
            "convert the weights to safetensors"
        )
    if not path.is_file():
        raise DataError(
            f"task.init_weights: no such file {path}; give the path of a local .safetensors "
            "file (a previous run's model.safetensors works)"
        )
    try:
        return dict(load_file(str(path)))
    except (OSError, SafetensorError, ValueError) as exc:
        raise DataError(f"task.init_weights: cannot read {path} as safetensors: {exc}") from None


def load_init_weights(*, model: torch.nn.Module, path: Path, skip: Sequence[str] = ()) -> list[str]:
    """Copy pretrained weights from ``path`` into ``model``, except names under ``skip``.

    Every floating-point tensor of the model not under a ``skip`` prefix must
    be in the file with the same shape; a tensor of the file not in the model
    (and not skipped) is refused too, so a file for another network is never
    half-loaded. Floating-point values are cast to the model's dtype.
    Nothing is copied unless everything fits.

    Returns
    -------
    list[str]
        The names loaded, sorted.

    Raises
    ------
    flmi.core.errors.ConfigError
        Naming the first missing, unexpected or mis-shaped tensor and the fix.
    """
    tensors = read_weights(path)
    entries = float_entries(model)
    wanted = sorted(k for k in entries if not matches_prefix(k, skip))
    for name in wanted:
        if name not in tensors:
            raise ConfigError(
                f"task.init_weights: tensor '{name}' of the model is missing from {path}; "
                f"add its prefix to task.init_skip to keep it freshly initialised"
            )
        source, target = tensors[name], entries[name]
        if tuple(source.shape) != tuple(target.shape):
            raise ConfigError(
                f"task.init_weights: tensor '{name}' has shape {list(source.shape)} in {path} "
                f"but {list(target.shape)} in the model; add its prefix to task.init_skip "
                "(for a new head) or check task.model, task.width and task.num_classes"
            )
        if not np.issubdtype(source.dtype, np.floating):
            raise ConfigError(
                f"task.init_weights: tensor '{name}' in {path} is {source.dtype}, "
                "not floating point"
            )
    for name in sorted(tensors):
        if name not in entries and not matches_prefix(name, skip):
            raise ConfigError(
                f"task.init_weights: tensor '{name}' of {path} is not in the model; "
                "the file was made for another network (check task.model and task.width), "
                "or add its prefix to task.init_skip"
            )
    with torch.no_grad():
        for name in wanted:
            target = entries[name]
            target.copy_(torch.from_numpy(np.array(tensors[name], copy=True)).to(target.dtype))
    return wanted


def frozen_names(*, model: torch.nn.Module, prefixes: Sequence[str]) -> list[str]:
    """The model's floating-point tensors under ``prefixes``, checked.

    Raises
    ------
    flmi.core.errors.ConfigError
        When a prefix names no tensor (a typo would otherwise freeze nothing),
        or when nothing would be left to train.
    """
    entries = float_entries(model)
    for prefix in prefixes:
        if not any(matches_prefix(name, [prefix]) for name in entries):
            modules = sorted({name.rsplit(".", 1)[0] for name in entries})
            raise ConfigError(
                f"task.freeze: '{prefix}' names no tensor of the model; "
                f"its layers are: {', '.join(modules)}"
            )
    frozen = sorted(name for name in entries if matches_prefix(name, prefixes))
    trainable = [n for n, _ in model.named_parameters() if n not in frozen]
    if prefixes and not trainable:
        raise ConfigError(
            "task.freeze freezes every trainable tensor of the model: leave at least one "
            "layer (the head, say) out of it"
        )
    return frozen
