"""The key figures of the last pipeline run, gathered from the stages' metrics files into
small tables a person can scan (``dvc metrics show`` puts every key of every file on one line)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tarn.config import Params
from tarn.core.catalog import (
    BIAS_REPORT,
    ETL_REPORT,
    EVALUATE_REPORT,
    PREPARE_REPORT,
    TUNE_REPORT,
)


@dataclass(frozen=True)
class Section:
    title: str
    columns: list[str]
    rows: list[list[str]]


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _f(x, digits: int = 4) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def report(params: Params, root: Path) -> tuple[list[Section], list[str]]:
    """(sections, names of the metrics files not found)."""
    reports = root / params.paths.reports
    sections: list[Section] = []
    missing: list[str] = []

    def load(name: str) -> dict | None:
        data = _read(reports / name)
        if data is None:
            missing.append(name)
        return data

    if etl := load(ETL_REPORT):
        cols = ["read", "written", "rejected", "duplicates"]
        rows = [[b, *(_f(c[k]) for k in cols),
                 ", ".join(f"{r}: {n:,}" for r, n in c["rejected_by_reason"].items())]
                for b, c in [*etl["batches"].items(), ("total", etl["total"])]]
        sections.append(Section("ETL (read = written + rejected + duplicates)",
                                ["batch", *cols, "rejected by reason"], rows))
    if prep := load(PREPARE_REPORT):
        sections.append(Section("splits", ["split", "rows", "positive rate"],
                                [[s, _f(n), _f(prep["positive_rate"][s], 3)]
                                 for s, n in prep["rows"].items()]))
    if bias := load(BIAS_REPORT):
        rows = []
        for feat, f in bias.get("train", {}).items():
            after = bias.get("train_reweighed", {}).get(feat, {})
            rows.append([feat, _f(f["disparate_impact_min"], 3),
                         _f(after.get("disparate_impact_min"), 3),
                         _f(f["statistical_parity_difference"], 3)])
        sections.append(Section("data bias (train split)", [
            "feature", "disparate impact (min/max)", "after reweighing",
            "statistical parity difference"], rows))
    if tune := load(TUNE_REPORT):
        sections.append(Section("tuning", ["trials", "failed", "best val logloss",
                                           "best val AUC", "rounds", "seconds"],
                                [[_f(tune["n_trials"]), _f(tune["n_failed"]),
                                  _f(tune["val_logloss"]), _f(tune["val_auc"]),
                                  _f(tune["best_iteration"] + 1), _f(tune["duration_s"], 1)]]))
    if ev := load(EVALUATE_REPORT):
        m = ev["model"]
        keys = [k for k in ("logloss", "roc_auc", "accuracy", "f1", "brier",
                            "calibration_error") if k in m]
        sections.append(Section(f"test split, version {ev.get('version')}", keys,
                                [[_f(m[k]) for k in keys]]))
        fair = [[feat, _f(m[f"{feat}_demographic_parity_difference"]),
                 _f(m.get(f"{feat}_equalized_odds_difference")),
                 _f(ev["effect"].get(f"dpd_reduction_{feat}", 0.0) * 100, 0) + " %"]
                for feat in params.schema.sensitive
                if f"{feat}_demographic_parity_difference" in m]
        if fair:
            sections.append(Section("fairness on the test split", [
                "feature", "demographic parity difference", "equalized odds difference",
                "reduced by mitigation"], fair))
    return sections, missing
