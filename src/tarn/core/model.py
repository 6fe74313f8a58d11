"""How a fitted Pipeline becomes an MLflow model, and the only way one is loaded back.

Training, retraining and the registry all package models through here, so every version
has the same format (skops, with tarn's own list of trusted types) and the same contract.

Loading trusts nothing in the model's own files: MLflow's loader reads the serialization
format and the skops trusted types from the version's ``MLmodel`` and accepts pickle, so
anyone who can register a version could run code wherever it is loaded. :func:`load_trusted`
refuses anything but a skops file with no bundled code whose every type is in tarn's
allow-list, and never hands the file to MLflow or pickle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from tarn.config import PrepareConfig, SchemaConfig
from tarn.core.features import OrderedCodes, input_schema
from tarn.core.task import Task
from tarn.errors import TarnError

# skops (MLflow's safe default format) must be told these types are expected in the file;
# this list is also the allow-list enforced at load time (skops trusts scikit-learn's own).
TRUSTED_TYPES = ["numpy.dtype", "xgboost.core.Booster", "xgboost.sklearn.XGBClassifier",
                 "xgboost.sklearn.XGBRegressor", f"{OrderedCodes.__module__}.OrderedCodes"]


class UntrustedModel(TarnError):
    """A model folder tarn refuses to load (its format could run code)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "register the model with `tarn train` (skops format, no "
                                  "bundled code); tarn never loads pickled models")


def schema_hash(schema: SchemaConfig, prepare: PrepareConfig) -> str:
    """Fingerprint of the model's input contract (used to refuse mismatched retraining)."""
    s = input_schema(schema, prepare)
    return hashlib.sha256(json.dumps(s.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Packaging:
    """What travels with a model besides its weights: the input/output signature, the card
    (task, classes, decision threshold, the dataset contract it was trained on; read back by
    :func:`read_card`) and the method MLflow's pyfunc calls."""

    signature: object  # mlflow.models.ModelSignature
    card: dict
    predict_fn: str  # "predict_proba" (classification) | "predict" (regression)

    @property
    def metadata(self) -> dict:
        return {CARD_KEY: self.card}


CARD_KEY = "tarn"


def packaging(schema: SchemaConfig, prepare: PrepareConfig, task: Task, pipe: Pipeline,
              sample: pd.DataFrame) -> Packaging:
    """Inputs from the contract; outputs from what the Pipeline really returns."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    out = np.asarray(getattr(pipe, task.PREDICT_FN)(sample))
    outputs = Schema([TensorSpec(out.dtype, (-1, *out.shape[1:]))])
    card = {**task.card(), "schema": schema.model_dump(mode="json", by_alias=True),
            "prepare": {k: getattr(prepare, k) for k in
                        ("exclude_features", "numeric_scaler", "max_categories",
                         "onehot_max_values", "min_category_rows")},
            "schema_hash": schema_hash(schema, prepare)}
    return Packaging(ModelSignature(inputs=input_schema(schema, prepare), outputs=outputs),
                     card, task.PREDICT_FN)


def read_card(model_dir: Path) -> dict:
    """The card a model folder carries (``{}`` for a version from before cards): read from
    the ``MLmodel`` YAML, nothing executed."""
    import yaml

    try:
        doc = yaml.safe_load((model_dir / "MLmodel").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    card = (doc.get("metadata") or {}).get(CARD_KEY) if isinstance(doc, dict) else None
    return card if isinstance(card, dict) else {}


def task_of(model_dir: Path) -> Task:
    """The task a model folder was trained for (binary for a version from before cards)."""
    return Task.from_card(read_card(model_dir))


def pip_requirements() -> list[str]:
    import mlflow.sklearn
    import skops
    import xgboost

    return [*mlflow.sklearn.get_default_pip_requirements(), f"xgboost-cpu=={xgboost.__version__}",
            f"skops=={skops.__version__}", f"pandas=={pd.__version__}"]


def save_local(pipe: Pipeline, path: Path, pack: Packaging, example: pd.DataFrame) -> None:
    """An MLflow model folder (skops format) that later stages load without the registry."""
    import mlflow.sklearn

    mlflow.sklearn.save_model(pipe, str(path), signature=pack.signature, input_example=example,
                              pyfunc_predict_fn=pack.predict_fn, metadata=pack.metadata,
                              skops_trusted_types=TRUSTED_TYPES,
                              pip_requirements=pip_requirements())


def check_trusted(model_dir: Path) -> Path:
    """The skops file of an MLflow model folder, if tarn may load it; else UntrustedModel.

    Reads only YAML and the skops file's type listing: nothing in the folder is executed."""
    import skops.io
    import yaml

    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        raise UntrustedModel(f"{model_dir.name}: no MLmodel file")
    try:
        flavors = (yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}).get("flavors") or {}
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError) as e:
        raise UntrustedModel(f"MLmodel is not readable YAML ({e})") from None
    sk = flavors.get("sklearn")
    if not isinstance(sk, dict):
        raise UntrustedModel(f"not a scikit-learn model (flavors: {sorted(flavors)})")
    fmt = sk.get("serialization_format")
    if fmt != "skops":
        raise UntrustedModel(f"serialized as {fmt!r}, not skops: loading it could run code")
    pyfunc = flavors.get("python_function") or {}
    if sk.get("code") or pyfunc.get("code") or (model_dir / "code").exists():
        raise UntrustedModel("the model bundles Python code, which loading would import")
    name = str(sk.get("pickled_model") or "")
    path = (model_dir / name).resolve()
    if not name.endswith(".skops") or path.parent != model_dir.resolve() or not path.is_file():
        raise UntrustedModel(f"model file {name!r} is not a .skops file inside the model folder")
    try:
        found = set(skops.io.get_untrusted_types(file=path))
    except Exception as e:  # noqa: BLE001 - a malformed archive is refused, not raised through
        raise UntrustedModel(f"{name}: not a readable skops file ({e})") from None
    extra = sorted(found - set(TRUSTED_TYPES))
    if extra:
        raise UntrustedModel(f"{name} holds types outside tarn's allow-list: {extra}")
    return path


