from __future__ import annotations

import numpy as np
import pytest

from flmi.core.messages import ClientUpdate, UpdateKind
from flmi.strategies.ifca import Ifca, IfcaOptions, cluster_key

HPARAMS = {"lr": 0.1, "batch_size": 4}


def _ifca(k: int = 2) -> Ifca:
    return Ifca(hparams=HPARAMS, options=IfcaOptions(num_clusters=k), seed=0)


def _update(site: str, w: list[float], n: int, cluster: int | None) -> ClientUpdate:
    metrics = {} if cluster is None else {"cluster": float(cluster)}
    return ClientUpdate(
        site=site,
        params={"w": np.array(w)},
        kind=UpdateKind.FULL,
        num_examples=n,
        num_steps=1,
        metrics=metrics,
    )


def test_starting_models_differ_and_model_0_is_the_initial_one() -> None:
    state = _ifca(3).init({"w": np.array([1.0, 2.0])})
    np.testing.assert_array_equal(state.models[0]["w"], [1.0, 2.0])
    assert not np.array_equal(state.models[1]["w"], state.models[2]["w"])


def test_every_site_receives_all_cluster_models() -> None:
    strategy = _ifca(2)
    state = strategy.init({"w": np.zeros(2)})
    instruction = strategy.configure(1, state, ["a", "b"])["a"]
    assert set(instruction.extras) == {cluster_key(0, "w"), cluster_key(1, "w")}
    assert instruction.hparams["client_algorithm"] == "ifca"


def test_each_cluster_averages_its_own_updates_worked_by_hand() -> None:
    # cluster 0: a (n=1, w=1) and b (n=3, w=5) -> 4; cluster 1: c alone -> 9
    strategy = _ifca(2)
    state = strategy.init({"w": np.zeros(1)})
    updates = [_update("a", [1.0], 1, 0), _update("b", [5.0], 3, 0), _update("c", [9.0], 1, 1)]
    new, params = strategy.aggregate(1, state, updates)
    np.testing.assert_allclose(new.models[0]["w"], [4.0])
    np.testing.assert_allclose(new.models[1]["w"], [9.0])
    np.testing.assert_allclose(params["w"], [4.0])  # the cluster holding most examples
    assert new.membership == {"a": 0, "b": 0, "c": 1}
    np.testing.assert_allclose(strategy.site_params(new, "c")["w"], [9.0])


def test_order_of_sites_does_not_change_the_clusters() -> None:
    strategy = _ifca(2)
    state = strategy.init({"w": np.zeros(1)})
    updates = [_update("a", [1.0], 1, 0), _update("b", [5.0], 3, 1), _update("c", [2.0], 2, 0)]
    first, _ = strategy.aggregate(1, state, updates)
    second, _ = strategy.aggregate(1, state, list(reversed(updates)))
    for j in range(2):
        np.testing.assert_array_equal(first.models[j]["w"], second.models[j]["w"])


def test_an_update_without_a_valid_cluster_is_an_error_naming_the_site() -> None:
    strategy = _ifca(2)
    with pytest.raises(ValueError, match="site 'a' names no valid cluster"):
        strategy.aggregate(1, strategy.init({"w": np.zeros(1)}), [_update("a", [1.0], 1, 7)])


def test_state_and_membership_survive_a_record_round_trip() -> None:
    strategy = _ifca(2)
    state, _ = strategy.aggregate(1, strategy.init({"w": np.zeros(1)}), [_update("a", [3.0], 1, 1)])
    record = strategy.state_to_record(state)
    assert record.meta["membership"] == {"a": 1}
    restored = strategy.state_from_record(record)
    assert restored.membership == {"a": 1}
    for j in range(2):
        np.testing.assert_array_equal(restored.models[j]["w"], state.models[j]["w"])
