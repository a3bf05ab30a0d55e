"""flmi: federated learning for medical imaging.

The public API is what this module re-exports; everything else may change.
"""

from __future__ import annotations

__version__ = "0.1.0"

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
from flmi.strategies.fedavg import FedAvg

# Names that need torch load on first use, so `import flmi.core` stays numpy-only and fast.
_LAZY = {
    "RunResult": "flmi.simulation",
    "run_experiment": "flmi.simulation",
    "Site": "flmi.site.site",
    "SitePolicy": "flmi.site.site",
    "SiteState": "flmi.site.state",
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
_RENAMED = {"DATA_SOURCES": "SOURCES"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), _RENAMED.get(name, name))
    raise AttributeError(f"module 'flmi' has no attribute {name!r}")


__all__ = [
    "Capabilities",
    "DATA_SOURCES",
    "MODELS",
    "RUNTIMES",
    "STRATEGIES",
    "TASKS",
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
    "RoundFailedError",
    "PluginError",
    "Registry",
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
