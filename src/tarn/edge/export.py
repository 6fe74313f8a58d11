"""The client bundle: export the model Pipeline to ONNX, prove parity, publish atomically.

A bundle is published only when the ONNX graph gives the Python Pipeline's scores (within
``edge.parity_tolerance``) and labels on held-out rows, so a client never runs a model that
disagrees with the backend. Scores per task: binary, P(class 1); multiclass, every class's
probability (the largest difference over all classes counts); regression, the predicted value,
compared relative to their spread: ``|onnx - python| / std(python)`` over the parity rows,
since the graph computes in float32 (a value near 1,000 is only exact to about 1e-4 there) and
what matters is the error against the differences the model makes between rows (the spread of
the predictions is at most the target's, so this is at least as strict as a tolerance relative
to the target's standard deviation). Layout under ``edge.bundle_dir``::

    <name>-v<version>/model.onnx, schema.json, metadata.json, SHA256SUMS
    current.json      {"name", "version", "path", "sha256"}: the bundle clients should use

The exported graph is an *equivalent* of the Pipeline, not a copy: skl2onnx cannot convert
the categorical imputers (their missing marker is NaN / None, not a string), so they are left
out and the runner's feed builder (:mod:`tarn.edge.runner`) maps a missing string to the same
category they impute. The parity check runs through that same feed builder.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline

from tarn.config import EdgeConfig, PrepareConfig, SchemaConfig
from tarn.core.columns import ColumnRules
from tarn.core.features import MISSING_CATEGORY, OrderedCodes, feature_columns, input_schema
from tarn.core.files import atomic_dir
from tarn.core.task import Task

# re-exported: the deployment publishes and points through this module
from tarn.edge.pointer import (  # noqa: F401
    CURRENT,
    current_bundle,
    current_version,
    point_current,
    withdraw_current,
)
from tarn.edge.runner import (
    METADATA,
    MISSING_KEY,
    MODEL,
    SCHEMA,
    SUMS,
    EdgeModel,
    OnnxScorer,
    sha256_bytes,
)
from tarn.errors import TarnError

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}  # the default ai.onnx.ml 5 is not supported yet
FORMAT = 1


class ParityError(TarnError):
    """The ONNX graph disagrees with the Python model: the bundle must not ship."""


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    labels_equal: bool
    rows: int
    tolerance: float
    rows_over: int  # rows whose difference exceeds the tolerance
    measure: str = "absolute"  # "absolute" (probabilities) | "relative" (regression: / std)

    @property
    def ok(self) -> bool:
        return self.labels_equal and self.max_abs_diff <= self.tolerance  # NaN fails


@dataclass(frozen=True)
class Bundle:
    path: Path
    parity: Parity
    checksum: str  # sha256 of model.onnx


# --------------------------------------------------------------------------- export
@functools.cache
def _register_xgboost() -> None:
    """skl2onnx has no XGBoost converter of its own; onnxmltools' must be registered once
    (the classifier's serves binary:logistic and multi:softprob, the regressor's values)."""
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from xgboost import XGBClassifier, XGBRegressor

    update_registered_converter(
        XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
        convert_xgboost, options={"nocl": [True, False], "zipmap": [True, False, "columns"]})
    update_registered_converter(XGBRegressor, "XGBoostXGBRegressor",
                                calculate_linear_regressor_output_shapes, convert_xgboost)


def _is_missing_imputer(step) -> bool:
    """A categorical imputer whose only job is NaN/None -> the 'missing' category."""
    if not isinstance(step, SimpleImputer) or step.strategy != "constant":
        return False
    marker = step.missing_values
    return marker is None or (isinstance(marker, float) and math.isnan(marker))


def _strip_string_imputers(steps: list, name: str) -> list:
    """The steps without the leading missing-string imputers the feed builder replaces."""
    keep = list(steps)
    while keep and _is_missing_imputer(keep[0][1]):
        if keep[0][1].fill_value != MISSING_CATEGORY:
            raise TarnError(f"transformer {name!r} imputes missing strings as "
                            f"{keep[0][1].fill_value!r}, the edge runner feeds "
                            f"{MISSING_CATEGORY!r}",
                            f"impute with fill_value={MISSING_CATEGORY!r} (tarn.features)")
        keep.pop(0)
    if not keep:
        raise TarnError(f"transformer {name!r} only imputes", "end it with an encoder")
    return keep


def exportable_pipeline(pipe: Pipeline, cat: list[str]) -> Pipeline:
    """An equivalent Pipeline skl2onnx can convert (the input Pipeline is not modified)."""
    pre, model = pipe.steps[0][1], pipe.steps[-1][1]
    if len(pipe.steps) != 2 or not isinstance(pre, ColumnTransformer):
        raise TarnError("the model is not Pipeline([ColumnTransformer, XGBoost model])",
                        "export a model trained by `tarn train`")
    pre = copy.deepcopy(pre)
    new = []
    for name, tr, cols in pre.transformers_:
        if isinstance(tr, Pipeline) and len(cols) > 0 and set(cols) <= set(cat):
            # OrderedCodes is tarn's own class: its fitted OrdinalEncoder is what converts
            tr = Pipeline([(n, s.encoder_ if isinstance(s, OrderedCodes) else s)
                           for n, s in _strip_string_imputers(tr.steps, name)])
        new.append((name, tr, cols))
    pre.transformers_ = new
    return Pipeline([("pre", pre), ("model", model)])


def export_onnx(pipe: Pipeline, schema_cfg: SchemaConfig, prepare_cfg: PrepareConfig,
                task: Task) -> onnx.ModelProto:
    """The Pipeline as one ONNX graph: one (n, 1) input per feature column (float32 numbers,
    strings); outputs ``label`` and ``probabilities`` (n, K) for classification (no zipmap:
    a plain tensor), ``variable`` (n, 1) for regression."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    _register_xgboost()
    num, cat = feature_columns(schema_cfg, prepare_cfg)
    exported = exportable_pipeline(pipe, cat)
    types = [(c, FloatTensorType([None, 1])) for c in num]
    types += [(c, StringTensorType([None, 1])) for c in cat]
    try:
        model = convert_sklearn(exported, initial_types=types,
                                options=({id(exported): task.ONNX_OPTIONS}
                                         if task.ONNX_OPTIONS else None),
                                target_opset=TARGET_OPSET)
    except Exception as e:  # skl2onnx raises many types; all mean "not convertible"
        raise TarnError(f"ONNX export failed: {type(e).__name__}: {e}",
                        "keep the model to imputation + one-hot + XGBClassifier or "
                        "XGBRegressor "
                        "(see docs/facts.md, onnxmltools)") from e
    onnx.helper.set_model_props(model, {MISSING_KEY: MISSING_CATEGORY})
    model.doc_string = f"tarn model ({task.kind}): Pipeline(ColumnTransformer, XGBoost)"
    return model


