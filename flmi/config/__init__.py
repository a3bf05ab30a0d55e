"""The TOML configuration: schema, validation and ``--set`` overrides.

Every table is a frozen dataclass (:mod:`flmi.config.schema`) that checks its
own values when it is made. Reading a file, applying overrides and turning
raw tables into a :class:`Config` is :mod:`flmi.config.parse`; the checks
across tables and registries are :mod:`flmi.config.checks` and
:mod:`flmi.config.privacy_checks`; settings derived from a config are
:mod:`flmi.config.derived`. An unknown key, a wrong type or a value out of
range is a :class:`~flmi.core.errors.ConfigError` that names the dotted key
and what was expected, before anything runs or is written.

Each name is imported from its module on first use, so
``from flmi.config import Config`` loads the schema alone: neither torch nor
the strategy, task and data-source registries load until a name that needs
them (:func:`load_config`, say) is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flmi.config.checks import (
        check_config,
        check_site_names,
        check_strategy_fits,
        check_task_fits,
    )
    from flmi.config.derived import (
        labeled_fractions,
        partition_seed,
        site_groups,
        train_fractions,
        training_hparams,
    )
    from flmi.config.parse import (
        apply_overrides,
        config_from_dict,
        load_config,
        parse_override,
        read_toml,
    )
    from flmi.config.privacy_checks import check_dp, check_privacy
    from flmi.config.schema import (
        BaselinesConfig,
        Config,
        DataConfig,
        DeployConfig,
        FederationConfig,
        PartitionConfig,
        PrivacyConfig,
        RecordConfig,
        ReportConfig,
        RuntimeConfig,
        SiteConfig,
        SiteFieldError,
        StrategyConfig,
        TaskConfig,
        TransformsConfig,
    )

#: The module each public name comes from.
_EXPORTS = {
    "check_config": "flmi.config.checks",
    "check_site_names": "flmi.config.checks",
    "check_strategy_fits": "flmi.config.checks",
    "check_task_fits": "flmi.config.checks",
    "labeled_fractions": "flmi.config.derived",
    "partition_seed": "flmi.config.derived",
    "site_groups": "flmi.config.derived",
    "train_fractions": "flmi.config.derived",
    "training_hparams": "flmi.config.derived",
    "apply_overrides": "flmi.config.parse",
    "config_from_dict": "flmi.config.parse",
    "load_config": "flmi.config.parse",
    "parse_override": "flmi.config.parse",
    "read_toml": "flmi.config.parse",
    "check_dp": "flmi.config.privacy_checks",
    "check_privacy": "flmi.config.privacy_checks",
    "BaselinesConfig": "flmi.config.schema",
    "Config": "flmi.config.schema",
    "DataConfig": "flmi.config.schema",
    "DeployConfig": "flmi.config.schema",
    "FederationConfig": "flmi.config.schema",
    "PartitionConfig": "flmi.config.schema",
    "PrivacyConfig": "flmi.config.schema",
    "RecordConfig": "flmi.config.schema",
    "ReportConfig": "flmi.config.schema",
    "RuntimeConfig": "flmi.config.schema",
    "SiteConfig": "flmi.config.schema",
    "SiteFieldError": "flmi.config.schema",
    "StrategyConfig": "flmi.config.schema",
    "TaskConfig": "flmi.config.schema",
    "TransformsConfig": "flmi.config.schema",
}


def __getattr__(name: str) -> object:
    """Import a public name from its module on first use (then it is a plain attribute)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flmi.config' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "BaselinesConfig",
    "Config",
    "DataConfig",
    "DeployConfig",
    "FederationConfig",
    "PartitionConfig",
    "PrivacyConfig",
    "RecordConfig",
    "ReportConfig",
    "RuntimeConfig",
    "SiteConfig",
    "SiteFieldError",
    "StrategyConfig",
    "TaskConfig",
    "TransformsConfig",
    "apply_overrides",
    "check_config",
    "check_dp",
    "check_privacy",
    "check_site_names",
    "check_strategy_fits",
    "check_task_fits",
    "config_from_dict",
    "labeled_fractions",
    "load_config",
    "parse_override",
    "partition_seed",
    "read_toml",
    "site_groups",
    "train_fractions",
    "training_hparams",
]
