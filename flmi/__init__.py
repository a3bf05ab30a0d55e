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
        RoundFailedError,
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
    from flmi.core.strategy import Capabilities, StateRecord, Strategy, capabilities_of
    from flmi.data.source_registry import SOURCES as DATA_SOURCES
    from flmi.data.source_registry import DataSourceSpec
    from flmi.registry import Origin, PluginError, Registry
    from flmi.runtime.registry import RUNTIMES, RuntimeSpec
    from flmi.simulation import RunResult, run_experiment
    from flmi.site.site import Site, SitePolicy
    from flmi.site.state import SiteState
    from flmi.strategies.fedavg import FedAvg
    from flmi.strategies.registry import STRATEGIES
    from flmi.strategies.spec import StrategySpec
    from flmi.tasks.model_registry import MODELS, NetworkRequest, NetworkSpec
    from flmi.tasks.registry import TASKS, TaskSpec

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
    "RoundFailedError": "flmi.core.errors",
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
    "Capabilities": "flmi.core.strategy",
    "capabilities_of": "flmi.core.strategy",
    "StateRecord": "flmi.core.strategy",
    "Strategy": "flmi.core.strategy",
    "RunResult": "flmi.simulation",
    "run_experiment": "flmi.simulation",
    "Site": "flmi.site.site",
    "SitePolicy": "flmi.site.site",
    "SiteState": "flmi.site.state",
    "FedAvg": "flmi.strategies.fedavg",
    # Extending flmi (docs/extending.md): the registries and what each holds.
    "DATA_SOURCES": "flmi.data.source_registry",
    "DataSourceSpec": "flmi.data.source_registry",
    "MODELS": "flmi.tasks.model_registry",
    "NetworkRequest": "flmi.tasks.model_registry",
    "NetworkSpec": "flmi.tasks.model_registry",
    "Origin": "flmi.registry",
    "PluginError": "flmi.registry",
    "Registry": "flmi.registry",
    "RUNTIMES": "flmi.runtime.registry",
    "RuntimeSpec": "flmi.runtime.registry",
    "STRATEGIES": "flmi.strategies.registry",
    "StrategySpec": "flmi.strategies.spec",
    "TASKS": "flmi.tasks.registry",
    "TaskSpec": "flmi.tasks.registry",
}
#: Public names that differ from their name in the module they come from.
_RENAMED = {"DATA_SOURCES": "SOURCES"}


def __getattr__(name: str) -> object:
    """Import a public name from its module on first use (then it is a plain attribute)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flmi' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "DATA_SOURCES",
    "MODELS",
    "RUNTIMES",
    "STRATEGIES",
    "TASKS",
    "Capabilities",
    "ClientError",
    "ClientUpdate",
    "Config",
    "ConfigError",
    "DataError",
    "DataSourceSpec",
    "ErrorCode",
    "EvaluateInstruction",
    "EvaluateResult",
    "FedAvg",
    "FederationPlan",
    "FlmiError",
    "LabelError",
    "NetworkRequest",
    "NetworkSpec",
    "NonFiniteError",
    "Origin",
    "Params",
    "PartitionError",
    "PluginError",
    "Registry",
    "RoundFailedError",
    "RoundRecord",
    "RunDirError",
    "RunResult",
    "RuntimeSpec",
    "SchemaError",
    "Site",
    "SitePolicy",
    "SiteState",
    "StateRecord",
    "Strategy",
    "StrategySpec",
    "TaskSpec",
    "TrainInstruction",
    "UpdateKind",
    "__version__",
    "capabilities_of",
    "load_config",
    "run_experiment",
    "run_federation",
]