def load_trusted(model_dir: Path) -> Pipeline:
    """The Pipeline in an MLflow model folder, loaded with skops and tarn's allow-list only."""
    import skops.io

    model = skops.io.load(check_trusted(model_dir), trusted=TRUSTED_TYPES)
    if not isinstance(model, Pipeline):
        raise UntrustedModel(f"the model is a {type(model).__name__}, not a Pipeline")
    return model


def load_local(path: Path) -> Pipeline:
    if not (path / "MLmodel").is_file():
        raise TarnError(f"{path}: no trained model", "run `tarn train` (or dvc repro)")
    return load_trusted(path)


@dataclass(frozen=True)
class Served:
    """What a loaded version predicts and the contract its requests are checked against."""

    task: Task
    schema: SchemaConfig
    prepare: PrepareConfig
    from_card: bool  # False: a version from before cards, described by today's params.yaml


def served_contract(card: dict, schema: SchemaConfig, prepare: PrepareConfig,
                    threshold: float) -> Served:
    """The task and contract a version carries in its card; a version without a card (from
    before cards: binary) falls back to the given ones (today's params.yaml), which the caller
    should say in its log. ``prepare`` keys the card does not hold keep the given values."""
    if card.get("schema"):
        merged = prepare.model_copy(update={k: v for k, v in (card.get("prepare") or {}).items()
                                            if k in PrepareConfig.model_fields})
        return Served(Task.from_card(card), SchemaConfig.model_validate(card["schema"]),
                      PrepareConfig.model_validate(merged.model_dump()), True)
    task = (Task.of(schema, threshold) if schema.task == "binary"
            else Task("binary", ("0", "1"), float(threshold), schema.target.name))
    return Served(task, schema, prepare, False)


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def card_markdown(card: dict, lineage: dict, metrics: dict[str, float]) -> str:
    """The card as a page a person reads (``model_card.md`` on the version's run): what the
    model predicts, from which inputs, learned from which data. The MLmodel metadata keeps the
    machine copy; the MLflow UI shows only this one."""
    schema = card.get("schema") or {}
    target = schema.get("target") or {}
    lines = [f"# Model card: {_cell(schema.get('name', 'model'))}", "",
             f"- **Task:** {card.get('task', 'binary')}",
             f"- **Predicts:** `{_cell(card.get('target', target.get('name', '')))}`"]
    if card.get("classes"):
        lines.append("- **Classes:** " + ", ".join(f"`{_cell(c)}`" for c in card["classes"]))
    if card.get("task") and Task.from_card(card).decision_threshold is not None:
        lines.append(f"- **Decision threshold:** {card.get('threshold', 0.5)} "
                     "(probability of the second class at or above it)")
    sensitive = schema.get("sensitive") or []
    if sensitive:
        lines.append("- **Sensitive features (fairness measured on):** "
                     + ", ".join(f"`{_cell(s)}`" for s in sensitive))
    lines += ["", "## Inputs", "", "| column | type | required | values |", "|---|---|---|---|"]
    for c in schema.get("columns") or []:
        if c.get("categories"):
            cats = c["categories"]
            values = ", ".join(map(str, cats[:8])) + (f" (+{len(cats) - 8})" if len(cats) > 8
                                                      else "")
        elif c.get("min") is not None and c.get("max") is not None:
            values = f"{c['min']:g} .. {c['max']:g}"
        elif c.get("min") is not None:
            values = f">= {c['min']:g}"
        elif c.get("max") is not None:
            values = f"<= {c['max']:g}"
        else:
            values = ""
        lines.append(f"| `{_cell(c.get('name'))}` | {c.get('dtype')} | "
                     f"{'yes' if c.get('required') else 'no'} | {_cell(values)} |")
    if lineage:
        lines += ["", "## Lineage", "", "| | |", "|---|---|"]
        for k, v in lineage.items():
            shown = ", ".join(map(str, v)) if isinstance(v, list) else v
            lines.append(f"| {k} | {_cell(shown)} |")
    figures = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    if figures:
        lines += ["", "## Figures at registration", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:,.0f} |" if float(v).is_integer() else f"| {k} | {v:.4f} |"
                  for k, v in sorted(figures.items())]
    lines += ["", "Test figures and reports (evaluation, fairness, drift) are the run's "
              "metrics and artifacts, logged by the evaluate stage.", ""]
    return "\n".join(lines)
