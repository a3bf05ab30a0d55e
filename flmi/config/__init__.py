"""The TOML configuration: schema, validation and ``--set`` overrides.

Every table is a frozen dataclass (:mod:`flmi.config.schema`) that checks its
own values when it is made. Reading a file, applying overrides and turning
raw tables into a :class:`Config` is :mod:`flmi.config.parse`; the checks
across tables and registries are :mod:`flmi.config.checks` and
:mod:`flmi.config.privacy_checks`; settings derived from a config are
:mod:`flmi.config.derived`. An unknown key, a wrong type or a value out of
range is a :class:`~flmi.core.errors.ConfigError` that names the dotted key
and what was expected, before anything runs or is written.
"""

from __future__ import annotations

from flmi.config.checks import check_config, check_site_names, check_strategy_fits, check_task_fits
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
    ReportConfig,
    RuntimeConfig,
    SiteConfig,
    SiteFieldError,
    StrategyConfig,
    TaskConfig,
    TransformsConfig,
)

__all__ = [
    "BaselinesConfig",
    "Config",
    "DataConfig",
    "DeployConfig",
    "FederationConfig",
    "PartitionConfig",
    "PrivacyConfig",
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
