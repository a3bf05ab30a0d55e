"""The ``device`` setting: ``cpu``, ``cuda`` or ``auto``."""

from __future__ import annotations

import torch

from flmi.core.errors import ConfigError

DEVICES = ("cpu", "cuda", "auto")


def resolve_device(setting: str) -> torch.device:
    """Turn the config's ``runtime.device`` into a torch device.

    ``auto`` picks CUDA when a GPU is present and the CPU otherwise; ``cuda``
    without a GPU is an error rather than a silent fallback.
    """
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "runtime.device = 'cuda' but no CUDA device is available; use 'auto' or 'cpu'"
            )
        return torch.device("cuda")
    raise ConfigError(f"runtime.device must be one of {list(DEVICES)}, got '{setting}'")
