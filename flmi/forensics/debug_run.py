"""``flmi debug``: FedDebug localisation on one recorded round of a run."""

from __future__ import annotations

from pathlib import Path

import torch

from flmi.data.sources import load_data
from flmi.data.unlabeled import semi_supervised_data
from flmi.forensics.feddebug import DebugSettings, localise, site_model
from flmi.forensics.reader import RecordReader
from flmi.forensics.replay import run_config
from flmi.tasks.registry import build_task


def debug_round(
    run_dir: Path, *, rnd: int | None, settings: DebugSettings
) -> tuple[int, list[tuple[str, float]]]:
    """The round debugged (default: the last recorded) and its sites, most suspect first.

    The data is read for the network's shape alone; the inputs are random.
    """
    reader = RecordReader(run_dir=run_dir)
    rounds = reader.rounds()
    chosen = rnd if rnd is not None else rounds[-1]
    recorded = reader.read(chosen)
    before = reader.global_params(chosen - 1)
    config = run_config(run_dir)
    torch.set_num_threads(config.runtime.torch_threads)
    data, _ = semi_supervised_data(config, load_data(config))
    network = build_task(config, data).build_model(seed=config.federation.seed)
    ranking = localise(
        sites=recorded.sites,
        models=[site_model(u, before) for u in recorded.updates],
        network=network,
        input_shape=data.central_test.x.shape[1:],
        settings=settings,
    )
    return chosen, ranking
