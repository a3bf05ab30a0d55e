from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from flmi.core.errors import SchemaError
from flmi.tasks.torch_params import (
    integer_buffer_names,
    integer_buffers,
    load_params,
    params_copy,
    params_view,
    restore_integer_buffers,
)


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_params_hold_float_entries_only_and_never_integer_buffers() -> None:
    model = _bn_model()
    params = params_view(model)
    assert "1.num_batches_tracked" not in params
    assert integer_buffer_names(model) == ["1.num_batches_tracked"]
    assert {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var"} == set(
        params
    )


def test_params_view_shares_memory_with_the_model_on_cpu() -> None:
    model = _bn_model()
    view = params_view(model)
    view["0.bias"][:] = 7.0
    assert torch.all(model.state_dict()["0.bias"] == 7.0)


def test_params_copy_does_not_share_memory() -> None:
    model = _bn_model()
    copy = params_copy(model)
    copy["0.bias"][:] = 7.0
    assert not torch.any(model.state_dict()["0.bias"] == 7.0)


def test_load_params_copies_values_and_leaves_integer_buffers_alone() -> None:
    model = _bn_model()
    model.state_dict()["1.num_batches_tracked"].fill_(5)
    params = {k: np.full_like(v, 0.5) for k, v in params_view(model).items()}
    load_params(model, params, where="test")
    assert torch.all(model.state_dict()["0.weight"] == 0.5)
    assert int(model.state_dict()["1.num_batches_tracked"]) == 5


def test_load_params_accepts_read_only_arrays() -> None:
    model = _bn_model()
    params = params_copy(model)
    for value in params.values():
        value.setflags(write=False)
    load_params(model, params, where="test")


def test_load_params_names_the_tensor_that_does_not_fit() -> None:
    model = _bn_model()
    params = params_copy(model)
    params["0.weight"] = np.zeros((2, 2), dtype=np.float32)
    with pytest.raises(SchemaError, match="'0.weight' has shape"):
        load_params(model, params, where="instruction")


def test_integer_buffers_round_trip_through_a_shared_model() -> None:
    model = _bn_model()
    model.state_dict()["1.num_batches_tracked"].fill_(3)
    mine = integer_buffers(model)
    model.state_dict()["1.num_batches_tracked"].fill_(9)  # another site used the model
    restore_integer_buffers(model, mine)
    assert int(model.state_dict()["1.num_batches_tracked"]) == 3
