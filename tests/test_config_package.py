"""The config package's shape: a leaf schema, and tables that check their own values.

Every single-table check lives in that table's ``__post_init__``, so a value
out of range is refused however the table is made (from TOML, ``--set`` or
Python), with a :class:`ConfigError` that starts with the dotted key.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from flmi.config import (
    BaselinesConfig,
    DataConfig,
    DeployConfig,
    FederationConfig,
    PartitionConfig,
    PrivacyConfig,
    ReportConfig,
    RuntimeConfig,
    SiteConfig,
    TaskConfig,
    TransformsConfig,
    config_from_dict,
)
from flmi.core.errors import ConfigError
from tests.test_architecture import REPO, _sources, long_functions

#: (table, keyword arguments with one value wrong, the key the error starts with)
OWN_CHECKS: list[tuple[type, dict[str, Any], str]] = [
    (TransformsConfig, {"spatial_size": [1]}, "data.transforms.spatial_size"),
    (TransformsConfig, {"spatial_size": [8, 0]}, "data.transforms.spatial_size"),
    (TransformsConfig, {"spacing": [0.0, 1.0]}, "data.transforms.spacing"),
    (TransformsConfig, {"spatial_size": [8, 8], "spacing": [1.0] * 3}, "data.transforms.spacing"),
    (TransformsConfig, {"orientation": "XYZ"}, "data.transforms.orientation"),
    (
        TransformsConfig,
        {"orientation": "RAS", "spatial_size": [8, 8]},
        "data.transforms.orientation",
    ),
    (TransformsConfig, {"channels": 2}, "data.transforms.channels"),
    (TransformsConfig, {"window_width": 0.0}, "data.transforms.window_width"),
    (DataConfig, {"val_fraction": 1.0}, "data.val_fraction"),
    (DataConfig, {"test_fraction": 0.0}, "data.test_fraction"),
    (DataConfig, {"test_fraction": 1.0}, "data.test_fraction"),
    (DataConfig, {"name": "breastmnist", "source": "synthetic"}, "data.name"),
    (PartitionConfig, {"num_sites": 0}, "partition.num_sites"),
    (PartitionConfig, {"alpha": 0.0}, "partition.alpha"),
    (PartitionConfig, {"min_examples_per_site": 0}, "partition.min_examples_per_site"),
    (TaskConfig, {"num_classes": 1}, "task.num_classes"),
    (TaskConfig, {"positive_label": 2}, "task.positive_label"),
    (TaskConfig, {"positive_label": -1}, "task.positive_label"),
    (TaskConfig, {"in_channels": 0}, "task.in_channels"),
    (TaskConfig, {"spatial_dims": 1}, "task.spatial_dims"),
    (TaskConfig, {"width": 0}, "task.width"),
    (TaskConfig, {"init_features": 0}, "task.init_features"),
    (TaskConfig, {"growth_rate": 0}, "task.growth_rate"),
    (TaskConfig, {"target_scale": 0.0}, "task.target_scale"),
    (TaskConfig, {"sw_overlap": 1.0}, "task.sw_overlap"),
    (TaskConfig, {"freeze": ["features.0", " "]}, "task.freeze"),
    (
        TaskConfig,
        {"init_skip": ["head,features"], "init_weights": "w.safetensors"},
        "task.init_skip",
    ),
    (TaskConfig, {"init_skip": ["head"]}, "task.init_skip"),
    (TaskConfig, {"init_weights": "weights.pt"}, "task.init_weights"),
    (FederationConfig, {"rounds": 0}, "federation.rounds"),
    (FederationConfig, {"min_sites": 0}, "federation.min_sites"),
    (FederationConfig, {"local_epochs": 0}, "federation.local_epochs"),
    (FederationConfig, {"batch_size": 0}, "federation.batch_size"),
    (FederationConfig, {"eval_every": 0}, "federation.eval_every"),
    (FederationConfig, {"max_failed_rounds": 0}, "federation.max_failed_rounds"),
    (FederationConfig, {"fraction": 0.0}, "federation.fraction"),
    (FederationConfig, {"fraction": 1.5}, "federation.fraction"),
    (FederationConfig, {"local_steps": -1}, "federation.local_steps"),
    (FederationConfig, {"weight_decay": -0.1}, "federation.weight_decay"),
    (FederationConfig, {"unlabeled_loss_weight": -1.0}, "federation.unlabeled_loss_weight"),
    (FederationConfig, {"lr": 0.0}, "federation.lr"),
    (FederationConfig, {"momentum": 1.0}, "federation.momentum"),
    (FederationConfig, {"pseudo_label_threshold": 1.5}, "federation.pseudo_label_threshold"),
    (FederationConfig, {"pseudo_label_quota": 0.0}, "federation.pseudo_label_quota"),
    (FederationConfig, {"unlabeled_weight": 0.0}, "federation.unlabeled_weight"),
    (BaselinesConfig, {"pooled_lr": 0.0}, "baselines.pooled_lr"),
    (BaselinesConfig, {"pooled_batch_size": 0}, "baselines.pooled_batch_size"),
    (BaselinesConfig, {"pooled_epochs": -1}, "baselines.pooled_epochs"),
    (RuntimeConfig, {"torch_threads": 0}, "runtime.torch_threads"),
    (DeployConfig, {"sites": ["a", "b", "a"]}, "deploy.sites"),
    (DeployConfig, {"round_timeout_s": 0.0}, "deploy.round_timeout_s"),
    (DeployConfig, {"wait_for_sites_s": -1.0}, "deploy.wait_for_sites_s"),
    (DeployConfig, {"heartbeat_s": 0.0}, "deploy.heartbeat_s"),
    (DeployConfig, {"chunk_bytes": 1023}, "deploy.chunk_bytes"),
    (DeployConfig, {"max_message_bytes": (1 << 20) + 65535}, "deploy.max_message_bytes"),
    (DeployConfig, {"max_payload_bytes": 0}, "deploy.max_payload_bytes"),
    (ReportConfig, {"bootstrap_resamples": -1}, "report.bootstrap_resamples"),
    (ReportConfig, {"histogram_bins": 1}, "report.histogram_bins"),
    (ReportConfig, {"histogram_bins": 10001}, "report.histogram_bins"),
    (ReportConfig, {"target_sensitivity": 0.0}, "report.target_sensitivity"),
    (ReportConfig, {"min_count": 0}, "report.min_count"),
    (ReportConfig, {"flag_distance": 0.0}, "report.flag_distance"),
    (ReportConfig, {"km_bin_width": -1.0}, "report.km_bin_width"),
    (PrivacyConfig, {"delta": 1.0}, "privacy.delta"),
    (PrivacyConfig, {"noise_multiplier": 0.0}, "privacy.noise_multiplier"),
    (PrivacyConfig, {"max_grad_norm": 0.0}, "privacy.max_grad_norm"),
    (PrivacyConfig, {"clip_norm": -1.0}, "privacy.clip_norm"),
    (PrivacyConfig, {"adaptive_clip_lr": 0.0}, "privacy.adaptive_clip_lr"),
    (PrivacyConfig, {"adaptive_clip_count_noise": 0.0}, "privacy.adaptive_clip_count_noise"),
    (PrivacyConfig, {"target_epsilon": 0.0}, "privacy.target_epsilon"),
    (PrivacyConfig, {"adaptive_clip_quantile": 1.0}, "privacy.adaptive_clip_quantile"),
    (PrivacyConfig, {"insecure_reproducible_noise": True}, "privacy.insecure_reproducible_noise"),
    (PrivacyConfig, {"secagg_clip": float("inf")}, "privacy.secagg_clip"),
    (PrivacyConfig, {"secagg_bits": 7}, "privacy.secagg_bits"),
    (PrivacyConfig, {"he_poly_modulus_degree": 4096}, "privacy.he_poly_modulus_degree"),
    (PrivacyConfig, {"he_scale_bits": 51}, "privacy.he_scale_bits"),
    (SiteConfig, {"local_epochs": 0}, "sites.NAME.local_epochs"),
    (SiteConfig, {"local_steps": -1}, "sites.NAME.local_steps"),
    (SiteConfig, {"lr": 0.0}, "sites.NAME.lr"),
    (SiteConfig, {"batch_size": 0}, "sites.NAME.batch_size"),
    (SiteConfig, {"fault_scale": 0.0}, "sites.NAME.fault_scale"),
    (SiteConfig, {"fault_noise_std": 0.0}, "sites.NAME.fault_noise_std"),
    (SiteConfig, {"labeled_fraction": 1.5}, "sites.NAME.labeled_fraction"),
    (SiteConfig, {"labeled": False, "labeled_fraction": 0.5}, "sites.NAME: labeled = false"),
    (SiteConfig, {"train_fraction": 0.0}, "sites.NAME.train_fraction"),
]


@pytest.mark.parametrize(
    ("table", "values", "key"),
    OWN_CHECKS,
    ids=[f"{t.__name__}-{','.join(v)}" for t, v, _ in OWN_CHECKS],
)
def test_a_table_refuses_its_own_bad_value_naming_the_dotted_key(
    table: type, values: dict[str, Any], key: str
) -> None:
    # Act
    with pytest.raises(ConfigError) as caught:
        table(**values)

    # Assert: the message starts with the key and goes on to say what is expected.
    message = str(caught.value)
    assert message.startswith(key), message
    assert len(message) > len(key) + 10, message


def test_the_values_at_each_range_edge_are_accepted() -> None:
    # Arrange / Act / Assert: closed ends of the ranges above are valid values.
    FederationConfig(fraction=1.0, local_steps=0, momentum=0.0, pseudo_label_threshold=1.0)
    FederationConfig(pseudo_label_quota=1.0, unlabeled_weight=1.0, weight_decay=0.0)
    DataConfig(val_fraction=0.0)
    TaskConfig(num_classes=3, positive_label=2, spatial_dims=0, sw_overlap=0.0)
    ReportConfig(histogram_bins=2, target_sensitivity=1.0, km_bin_width=0.0)
    PrivacyConfig(secagg_bits=8, he_scale_bits=50, he_poly_modulus_degree=32768)
    DeployConfig(chunk_bytes=1024, max_message_bytes=1024 + 65536)
    SiteConfig(local_steps=0, labeled=False, train_fraction=1.0)
    TransformsConfig(orientation="ras", spatial_size=[8, 8, 8], spacing=[1.0, 1.0, 2.0])


def test_a_site_table_read_from_toml_names_its_site() -> None:
    # Act
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"sites": {"hospital_2": {"lr": 0.0}}})

    # Assert
    assert str(caught.value) == "sites.hospital_2.lr must be positive, got 0.0"


def test_transforms_are_checked_whatever_the_data_source() -> None:
    # Act / Assert: the table checks itself, not only the manifest source that reads it.
    with pytest.raises(ConfigError, match=r"^data\.transforms\.channels must be 0 \(keep\)"):
        config_from_dict({"data": {"source": "synthetic", "transforms": {"channels": 2}}})


def test_an_unknown_medmnist_name_is_refused_by_the_medmnist_source_when_read() -> None:
    # Act / Assert
    with pytest.raises(ConfigError, match=r"data\.name: unknown MedMNIST data set 'nosuchmnist'"):
        config_from_dict(
            {"data": {"source": "medmnist", "name": "nosuchmnist"}, "partition": {"method": "iid"}}
        )


def test_the_schema_loads_neither_torch_nor_a_registry() -> None:
    # Arrange: a fresh interpreter, so nothing this test session imported counts.
    probe = (
        "import sys; import flmi.config.schema; from flmi.config import Config, SiteConfig;"
        "Config(); heavy = ('torch', 'flmi.strategies', 'flmi.tasks', 'flmi.data',"
        " 'flmi.privacy', 'flmi.runtime');"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))"
    )

    # Act
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )

    # Assert
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_schema_imports_nothing_of_flmi_but_the_errors() -> None:
    # Arrange
    import ast

    tree = ast.parse((REPO / "flmi" / "config" / "schema.py").read_text())

    # Act: every import anywhere in the module, functions included.
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }

    # Assert
    assert {m for m in imported if m.startswith("flmi")} == {"flmi.core.errors"}


def test_loading_a_config_name_loads_the_checks_it_needs() -> None:
    # Arrange: a fresh interpreter; load_config needs the strategy registry to check options.
    probe = (
        "import sys; from flmi.config import load_config;"
        "print('flmi.config.checks' in sys.modules, 'flmi.strategies.registry' in sys.modules)"
    )

    # Act
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )

    # Assert
    assert done.stdout.split() == ["True", "True"], done.stdout + done.stderr


def test_no_function_in_the_config_package_is_longer_than_80_lines() -> None:
    # Arrange
    config = {name: path for name, path in _sources().items() if name.startswith("flmi.config")}

    # Act
    offenders = long_functions(config, limit=80)

    # Assert: the package is there to be found, and nothing in it is too long.
    assert "flmi.config.checks" in config
    assert offenders == []
