"""Round progress: a bar with the time left on a terminal, one plain line per round otherwise."""

from __future__ import annotations

import io

from rich.console import Console

from flmi.core.federation import RoundRecord
from flmi.progress import RoundProgress, remaining, round_line


def _record(rnd: int, *, wall_s: float = 2.0, auc: float = 0.75) -> RoundRecord:
    return RoundRecord(
        rnd=rnd,
        arm="federated",
        global_metrics={"auc": auc, "loss": 0.5},
        per_site={},
        site_mean={},
        val={},
        wall_s=wall_s,
        bytes_down=0,
        bytes_up=0,
        sites_sampled=["a"],
    )


def test_the_time_remaining_is_the_mean_round_time_times_the_rounds_left() -> None:
    # rounds of 2 s and 4 s: mean 3 s, 8 rounds after round 2 of 10 -> 24 s
    assert remaining([2.0, 4.0], done=2, rounds=10) == "0:00:24"
    assert remaining([], done=0, rounds=10) == "-:--:--"
    assert remaining([5.0], done=10, rounds=10) == "0:00:00"


def test_on_a_terminal_the_bar_shows_rounds_done_the_metric_and_the_time_left() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140, color_system=None)

    with RoundProgress(console=console) as progress:
        progress(_record(1, auc=0.6), 10)
        progress(_record(2, auc=0.812), 10)

    text = out.getvalue()
    assert "\x1b[" in text  # cursor control: a live display, not lines
    last = text.rsplit("\r", 1)[-1]
    assert "2/10" in last and "auc 0.812" in last
    assert "remaining 0:00:16" in last  # 2 s a round, 8 rounds left
    assert "elapsed 0:00:0" in last
    assert "round   2/10" not in text  # no plain round lines on a terminal


def test_off_a_terminal_each_round_is_one_plain_line() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)

    with RoundProgress(console=console) as progress:
        progress(_record(1, auc=0.6), 3)
        progress(_record(2, auc=0.812), 3)

    lines = out.getvalue().splitlines()
    assert lines == [
        "federated round   1/3  auc 0.600  loss 0.500  (2.0 s)",
        "federated round   2/3  auc 0.812  loss 0.500  (2.0 s)",
    ]
    assert "\x1b[" not in out.getvalue()


def test_a_round_line_names_the_sites_that_failed() -> None:
    record = RoundRecord(
        **{**_record(1).__dict__, "sites_failed": {"b": "timeout", "a": "nan_update"}}
    )

    assert round_line(record, 5).endswith("(2.0 s)  [red]failed: a, b[/red]")
