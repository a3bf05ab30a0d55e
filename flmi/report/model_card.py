"""``model_card.md`` and ``model_card.json``: what the model is, how it was made and scores.

Built from the run directory's ``config.toml``, ``summary.json`` and
``model.json``. The intended use and the limitations are a template for the
people who release the model to fill in: only they know them.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flmi.core.errors import RunDirError
from flmi.core.keys import Arm
from flmi.report.rundir import CONFIG, MODEL, SUMMARY
from flmi.report.summary_schema import ArmIntervals, Interval, Summary, read_summary
from flmi.tensorio import atomic_write_bytes, atomic_write_json

CARD_MD = "model_card.md"
CARD_JSON = "model_card.json"
TO_FILL = "TO FILL IN"
PRIVACY_NONE = "none"

TEMPLATE = {
    "intended_use": (
        f"{TO_FILL}: the clinical question, the patients and setting the model is meant for, "
        "and who acts on its output."
    ),
    "out_of_scope_use": f"{TO_FILL}: uses the model must not be put to.",
    "limitations": (
        f"{TO_FILL}: populations, scanners and sites absent from training; label quality; "
        "how the test sets differ from the intended use."
    ),
    "ethical_considerations": f"{TO_FILL}: risks of errors, and who bears them.",
}


def _metrics_with_ci(
    values: Mapping[str, float | None] | None, intervals: Mapping[str, Interval] | None
) -> dict[str, dict[str, Any]] | None:
    if values is None:
        return None
    return {
        k: {"value": v, "ci95": _pair((intervals or {}).get(k))} for k, v in sorted(values.items())
    }


def _pair(interval: Interval | None) -> list[float | None] | None:
    return None if interval is None else list(interval)


def model_card(run_dir: Path) -> dict[str, Any]:
    """The model card's fields, read from the run directory.

    Raises
    ------
    RunDirError
        The run directory lacks ``config.toml``, ``summary.json`` or ``model.json``.
    """
    files = {name: run_dir / name for name in (CONFIG, SUMMARY, "model.json")}
    for path in files.values():
        if not path.is_file():
            raise RunDirError(f"{path} is missing: a model card needs a finished run directory")
    config = tomllib.loads(files[CONFIG].read_text())
    summary = read_summary(files[SUMMARY])
    model_meta = json.loads(files["model.json"].read_text()).get("meta", {})
    if Arm.FEDERATED not in summary.arms:
        raise RunDirError(f"{files[SUMMARY]}: field 'arms.federated' is missing")
    task, fed = config["task"], summary.arms[Arm.FEDERATED]
    ci = fed.ci if fed.ci is not None else ArmIntervals(global_intervals=None)
    if isinstance(summary.sites, tuple):
        raise RunDirError(
            f"{files[SUMMARY]}: field 'sites' lists site names only (a deployment's summary); "
            "a model card needs each site's split sizes"
        )
    return {
        "model": {
            "file": MODEL,
            "architecture": task["model"],
            "width": task["width"],
            "input_shape": model_meta.get("input_shape"),
            "schema_sha256": model_meta.get("schema_sha256"),
        },
        "task": {
            "name": task["name"],
            "num_classes": task["num_classes"],
            "classes": list(range(int(task["num_classes"]))),
            "positive_label": task["positive_label"],
            "data_source": config["data"]["source"],
            "data_file": Path(str(config["data"].get("path", ""))).name,
        },
        "sites": _sites(summary.sites),
        "training": _training(config, summary),
        "privacy": dict(summary.privacy) or PRIVACY_NONE,
        "metrics": {
            "test_set": "final round; central = the simulation's central test set",
            "global": _metrics_with_ci(fed.global_metrics, ci.global_intervals),
            "per_site": {
                s: _metrics_with_ci(m, ci.per_site.get(s)) for s, m in sorted(fed.per_site.items())
            },
            "site_mean": dict(fed.site_mean),
        },
        "baselines": {
            arm: {
                "global": None if v.global_metrics is None else dict(v.global_metrics),
                "site_mean": dict(v.site_mean),
            }
            for arm, v in sorted(summary.arms.items())
            if arm != Arm.FEDERATED
        },
        "threshold": None if fed.threshold is None else dict(fed.threshold),
        "at_threshold": None if fed.at_threshold is None else dict(fed.at_threshold),
        "seed": summary.seed,
        "versions": dict(summary.versions),
        **TEMPLATE,
    }


def _sites(sites: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Each site's split sizes and label counts, as ``summary.json`` holds them."""
    return {
        name: {
            "n_train": info["n_train"],
            "n_val": info.get("n_val"),
            "n_test": info.get("n_test"),
            "label_counts": info.get("label_counts_by_split", info.get("label_counts")),
        }
        for name, info in sorted(sites.items())
    }


