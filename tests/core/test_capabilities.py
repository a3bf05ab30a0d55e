"""Capabilities are declared by a strategy, passed on by wrappers, read through one accessor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.core.strategy import NO_CAPABILITIES, Capabilities, capabilities_of
from flmi.privacy.strategies import SampleDP
from flmi.strategies.fedavg import FedAvg
from flmi.strategies.ifca import CLUSTER_METRIC, Ifca, IfcaOptions
from flmi.strategies.per_site import PerSiteSettings
from flmi.strategies.wrapper import StrategyWrapper


def _dp(inner: Any) -> SampleDP:
    return SampleDP(
        inner=inner,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        delta=1e-5,
        accountant="rdp",
        target_epsilon=None,
        rounds=1,
    )


def test_a_strategy_that_declares_nothing_has_no_capabilities() -> None:
    assert capabilities_of(FedAvg(hparams={})) is NO_CAPABILITIES
    assert NO_CAPABILITIES.declared == frozenset() and NO_CAPABILITIES.one_global_model


def test_declared_names_the_capabilities_that_are_set() -> None:
    caps = Capabilities(personalised=True, evaluation_hparams={"finetune_epochs": 1})
    assert caps.declared == {"personalised", "evaluation_hparams"}
    assert not caps.one_global_model
    assert not Capabilities(site_params=lambda state, site: {}).one_global_model
    # Privacy reporting does not make a model personal.
    assert Capabilities(privacy_record=lambda state: {}).one_global_model


class _Declares:
    def __init__(self, value: object) -> None:
        self._value = value

    @property
    def capabilities(self) -> object:
        return self._value


def test_a_capabilities_member_of_the_wrong_type_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match=r"_Declares.capabilities must be a .*Capabilities"):
        capabilities_of(_Declares(True))


def test_a_wrapper_passes_on_the_wrapped_strategys_capabilities_unchanged() -> None:
    ifca = Ifca(hparams={}, options=IfcaOptions(num_clusters=2), seed=0)
    wrapped = PerSiteSettings(inner=StrategyWrapper(inner=ifca), overrides={"a": {"lr": 0.1}})
    assert capabilities_of(wrapped) == capabilities_of(ifca)


def _ifca_round(strategy: Any) -> Any:
    params = {"w": np.array([1.0, 2.0])}
    state = strategy.init(params)
    updates = [
        ClientUpdate(
            site=site,
            params={"w": np.array([value, value])},
            kind=UpdateKind.FULL,
            num_examples=1,
            num_steps=1,
            metrics={
                CLUSTER_METRIC: float(cluster),
                "dp_noise_multiplier": 1.0,
                "dp_sample_rate": 0.5,
                "dp_steps": 1.0,
            },
        )
        for site, value, cluster in (("a", 10.0, 1), ("b", 20.0, 0))
    ]
    state, _ = strategy.aggregate(1, state, updates)
    return state


def test_a_dp_wrapper_scores_each_site_with_its_cluster_and_adds_privacy_reporting() -> None:
    ifca = Ifca(hparams={}, options=IfcaOptions(num_clusters=2), seed=0)
    dp = _dp(ifca)
    caps = capabilities_of(dp)
    assert caps.declared == capabilities_of(ifca).declared | {"privacy_record", "note_secure_round"}
    assert caps.site_params is not None
    state = _ifca_round(dp)
    # Site a chose cluster 1 (its mean is a's own update), b cluster 0.
    np.testing.assert_array_equal(caps.site_params(state, "a")["w"], [10.0, 10.0])
    np.testing.assert_array_equal(caps.site_params(state, "b")["w"], [20.0, 20.0])
    assert caps.privacy_record is not None and caps.privacy_record(state)["dp"] == "sample"


class _CountsSecureRounds(StrategyWrapper):
    """A strategy of its own that also accounts for secure rounds (counts them in its state)."""

    def init(self, params: Any) -> Any:
        return (self._inner.init(params), 0)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(note_secure_round=self._note)

    def _note(
        self,
        rnd: int,
        state: Any,
        *,
        reports: Mapping[str, Mapping[str, float]],
        contributors: Sequence[str],
    ) -> Any:
        return (state[0], state[1] + len(contributors))


def test_a_dp_wrapper_accounts_for_a_secure_round_then_lets_the_wrapped_strategy_do_so() -> None:
    dp = _dp(_CountsSecureRounds(inner=FedAvg(hparams={})))
    note = capabilities_of(dp).note_secure_round
    assert note is not None
    report = {"dp_noise_multiplier": 1.0, "dp_sample_rate": 0.5, "dp_steps": 2.0}
    state = dp.init({"w": np.zeros(1)})
    noted = note(1, state, reports={"a": report, "b": report}, contributors=["a", "b"])
    assert noted.inner[1] == 2  # the wrapped strategy counted both contributors
    assert sorted(noted.ledgers) == ["a", "b"] and noted.secure_round == 1
