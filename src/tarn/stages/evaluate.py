"""The evaluate stage: the registered model on the held-out test split.

Quality (logloss, ROC AUC, accuracy, F1, Brier, calibration error), fairness per sensitive
group (fairlearn: selection rate, TPR, FPR, accuracy; demographic parity and equalized odds
differences), the same for the model trained with the other mitigation setting so the cost and
gain of mitigation sit side by side, DVC plots, Evidently reports. Everything is written as DVC
metrics/plots and logged to the registered version's MLflow run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn import metrics as skm

from tarn.config import Params, stage_view
from tarn.core import html_report as html
from tarn.core.catalog import (
    COMPARATOR_DIR,
    EVALUATE_REPORT,
    EVALUATION_HTML,
    EVIDENTLY_DIR,
    FAIRNESS_REPORT,
    MODEL_DIR,
    PLOTS_DIR,
    load_split,
    load_train_info,
)
from tarn.core.features import FEATURES
from tarn.core.files import atomic_dir, staged
from tarn.core.metrics import calibration_curve, fairness, quality
from tarn.core.model import load_local

# params keys this stage reads (each is in its dvc.yaml params; tests check both)
READS = ("schema", "evaluate", "train.threshold", "bias.mitigation", *FEATURES)
# keys that only say where work runs or lands: read, but not DVC params
AMBIENT = ("paths", "mlflow")



@dataclass(frozen=True)
class EvaluateResult:
    metrics: dict
    comparison: dict


def _plots(y: np.ndarray, proba: np.ndarray, threshold: float, bins: int, out: Path) -> None:
    fpr, tpr, _ = skm.roc_curve(y, proba)
    pd.DataFrame({"fpr": fpr, "tpr": tpr}).to_csv(out / "roc.csv", index=False)
    prec, rec, _ = skm.precision_recall_curve(y, proba)
    step = max(1, len(prec) // 2000)  # a readable curve, not one point per row
    pd.DataFrame({"recall": rec[::step], "precision": prec[::step]}).to_csv(
        out / "pr.csv", index=False)
    frac, mean = calibration_curve(y, proba, bins)
    pd.DataFrame({"mean_predicted": mean, "fraction_positive": frac}).to_csv(
        out / "calibration.csv", index=False)
    pred = (proba >= threshold).astype(int)
    pd.DataFrame({"actual": y, "predicted": pred}).to_csv(out / "confusion.csv", index=False)
    fig, ax = plt.subplots(1, 4, figsize=(18, 4.2))
    ax[0].plot(fpr, tpr)
    ax[0].plot([0, 1], [0, 1], "k:", lw=1)
    ax[0].set(title=f"ROC (AUC {skm.roc_auc_score(y, proba):.4f})", xlabel="FPR", ylabel="TPR")
    ax[1].plot(rec, prec)
    ax[1].set(title="Precision-recall", xlabel="recall", ylabel="precision")
    ax[2].plot(mean, frac, "o-")
    ax[2].plot([0, 1], [0, 1], "k:", lw=1)
    ax[2].set(title="Calibration", xlabel="mean predicted", ylabel="fraction positive")
    cm = skm.confusion_matrix(y, pred)
    ax[3].imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax[3].text(j, i, f"{v:,}", ha="center", va="center")
    ax[3].set(title="Confusion matrix", xlabel="predicted", ylabel="actual", xticks=[0, 1],
              yticks=[0, 1])
    fig.tight_layout()
    fig.savefig(out / "evaluation.png", dpi=80)
    plt.close(fig)


def compare(main: dict, other: dict, mitigated: bool, features: list[str]) -> dict:
    """Mitigation's cost (AUC, logloss) and gain (parity) between the two models."""
    with_m, without_m = (main, other) if mitigated else (other, main)
    out = {"auc_cost": without_m["quality"]["roc_auc"] - with_m["quality"]["roc_auc"],
           "logloss_cost": with_m["quality"]["logloss"] - without_m["quality"]["logloss"]}
    for f in features:
        a = without_m["fairness"][f]["demographic_parity_difference"]
        b = with_m["fairness"][f]["demographic_parity_difference"]
        out[f"dpd_reduction_{f}"] = (a - b) / a if a > 0 else 0.0
        out[f"eod_change_{f}"] = (with_m["fairness"][f]["equalized_odds_difference"]
                                  - without_m["fairness"][f]["equalized_odds_difference"])
    return out


