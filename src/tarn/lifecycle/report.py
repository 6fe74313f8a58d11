"""The key figures of the last pipeline run, gathered from the stages' metrics files into
small tables a person can scan (``dvc metrics show`` puts every key of every file on one line),
then the version in production (from the registry: a retraining or a promotion moves it
without a pipeline run), the last monitoring and the last retraining."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tarn.config import METRICS_BY_TASK, Params
from tarn.core.explain_tables import tables
from tarn.core.registry.view import open_view
from tarn.core.reports import (
    BIAS_REPORT,
    ETL_REPORT,
    EVALUATE_REPORT,
    MONITOR_REPORT,
    PREPARE_REPORT,
    RETRAIN_REPORT,
    TUNE_REPORT,
    BiasReport,
    EtlCounts,
    EtlReport,
    EvaluateReport,
    PrepareReport,
    R,
    TuneSummary,
)
from tarn.core.tags import Lineage, PromotionRecord


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

    def load(kind: type[R], name: str) -> R | None:
        data = kind.read(reports / name)
        if data is None:
            missing.append(name)
        return data

    if etl := load(EtlReport, ETL_REPORT):
        cols = list(EtlCounts.COLUMNS)
        rows = [[b, *(_f(getattr(c, k)) for k in cols),
                 ", ".join(f"{r}: {n:,}" for r, n in c.rejected_by_reason.items())]
                for b, c in [*etl.batches.items(), ("total", etl.total)]]
        sections.append(Section("ETL (read = written + rejected + duplicates)",
                                ["batch", *cols, "rejected by reason"], rows))
    if prep := load(PrepareReport, PREPARE_REPORT):
        sections.append(_splits(prep))
    if bias := load(BiasReport, BIAS_REPORT):
        sections.append(_bias(bias))
    if tune := load(TuneSummary, TUNE_REPORT):
        sections.extend(_tuning(tune))
    production = _production(params, root)
    if ev := load(EvaluateReport, EVALUATE_REPORT):
        sections.extend(_evaluation(ev, params.schema.sensitive))
        if production is not None and str(ev.version) != production.rows[0][0]:
            first = next(i for i, s in enumerate(sections) if s.title.startswith("test split"))
            s = sections[first]
            sections[first] = Section(f"{s.title}: the last pipeline run, not production "
                                      f"(version {production.rows[0][0]})", s.columns, s.rows)
    if production is not None:
        sections.append(production)
    loop = root / params.monitor.reports
    if mon := _read(loop / MONITOR_REPORT):
        sections.extend(_monitoring(mon))
    else:
        sections.append(Section("last monitoring", ["note"], [[
            f"none yet ({params.monitor.reports}/{MONITOR_REPORT} not found): `tarn monitor`"]]))
    if ret := _read(loop / RETRAIN_REPORT):
        sections.extend(_retraining(ret))
    return sections, missing


def _production(params: Params, root: Path) -> Section | None:
    """The version holding the production alias, with its test figures, lineage and promotion
    record; None when there is no registry here yet (a fresh project: nothing is created)."""
    if not params.mlflow.tracking_uri and not (root / params.mlflow.store_dir /
                                               "mlflow.db").is_file():
        return None
    reg = open_view(params.mlflow, root, params.promote.alias)  # no MLflow import
    version = reg.production()
    if version is None:
        return Section("production", ["version", "note"], [["none", "promote a version"]])
    mv = reg.version(version)
    tags = dict(mv.tags)
    lineage, promotion = Lineage.from_tags(tags), PromotionRecord.from_tags(tags)
    metrics = reg.run_metrics(version, mv)
    names = dict.fromkeys(m for ms in METRICS_BY_TASK.values() for m in ms)
    figures = ", ".join(f"{m} {_f(metrics[f'test_{m}'])}" for m in names
                        if f"test_{m}" in metrics)
    how = lineage.kind + (f" from version {lineage.parent_version}"
                          if lineage.parent_version else "")
    return Section(f"production ({reg.name}@{reg.alias})",
                   ["version", "kind", "test figures", "promoted", "reason"],
                   [[version, how or "-", figures or "-",
                     promotion.promoted_at or "-", promotion.reason or "-"]])


def _monitoring(mon: dict) -> list[Section]:
    """The last `tarn monitor`: its decision, and per source (and per lake batch) the rows,
    the drift verdict and the drifted columns."""
    d = mon.get("decision", {})
    rows = []
    for s in mon.get("sources", []):
        rows.append([s["name"], _f(s.get("rows", 0)), s.get("verdict") or (
            s.get("schema_change") and f"schema change ({s['schema_change']})") or "-",
            ", ".join(s.get("drifted", [])) or "-",
            ", ".join(s.get("prediction_drifted", [])) or "-"])
        rows += [[f"  {s['name']} {b['name']}", _f(b["rows"]), b["verdict"],
                  ", ".join(b.get("drifted", [])) or "-",
                  ", ".join(b.get("prediction_drifted", [])) or "-"]
                 for b in s.get("batches", [])]
    return [Section(f"last monitoring (production version {mon.get('production')}): decision "
                    f"{d.get('mode')} - " + "; ".join(d.get("reasons", [])),
                    ["source", "rows", "verdict", "drifted features", "drifted outputs"], rows)]


def _retraining(ret: dict) -> list[Section]:
    """The last `tarn retrain`: mode, why (forced or the monitor), versions, outcome, and the
    old-vs-new figures."""
    outcome = "promoted" if ret.get("promoted") else f"not promoted: {ret.get('refused')}"
    out = [Section("last retraining", ["finished", "mode", "versions", "reason", "outcome"],
                   [[ret.get("finished_at", "-"), ret.get("mode", "-")
                     + (" (forced)" if ret.get("forced") else ""),
                     f"{ret.get('parent') or 'none'} -> {ret.get('version')}",
                     ret.get("reason", "-"), outcome]])]
    m = ret.get("metrics") or {}
    if m:
        rows = [[data, k, _f(m["old"][data][k]), _f(m["new"][data][k])]
                for data in ("test", "new_data") if data in m.get("old", {})
                for k, v in m["old"][data].items()
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "rows"
                and k in m["new"][data]]
        out.append(Section("last retraining: old vs new model", ["data", "metric", "old", "new"],
                           rows))
    return out


def _splits(prep: PrepareReport) -> Section:
    """Rows per split and the target per split: positive rate (binary), class shares
    (multiclass), mean and std (regression)."""
    rows = prep.rows
    if prep.class_shares is not None:
        return Section("splits", ["split", "rows", "class shares"],
                       [[s, _f(n), ", ".join(f"{c} {_f(v, 3)}" for c, v in
                                             prep.class_shares[s].items())]
                        for s, n in rows.items()])
    if prep.target_mean is not None:
        std = prep.target_std or {}
        return Section("splits", ["split", "rows", "target mean", "target std"],
                       [[s, _f(n), _f(prep.target_mean[s], 3), _f(std.get(s), 3)]
                        for s, n in rows.items()])
    rate = prep.positive_rate or {}
    return Section("splits", ["split", "rows", "positive rate"],
                   [[s, _f(n), _f(rate.get(s), 3)] for s, n in rows.items()])


def _bias(bias: BiasReport) -> Section:
    """Data bias on the train split: disparate impact and parity difference (classification),
    the gap between group means of the target (regression)."""
    train, after = bias.train, bias.train_reweighed
    if any(f.mean_gap is not None for f in train.values()):
        return Section("data bias (train split)", [
            "feature", "gap between group target means (std)", "group means"],
            [[feat, _f(f.mean_gap, 3),
              ", ".join(f"{g} {_f(v, 1)}" for g, v in (f.mean or {}).items())]
             for feat, f in train.items()])
    rows = [[feat, _f(f.disparate_impact_min, 3),
             _f(after[feat].disparate_impact_min if feat in after else None, 3),
             _f(f.statistical_parity_difference, 3)] for feat, f in train.items()]
    return Section("data bias (train split)", [
        "feature", "disparate impact (min/max)", "after reweighing",
        "statistical parity difference"], rows)


# the validation figures tuning reports beside its loss (tune.json's figures), by heading
TUNE_FIGURES = {"val_auc": "best val AUC", "val_accuracy": "best val accuracy",
                "val_mae": "best val MAE", "val_r2": "best val R2"}


def _tuning(tune: TuneSummary) -> list[Section]:
    """The search (configurations, fits per rung, budget, why it stopped) and, on the
    validation split, the default reference models beside the best fit."""
    loss = tune.loss
    extra = [k for k in TUNE_FIGURES if k in tune.figures]
    rungs = " + ".join(f"{r['fits']} at {r['rows']:,}" for r in tune.fits_per_rung)
    out = [Section("tuning", ["configurations", "fits (rows)", "failed",
                              f"best {loss.replace('_', ' ')}",
                              *(TUNE_FIGURES[k] for k in extra), "rounds", "seconds",
                              "budget s", "stopped by"],
                   [[_f(tune.n_trials), rungs or _f(tune.n_trials), _f(tune.n_failed),
                     _f(tune.best_loss), *(_f(tune.figures[k]) for k in extra),
                     _f(tune.rounds), _f(tune.duration_s, 1),
                     _f(tune.budget_s), tune.stop_reason]])]
    if tune.reference_val:
        out.append(_references("validation split", loss.removeprefix("val_"), tune.best_loss,
                               tune.reference_val, tune.reference_verdict))
    return out


def _references(where: str, loss: str, tuned: float, refs: dict, verdict: str) -> Section:
    rows = [["tarn, tuned", _f(tuned)]]
    rows += [[name.replace("_", " "), _f(f.get(loss))] for name, f in refs.items()]
    return Section(f"against default models, {where}: {verdict}", ["model", loss], rows)


REPORT_TOP = 8  # columns per importance table in `tarn report`

def _task(kind: str):
    """The task class evaluate.json names (a file without ``task`` is binary)."""
    from tarn.core.tasks import task_class

    return task_class(kind or "binary")


def _evaluation(ev: EvaluateReport, sensitive: list[str]) -> list[Section]:
    m, task = ev.model, ev.task
    keys = [k for k in _task(task).REPORT_FIGURES if k in m]
    out = [Section(f"test split, version {ev.version} ({task})", keys,
                   [[_f(m[k]) for k in keys]])]
    if isinstance(m.get("per_class"), dict):
        out.append(Section("per class (test split)",
                           ["class", "precision", "recall", "F1", "support"],
                           [[c, _f(v["precision"]), _f(v["recall"]), _f(v["f1"]),
                             _f(v["support"])] for c, v in m["per_class"].items()]))
    if ev.reference_test and ev.unmitigated:
        loss = _task(task).LOSS
        out.append(_references("test split", loss, ev.unmitigated[loss],
                               ev.reference_test, ev.reference_verdict))
    # signed differences without -> with reweighing (never a relative "reduction")
    changes = ev.fairness_changes or {}
    shown = _task(task).REPORT_FAIRNESS  # (figure, heading); rows need the first
    fair = [[feat, *(_f(m.get(f"{feat}_{k}")) for k, _ in shown),
             changes.get(feat, "not applied")]
            for feat in sensitive if f"{feat}_{shown[0][0]}" in m]
    columns = ["feature", *(h for _, h in shown), "gap without -> with reweighing"]
    if fair:
        out.append(Section("fairness on the test split", columns, fair))
    if (ev.mitigation or {}).get("reason"):
        out.append(Section("mitigation (decided on validation)", ["registered", "why"], [[
            "reweighed" if ev.mitigation["applied"] else "unmitigated",
            ev.mitigation["reason"]]]))
    out += [Section(f"{title}, test split", headers, [[_f(v) for v in r] for r in rows])
            for title, headers, rows in tables(ev.explanations, REPORT_TOP)]
    return out