def _training(config: Mapping[str, Any], summary: Summary) -> dict[str, Any]:
    """How the model was trained: algorithm, its options, the federation and the partition."""
    strategy = dict(config.get("strategy", {}))
    return {
        "algorithm": strategy.pop("name", summary.strategy),
        "strategy_options": strategy,
        "federation": config["federation"],
        "partition": config.get("partition", {}),
        "rounds": summary.rounds,
        "device": summary.device,
        "torch_threads": summary.torch_threads,
    }


def _count(value: int | None) -> str:
    """A count, or "suppressed" for one under ``[report] min_count``."""
    return "suppressed" if value is None else str(value)


def _fmt(entry: Mapping[str, Any] | None) -> str:
    if not entry or entry.get("value") is None:
        return "-"
    text = f"{entry['value']:.3f}"
    low_high = entry.get("ci95")
    if low_high and None not in low_high:
        text += f" [{low_high[0]:.3f}, {low_high[1]:.3f}]"
    return text


def _no_guarantee(privacy: object) -> list[str]:
    """A warning line when the run's DP noise was seeded (it protects nobody)."""
    if isinstance(privacy, Mapping) and privacy.get("guarantee"):
        return [f"- **{privacy['guarantee']}**"]
    return []


def card_markdown(card: Mapping[str, Any]) -> str:
    """The model card as Markdown."""
    t, tr, m = card["task"], card["training"], card["metrics"]
    names = sorted({k for row in [m["global"] or {}, *m["per_site"].values()] for k in row or {}})
    lines = [
        "# Model card",
        "",
        "## Task",
        f"- {t['name']} into {t['num_classes']} classes {t['classes']}; "
        f"positive class (sensitivity refers to it): {t['positive_label']}",
        f"- data: {t['data_source']} {t['data_file']}".rstrip(),
        f"- model: {card['model']['architecture']} (width {card['model']['width']}), "
        f"input shape {card['model']['input_shape']}, file `{card['model']['file']}`",
        "",
        "## Sites",
        "| site | train | val | test |",
        "| --- | ---: | ---: | ---: |",
        *[
            f"| {s} | {_count(v['n_train'])} | {_count(v['n_val'])} | {_count(v['n_test'])} |"
            for s, v in card["sites"].items()
        ],
        "",
        "## Training",
        f"- algorithm: {tr['algorithm']} {json.dumps(tr['strategy_options'], sort_keys=True)}",
        f"- federation: {json.dumps(tr['federation'], sort_keys=True)}",
        f"- rounds: {tr['rounds']}, device: {tr['device']}, torch threads: {tr['torch_threads']}",
        f"- seed: {card['seed']}",
        "",
        "## Privacy",
        *_no_guarantee(card["privacy"]),
        "- "
        + (
            json.dumps(card["privacy"], sort_keys=True)
            if isinstance(card["privacy"], dict)
            else str(card["privacy"])
        ),
        "",
        "## Metrics (final round, test sets, bootstrap 95 % intervals)",
        "Sensitivity and specificity here call the most probable class; see the operating "
        "threshold below for them at the chosen threshold.",
        "",
        "| test set | " + " | ".join(names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    rows = [("central", m["global"])] if m["global"] else []
    rows += sorted(m["per_site"].items())
    for where, row in rows:
        lines.append(f"| {where} | " + " | ".join(_fmt((row or {}).get(n)) for n in names) + " |")
    th = card["threshold"] or {}
    at = (card["at_threshold"] or {}).get("global") or (card["at_threshold"] or {}).get("overall")
    lines += ["", "## Operating threshold"]
    if th:
        lines.append(
            f"- {th['value']:.2f} on the probability of class {t['positive_label']} "
            f"({th['method']}, chosen on: {th['chosen_on']}) {th.get('note') or ''}".rstrip()
        )
    if at:
        lines.append(
            f"- on test there: sensitivity {_fmt({'value': at['sensitivity']})}, "
            f"specificity {_fmt({'value': at['specificity']})} "
            f"(TP {at['tp']}, FN {at['fn']}, FP {at['fp']}, TN {at['tn']})"
        )
    lines += ["", "## Versions", *[f"- {k}: {v}" for k, v in sorted(card["versions"].items())]]
    for key, title in (
        ("intended_use", "Intended use"),
        ("out_of_scope_use", "Out-of-scope use"),
        ("limitations", "Limitations"),
        ("ethical_considerations", "Ethical considerations"),
    ):
        lines += ["", f"## {title}", card[key]]
    return "\n".join(lines) + "\n"


def write_model_card(run_dir: Path) -> tuple[Path, Path]:
    """Write ``model_card.json`` and ``model_card.md`` into ``run_dir``."""
    card = model_card(run_dir)
    atomic_write_json(run_dir / CARD_JSON, card)
    atomic_write_bytes(run_dir / CARD_MD, card_markdown(card).encode("utf-8"))
    return run_dir / CARD_JSON, run_dir / CARD_MD