def run(params: Params, root: Path) -> EvaluateResult:
    params = stage_view(params, "evaluate", READS, AMBIENT)
    models = root / params.paths.models
    reports = root / params.paths.reports
    train_info = load_train_info(params, root)
    test = load_split(params, root, "test")
    cfg = params.evaluate
    sensitive = params.schema.sensitive
    results = {}
    probas = {}
    for name, folder in (("model", MODEL_DIR), ("comparator", COMPARATOR_DIR)):
        proba = load_local(models / folder).predict_proba(test.X)[:, 1]
        pred = (proba >= params.train.threshold).astype(int)
        probas[name] = proba
        results[name] = {"quality": quality(test.y, proba, params.train.threshold,
                                            cfg.calibration_bins),
                         "fairness": fairness(test.y, pred, test.frame, sensitive)}
    mitigated = params.bias.mitigation == "reweighing"
    comparison = {
        "with_mitigation" if mitigated else "without_mitigation": results["model"],
        "without_mitigation" if mitigated else "with_mitigation": results["comparator"],
        "effect": compare(results["model"], results["comparator"], mitigated, sensitive),
    }
    main = results["model"]
    flat = {**main["quality"],
            **{f"{f}_{k}": v for f, d in main["fairness"].items() for k, v in d.items()
               if k != "groups"}}
    plots_dir = reports / PLOTS_DIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    _plots(test.y, probas["model"], params.train.threshold, cfg.calibration_bins, plots_dir)
    evidently_paths: dict[str, str] = {}
    with atomic_dir(reports / EVIDENTLY_DIR) as ev:
        if cfg.evidently:
            evidently_paths = _evidently(params, root, test, probas["model"], ev)
    with staged() as st:
        st.json(reports / EVALUATE_REPORT, {"model": flat, "effect": comparison["effect"],
                                            "version": train_info["version"]})
        st.json(reports / FAIRNESS_REPORT, comparison)
        st.text(reports / EVALUATION_HTML,
                render_html(comparison, mitigated, train_info, evidently_paths))
    _log_to_mlflow(params, root, train_info["run_id"], flat, comparison, reports)
    return EvaluateResult(flat, comparison)


def _evidently(params: Params, root: Path, test, proba: np.ndarray, out: Path) -> dict[str, str]:
    from tarn.core import evidently_reports as er

    cur = test.frame.assign(**{er.PROBA: proba,
                               er.PREDICTION: (proba >= params.train.threshold).astype(int)})
    paths = {}
    er.save(er.classification(cur, params.schema, params.prepare), out, "quality")
    paths["classification quality"] = "evidently/quality.html"
    reference = load_split(params, root, "train").frame
    er.save(er.drift(test.frame, reference, params.schema, params.prepare), out, "drift")
    paths["data drift (train -> test)"] = "evidently/drift.html"
    for feat in params.schema.sensitive:
        for group, p in er.per_group(cur, feat, params.schema, params.prepare, out).items():
            paths[f"quality for {feat} = {group}"] = f"evidently/{p.name}"
    return paths


def _log_to_mlflow(params: Params, root: Path, run_id: str, flat: dict, comparison: dict,
                   reports: Path) -> None:
    import mlflow

    from tarn.core.tracking import connect, quiet_mlflow

    connect(params.mlflow, root)
    with quiet_mlflow():
        client = mlflow.MlflowClient()
        for k, v in flat.items():
            if isinstance(v, (int, float)) and np.isfinite(v):
                client.log_metric(run_id, f"test_{k}", float(v))
        for k, v in comparison["effect"].items():
            client.log_metric(run_id, f"mitigation_{k}", float(v))
        for path, dest in ((reports / EVALUATION_HTML, None),
                           (reports / FAIRNESS_REPORT, None), (reports / PLOTS_DIR, PLOTS_DIR),
                           (reports / EVIDENTLY_DIR, EVIDENTLY_DIR)):
            if path.is_dir():
                client.log_artifacts(run_id, str(path), dest)
            elif path.is_file():
                client.log_artifact(run_id, str(path))


def render_html(comparison: dict, mitigated: bool, train_info: dict,
                evidently_paths: dict[str, str]) -> str:
    a, b = comparison["with_mitigation"], comparison["without_mitigation"]
    keys = ["logloss", "roc_auc", "accuracy", "f1", "brier", "calibration_error",
            "positive_rate_predicted"]
    sections = [
        f"<p>Registered model <b>{html.esc(train_info['registered_model'])}</b> version "
        f"<b>{html.esc(train_info['version'])}</b> (trained "
        f"{'with' if mitigated else 'without'} reweighing), on the held-out test split.</p>",
        "<h2>Quality: with vs without mitigation</h2>",
        html.table(["metric", "with reweighing", "without", "difference"],
                   [[k, a["quality"][k], b["quality"][k], a["quality"][k] - b["quality"][k]]
                    for k in keys]),
        "<h2>Fairness</h2>",
    ]
    for feat in a["fairness"]:
        fa, fb = a["fairness"][feat], b["fairness"][feat]
        sections.append(f"<h3>{html.esc(feat)}</h3>")
        sections.append(html.table(
            ["", "with reweighing", "without"],
            [["demographic parity difference", fa["demographic_parity_difference"],
              fb["demographic_parity_difference"]],
             ["equalized odds difference", fa["equalized_odds_difference"],
              fb["equalized_odds_difference"]]]))
        rows = [[g, v["count"], v["selection_rate"], fb["groups"].get(g, {}).get(
            "selection_rate", float("nan")), v["tpr"], v["fpr"], v["accuracy"]]
            for g, v in fa["groups"].items()]
        sections.append(html.table(["group", "rows", "selection rate", "selection rate (without)",
                                    "TPR", "FPR", "accuracy"], rows))
    sections.append("<h2>Curves</h2><img src='plots/evaluation.png' alt='evaluation plots'>")
    if evidently_paths:
        sections.append("<h2>Evidently reports</h2><ul>" + "".join(
            f"<li><a href='{html.esc(p)}'>{html.esc(k)}</a></li>"
            for k, p in evidently_paths.items()) + "</ul>")
    return html.page("tarn: model evaluation", sections)