# --------------------------------------------------------------------------- parity
def frame_columns(X: pd.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
    """A model frame as the runner's input columns (float64 + NaN, object + None)."""
    out: dict[str, np.ndarray] = {}
    for c in names:
        s = X[c]
        if pd.api.types.is_numeric_dtype(s):
            out[c] = s.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            s = s.astype(object)
            out[c] = s.where(s.notna(), None).to_numpy(dtype=object)
    return out


def parity_of(task: Task, onnx_scores: np.ndarray, python_scores: np.ndarray,
              tolerance: float) -> Parity:
    """Pure: how far the graph's scores are from the Python model's, per task (see the
    module docstring: absolute for probabilities, over every class; relative for values),
    and whether the labels (the version's threshold, the most probable class) agree."""
    a = np.asarray(onnx_scores, dtype=np.float64)
    b = np.asarray(python_scores, dtype=np.float64)
    if a.shape != b.shape:
        return Parity(math.inf, False, len(b), tolerance, len(b), task.PARITY)
    diff = np.abs(a - b) / task.parity_scale(b)  # 1 for probabilities
    if diff.ndim == 2:  # multiclass: a row is as far off as its worst class
        diff = diff.max(axis=1, initial=0.0)
    max_diff = float(np.max(diff, initial=0.0)) if np.all(np.isfinite(diff)) else math.inf
    labels = task.parity_labels(a, b)
    return Parity(max_diff, labels, len(b), tolerance, int(np.sum(~(diff <= tolerance))),
                  task.PARITY)


def check_parity(pipe: Pipeline, onnx_bytes: bytes, X: pd.DataFrame, tolerance: float,
                 task: Task) -> Parity:
    """Compare the Python Pipeline with the ONNX graph, fed by the runner's own feed
    builder, on the same rows (``X`` in the model-frame format)."""
    if X.empty:
        raise TarnError("no rows to check ONNX parity on", "prepare a test split first")
    scorer = OnnxScorer(onnx_bytes)
    onnx_scores = scorer.scores(frame_columns(X, scorer.input_names))
    return parity_of(task, onnx_scores, task.scores(pipe, X), tolerance)


def parity_rows(X: pd.DataFrame, n: int) -> pd.DataFrame:
    """Up to ``n`` held-out rows, a seeded sample when there are more (all batches)."""
    return X if len(X) <= n else X.sample(n, random_state=0)


# --------------------------------------------------------------------------- bundle
def bundle_schema(schema_cfg: SchemaConfig, prepare_cfg: PrepareConfig) -> dict:
    """schema.json: the ordered input columns a client must send, from the contract, with
    what the edge runner and the page need to read inputs as the ETL does, without
    params.yaml: each column's aliases (header names matched after normalization: lower
    case, runs of spaces and '-' as '_'), categories and min/max, the missing markers, and
    whether an unknown category breaks the contract (``unknown_categories``)."""
    cols = []
    for c in input_schema(schema_cfg, prepare_cfg).to_dict():
        spec = schema_cfg.column(c["name"])
        cols.append({"name": c["name"], "type": c["type"], "required": c["required"],
                     "aliases": list(spec.aliases),
                     "categories": spec.categories if c["type"] == "string" else None,
                     "min": spec.min, "max": spec.max})
    return {"format": FORMAT, "columns": cols,
            "missing": {"number": "NaN (or null)", "string": "null",
                        "onnx_string_feed": MISSING_CATEGORY},
            "missing_values": list(schema_cfg.missing_values),
            "unknown_categories": schema_cfg.unknown_categories,
            # names accepted and ignored (excluded features, the target, batch) and the policy
            # for other names: the rule of tarn.core.columns, which the runner mirrors
            **ColumnRules.of(schema_cfg, prepare_cfg).bundle_fields(),
            "names": "matched as the ETL matches a header: lower case, runs of spaces and "
                     "'-' read as '_', the name or one of its aliases"}


# what a client is told about the model: quality figures it may show, never who promoted the
# version, why, or where it was built and deployed (those stay in the registry)
PUBLIC_METRICS = ("roc_auc", "logloss", "accuracy", "f1", "f1_macro", "precision", "recall",
                  "brier", "rmse", "mae", "r2")


def _metadata(*, name: str, version: str, tags: dict, metrics: dict, parity: Parity,
              checksum: str, model: onnx.ModelProto, task: Task) -> dict:
    """metadata.json: what the page and the edge runner need (name, version, created, the
    task with its classes, decision threshold and target name, checksum, inputs/outputs,
    opset, parity, headline quality figures) and the code version; promotion records (who,
    why, previous), deployment notes and the other tags are left out: the bundle is public."""
    from tarn.core.tags import Lineage

    # the code version, from either tag form (the JSON lineage tag, or one tag per field)
    commit = Lineage.from_tags(tags).git_commit
    quality = {str(k): float(v) for k, v in metrics.items()
               if str(k).removeprefix("test_") in PUBLIC_METRICS}
    return {
        "format": FORMAT, "name": name, "version": str(version),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "tags": {Lineage.key("git_commit"): commit} if commit else {},
        "metrics": quality,
        "task": task.kind, "classes": list(task.classes), "target": task.target,
        "parity": asdict(parity), "threshold": task.threshold, "sha256": checksum,
        "inputs": [i.name for i in model.graph.input],
        "outputs": dict(task.ONNX_OUTPUTS),
        "opset": TARGET_OPSET,
    }


def _dir_name(name: str, version: str) -> str:
    d = f"{name}-v{version}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", d):
        raise TarnError(f"bundle name {d!r} is not a safe folder name",
                        "use letters, digits, '.', '_' and '-' in model names and versions")
    return d


