"""Zero-copy bridges between a torch module's ``state_dict`` and :data:`Params`.

Only floating-point entries are federated. Integer buffers (BatchNorm's
``num_batches_tracked``, say) are left in the module that owns them: they are
never sent, never averaged and never overwritten by a received model.
"""

from __future__ import annotations

import numpy as np
import torch

from flmi.core.params import Params, check_same_schema


def float_entries(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's floating-point parameters and buffers, by ``state_dict`` name."""
    return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}


def integer_buffer_names(model: torch.nn.Module) -> list[str]:
    """Names of the non-float entries that stay local."""
    return sorted(k for k, v in model.state_dict().items() if not v.is_floating_point())


NORM_LAYERS: tuple[type[torch.nn.Module], ...] = (
    torch.nn.modules.batchnorm._NormBase,  # BatchNorm and InstanceNorm, 1D/2D/3D
    torch.nn.GroupNorm,
    torch.nn.LayerNorm,
)


def normalisation_names(model: torch.nn.Module) -> set[str]:
    """``state_dict`` names of the float tensors of every normalisation layer."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        if isinstance(module, NORM_LAYERS):
            for name, value in module.state_dict().items():
                if value.is_floating_point():
                    names.add(f"{prefix}.{name}" if prefix else name)
    return names


def head_names(model: torch.nn.Module) -> set[str]:
    """``state_dict`` names of the float tensors of the model's last layer with parameters.

    For image models that is the classifier on top of the feature extractor.
    """
    last = None
    for prefix, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            last = (prefix, module)
    if last is None:
        return set()
    prefix, module = last
    return {
        f"{prefix}.{name}" if prefix else name
        for name, value in module.state_dict().items()
        if value.is_floating_point()
    }


def integer_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the module's non-float entries (they stay with the site that owns them)."""
    return {k: v.clone() for k, v in model.state_dict().items() if not v.is_floating_point()}


def restore_integer_buffers(model: torch.nn.Module, buffers: dict[str, torch.Tensor]) -> None:
    """Put a site's own integer buffers back into a (possibly shared) module."""
    if not buffers:
        return
    entries = model.state_dict()
    with torch.no_grad():
        for name, value in buffers.items():
            entries[name].copy_(value)


def params_view(model: torch.nn.Module) -> Params:
    """Numpy views of the module's float entries (zero-copy on CPU).

    The arrays share memory with the module: copy them (see :func:`params_copy`)
    before the module trains again if they must stay as they are.
    """
    return {k: v.detach().cpu().numpy() for k, v in sorted(float_entries(model).items())}


def params_copy(model: torch.nn.Module) -> Params:
    """Independent numpy copies of the module's float entries."""
    return {k: np.array(v, copy=True) for k, v in params_view(model).items()}


def load_params(model: torch.nn.Module, params: Params, *, where: str) -> None:
    """Copy ``params`` into the module in place, after checking names, shapes and dtypes.

    Raises
    ------
    flmi.core.errors.SchemaError
        Naming the first tensor that does not fit the module.
    """
    targets = float_entries(model)
    check_same_schema(expected=params_view(model), actual=params, where=where)
    with torch.no_grad():
        for name, target in targets.items():
            source = params[name]
            tensor = torch.from_numpy(source) if source.flags.writeable else torch.tensor(source)
            target.copy_(tensor)


def as_tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """``array`` as a tensor of ``dtype``, sharing its memory when the dtype already matches."""
    tensor = torch.from_numpy(array)
    return tensor if tensor.dtype == dtype else tensor.to(dtype)
