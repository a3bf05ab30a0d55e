"""flmi: federated learning for medical imaging.

The public API is what this module re-exports; everything else may change.
Each name is imported on first use, so ``import flmi.core`` stays numpy-only
and fast: neither torch nor the config schema load until a name that needs
them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from flmi.config import Config, load_config
    from flmi.core.errors import (
        ConfigError,
        DataError,
        FlmiError,
        LabelError,
        NonFiniteError,
        PartitionError,
        RunDirError,
        SchemaError,
    )
    from flmi.core.federation import FederationPlan, RoundRecord, run_federation
    from flmi.core.messages import (
        ClientError,
        ClientUpdate,
        ErrorCode,
        EvaluateInstruction,
        EvaluateResult,
        TrainInstruction,
        UpdateKind,
    )
    from flmi.core.params import Params
    from flmi.core.strategy import StateRecord, Strategy
    from flmi.simulation import RunResult, run_experiment
    from flmi.site.site import Site, SitePolicy
    from flmi.site.state import SiteState
    from flmi.strategies.fedavg import FedAvg

#: The module each public name comes from.
_EXPORTS = {
    "Config": "flmi.config",
    "load_config": "flmi.config",
    "ConfigError": "flmi.core.errors",
    "DataError": "flmi.core.errors",
    "FlmiError": "flmi.core.errors",
    "LabelError": "flmi.core.errors",
    "NonFiniteError": "flmi.core.errors",
    "PartitionError": "flmi.core.errors",
    "RunDirError": "flmi.core.errors",
    "SchemaError": "flmi.core.errors",
    "FederationPlan": "flmi.core.federation",
    "RoundRecord": "flmi.core.federation",
    "run_federation": "flmi.core.federation",
    "ClientError": "flmi.core.messages",
    "ClientUpdate": "flmi.core.messages",
    "ErrorCode": "flmi.core.messages",
    "EvaluateInstruction": "flmi.core.messages",
    "EvaluateResult": "flmi.core.messages",
    "TrainInstruction": "flmi.core.messages",
    "UpdateKind": "flmi.core.messages",
    "Params": "flmi.core.params",
    "StateRecord": "flmi.core.strategy",
    "Strategy": "flmi.core.strategy",
    "RunResult": "flmi.simulation",
    "run_experiment": "flmi.simulation",
    "Site": "flmi.site.site",
    "SitePolicy": "flmi.site.site",
    "SiteState": "flmi.site.state",
    "FedAvg": "flmi.strategies.fedavg",
}


def __getattr__(name: str) -> object:
    """Import a public name from its module on first use (then it is a plain attribute)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flmi' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "ClientError",
    "ClientUpdate",
    "Config",
    "ConfigError",
    "DataError",
    "ErrorCode",
    "EvaluateInstruction",
    "EvaluateResult",
    "FedAvg",
    "FederationPlan",
    "FlmiError",
    "LabelError",
    "NonFiniteError",
    "Params",
    "PartitionError",
    "RoundRecord",
    "RunDirError",
    "RunResult",
    "SchemaError",
    "Site",
    "SitePolicy",
    "SiteState",
    "StateRecord",
    "Strategy",
    "TrainInstruction",
    "UpdateKind",
    "__version__",
    "load_config",
    "run_experiment",
    "run_federation",
]
