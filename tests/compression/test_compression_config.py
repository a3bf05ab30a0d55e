"""``[compression]``: bad values and refused combinations name the key and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from flmi.compression.registry import build_compressor
from flmi.config import config_from_dict
from flmi.config.schema import CompressionConfig
from flmi.core.errors import ConfigError


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"method": "quantize", "bits": 3}, r"compression.bits must be 8, 4 or 2, got 3"),
        ({"method": "topk", "fraction": 0.0}, r"compression.fraction must be in \(0, 1\]"),
        ({"method": "topk", "fraction": 1.5}, r"compression.fraction must be in \(0, 1\]"),
        ({"method": "powersgd", "rank": 0}, r"compression.rank must be at least 1, got 0"),
        ({"method": "topk", "downlink": True}, r"unknown key 'compression.downlink'"),
        ({"method": "zip"}, r"compression.method"),
    ],
)
def test_bad_compression_values_name_the_key(table: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_dict({"compression": table})


@pytest.mark.parametrize("method", ["topk", "powersgd"])
def test_secure_aggregation_refuses_a_non_linear_compressor(method: str) -> None:
    with pytest.raises(ConfigError, match=rf"compression.method = '{method}' is not linear"):
        config_from_dict({"compression": {"method": method}, "privacy": {"aggregation": "secagg"}})


def test_secure_aggregation_points_quantisation_to_its_own_fixed_point_width() -> None:
    with pytest.raises(ConfigError, match=r"lower privacy.secagg_bits"):
        config_from_dict(
            {"compression": {"method": "quantize"}, "privacy": {"aggregation": "secagg"}}
        )


def test_compression_composes_with_client_dp() -> None:
    config = config_from_dict(
        {
            "compression": {"method": "topk", "fraction": 0.1},
            "privacy": {"dp": "client", "noise_at": "site", "insecure_reproducible_noise": True},
        }
    )
    assert config.compression.method == "topk"


def test_each_method_builds_its_compressor() -> None:
    assert build_compressor(CompressionConfig()) is None
    for method, error_feedback in (("quantize", False), ("topk", True), ("powersgd", True)):
        compressor = build_compressor(CompressionConfig(method=method))
        assert compressor is not None
        assert compressor.method == method and compressor.error_feedback is error_feedback