def _write_bundle(tmp: Path, onnx_bytes: bytes, schema: dict, metadata: dict) -> None:
    (tmp / MODEL).write_bytes(onnx_bytes)
    (tmp / SCHEMA).write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
    (tmp / METADATA).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    sums = [f"{sha256_bytes((tmp / f).read_bytes())}  {f}" for f in (MODEL, SCHEMA, METADATA)]
    (tmp / SUMS).write_text("\n".join(sums) + "\n", encoding="utf-8")
    EdgeModel(tmp)  # the bundle must load and verify before it becomes visible


def publish_bundle(pipe: Pipeline, *, name: str, version: str, tags: dict, metrics: dict,
                   X_holdout: pd.DataFrame, schema_cfg: SchemaConfig,
                   prepare_cfg: PrepareConfig, task: Task, edge_cfg: EdgeConfig,
                   out_root: Path, point: bool = True) -> Bundle:
    """Export, prove parity on held-out rows, then write the bundle and (``point``) point
    current.json at it, both atomically. Raises ParityError, publishing nothing, when parity
    fails. The server passes ``point=False`` and points only after it serves the version, so
    browsers never get a version the server has not taken. ``schema_cfg``, ``prepare_cfg``
    and ``task`` are the version's own (its card: :func:`tarn.core.model.served_contract`)."""
    folder = _dir_name(name, str(version))
    model = export_onnx(pipe, schema_cfg, prepare_cfg, task)
    onnx_bytes = model.SerializeToString()
    parity = check_parity(pipe, onnx_bytes, parity_rows(X_holdout, edge_cfg.parity_rows),
                          edge_cfg.parity_tolerance, task)
    if not parity.ok:
        raise ParityError(
            f"ONNX parity failed for {name} v{version}: max {parity.measure} difference "
            f"{parity.max_abs_diff:.3g} "
            f"(tolerance {parity.tolerance:g}, {parity.rows_over} of {parity.rows} rows over), "
            f"labels {'equal' if parity.labels_equal else 'differ'}; nothing published",
            "serve the Python model; fix the export (a scaler in front of trees is the known "
            "cause, docs/facts.md)")
    checksum = sha256_bytes(onnx_bytes)
    metadata = _metadata(name=name, version=version, tags=tags, metrics=metrics,
                         parity=parity, checksum=checksum, model=model, task=task)
    out_root = Path(out_root)
    with atomic_dir(out_root / folder) as tmp:
        _write_bundle(tmp, onnx_bytes, bundle_schema(schema_cfg, prepare_cfg), metadata)
    bundle = Bundle(out_root / folder, parity, checksum)
    if point:
        point_current(out_root, name, str(version), bundle)
    return bundle


