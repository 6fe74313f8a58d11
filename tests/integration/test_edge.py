"""The client bundle: ONNX export parity, publishing, verification and the edge runner."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tarn.core.catalog import load_split
from tarn.core.features import feature_columns
from tarn.core.task import Task
from tarn.edge import export as edge
from tarn.edge.runner import (
    BundleError,
    EdgeModel,
    OnnxScorer,
    build_feeds,
    predict_csv,
)
from tarn.errors import TarnError
from tarn.stages import etl, prepare, snapshot
from tarn.stages.train import fit_pipeline
from tests.support.project import write_params, write_small_lake

MPARAMS = {"n_estimators": 50, "max_depth": 5, "learning_rate": 0.2, "tree_method": "hist",
           "n_jobs": 2, "random_state": 0}
BUNDLE_FILES = {"model.onnx", "schema.json", "metadata.json", "SHA256SUMS"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(params, pipe, held-out test split) from a small lake of real Adult rows."""
    root = tmp_path_factory.mktemp("edge")
    params = write_params(root)
    write_small_lake(root / "data" / "lake", n_train=1000, n_test=800)
    snapshot.run(params, root)
    etl.run(params, root)
    prepare.run(params, root)
    train = load_split(params, root, "train")
    test = load_split(params, root, "test")
    return params, fit_pipeline(train, None, MPARAMS, params), train, test


@pytest.fixture(scope="module")
def onnx_bytes(trained) -> bytes:
    params, pipe, _, _ = trained
    return edge.export_onnx(pipe, params.schema, params.prepare,
                            task(params)).SerializeToString()


@pytest.fixture(scope="module")
def published(trained, tmp_path_factory) -> edge.Bundle:
    return publish(trained, tmp_path_factory.mktemp("bundles"), "7")


def publish(trained, out_root: Path, version: str) -> edge.Bundle:
    params, pipe, _, test = trained
    return edge.publish_bundle(
        pipe, name="tarn-adult", version=version, tags={"tarn.git_commit": "abc123"},
        metrics={"roc_auc": 0.91}, X_holdout=test.X, schema_cfg=params.schema,
        prepare_cfg=params.prepare, task=task(params), edge_cfg=params.edge, out_root=out_root)


def task(params) -> Task:
    return Task.of(params.schema, params.train.threshold)


def python_proba(pipe, X: pd.DataFrame) -> np.ndarray:
    return pipe.predict_proba(X)[:, 1].astype(np.float64)


def onnx_proba(onnx_bytes: bytes, X: pd.DataFrame) -> np.ndarray:
    scorer = OnnxScorer(onnx_bytes)
    return scorer.predict_proba(edge.frame_columns(X, scorer.input_names)).astype(np.float64)


# --------------------------------------------------------------------------- parity
def test_parity_on_heldout_rows_with_missing_values(trained, onnx_bytes):
    params, pipe, _, test = trained
    assert test.X["workclass"].isna().any() and test.X["occupation"].isna().any()
    parity = edge.check_parity(pipe, onnx_bytes, test.X, params.edge.parity_tolerance,
                               task(params))
    print(f"\nparity on {parity.rows} held-out rows: max |diff| {parity.max_abs_diff:.3g}")
    assert parity.rows == len(test.X)
    assert parity.max_abs_diff <= 1e-4
    assert parity.labels_equal and parity.rows_over == 0 and parity.ok


def test_missing_rows_specifically_match(trained, onnx_bytes):
    _, pipe, _, test = trained
    X = test.X[test.X[["workclass", "occupation", "native_country"]].isna().any(axis=1)]
    assert len(X) >= 5
    np.testing.assert_allclose(onnx_proba(onnx_bytes, X), python_proba(pipe, X), atol=1e-4)


def test_unseen_categories_nan_numbers_and_none_strings_match_python(trained, onnx_bytes):
    _, pipe, _, test = trained
    X = test.X.head(60).copy()
    X["workclass"] = X["workclass"].astype(object)
    X.iloc[:15, X.columns.get_loc("workclass")] = "Martian"  # unseen: all-zero one-hot
    X.iloc[10:20, X.columns.get_loc("education")] = "Kindergarten"
    X["age"] = X["age"].astype(np.float64)
    X.iloc[5:30, X.columns.get_loc("age")] = np.nan  # median imputation
    X["hours_per_week"] = X["hours_per_week"].astype(np.float64)
    X.iloc[25:40, X.columns.get_loc("hours_per_week")] = np.nan
    X.iloc[30:45, X.columns.get_loc("occupation")] = None  # JSON null, not NaN
    py = python_proba(pipe, X)
    assert not np.allclose(py, python_proba(pipe, test.X.head(60)))  # the edits matter
    np.testing.assert_allclose(onnx_proba(onnx_bytes, X), py, atol=1e-4)


def test_feed_builder_maps_none_and_nan_to_the_imputed_category():
    feeds = build_feeds({"n": np.array([1.5, np.nan]), "s": np.array(["a", None], dtype=object)},
                        [("n", False), ("s", True)], "missing")
    assert feeds["n"].dtype == np.float32 and feeds["n"].shape == (2, 1)
    assert np.isnan(feeds["n"][1, 0])
    assert feeds["s"].tolist() == [["a"], ["missing"]]
    s = build_feeds({"s": np.array([np.nan, "b"], dtype=object)}, [("s", True)], "missing")
    assert s["s"].ravel().tolist() == ["missing", "b"]
    with pytest.raises(ValueError, match="'s'"):
        build_feeds({"n": np.array([1.0])}, [("n", False), ("s", True)], "missing")


def test_other_models_graph_fails_parity(trained):
    params, pipe, train, test = trained
    other = fit_pipeline(train, None, {**MPARAMS, "n_estimators": 5, "random_state": 1}, params)
    other_bytes = edge.export_onnx(other, params.schema, params.prepare,
                                   task(params)).SerializeToString()
    parity = edge.check_parity(pipe, other_bytes, test.X, 1e-4, task(params))
    assert parity.max_abs_diff > 0.01 and parity.rows_over > 0 and not parity.ok


# --------------------------------------------------------------------------- publishing
def test_published_bundle_files_metadata_and_current(trained, published):
    params, pipe, _, test = trained
    out_root = published.path.parent
    assert published.path.name == "tarn-adult-v7"
    assert {p.name for p in published.path.iterdir()} == BUNDLE_FILES
    assert {p.name for p in out_root.iterdir()} == {"tarn-adult-v7", "current.json"}
    model_sha = hashlib.sha256((published.path / "model.onnx").read_bytes()).hexdigest()
    assert published.checksum == model_sha
    assert json.loads((out_root / "current.json").read_text()) == {
        "name": "tarn-adult", "version": "7", "path": "tarn-adult-v7", "sha256": model_sha}
    assert edge.current_bundle(out_root) == published.path

    meta = json.loads((published.path / "metadata.json").read_text())
    assert meta["sha256"] == model_sha and meta["threshold"] == 0.5
    assert meta["tags"] == {"tarn.git_commit": "abc123"} and meta["metrics"]["roc_auc"] == 0.91
    assert meta["parity"]["labels_equal"] and meta["parity"]["max_abs_diff"] <= 1e-4
    assert meta["parity"]["rows"] == len(test.X)
    assert meta["outputs"]["probabilities"] == "probabilities"
    assert meta["task"] == "binary" and meta["classes"] == list(params.schema.classes)
    assert meta["target"] == params.schema.target.name

    schema = json.loads((published.path / "schema.json").read_text())
    num, cat = feature_columns(params.schema, params.prepare)
    cols = {c["name"]: c for c in schema["columns"]}
    assert [c["name"] for c in schema["columns"]] == num + cat == meta["inputs"]
    assert cols["age"]["type"] == "long" and cols["age"]["required"]
    assert cols["workclass"]["type"] == "string" and not cols["workclass"]["required"]
    assert cols["sex"]["categories"] == ["Female", "Male"]

    sums = (published.path / "SHA256SUMS").read_text().split("\n")
    assert f"{model_sha}  model.onnx" in sums


def test_edge_model_loads_bundle_and_matches_python(trained, published):
    _, pipe, _, test = trained
    model = EdgeModel(published.path)
    assert model.version == "7" and model.metadata["name"] == "tarn-adult"
    proba = model.predict_proba(edge.frame_columns(test.X, model.input_names))
    assert proba.shape == (len(test.X),)
    np.testing.assert_allclose(proba, python_proba(pipe, test.X), atol=1e-4)


def test_republishing_moves_current(trained, tmp_path):
    first = publish(trained, tmp_path, "1")
    second = publish(trained, tmp_path, "2")
    assert edge.current_bundle(tmp_path) == second.path != first.path
    assert first.path.is_dir()  # older bundles stay for clients that pinned them
    assert json.loads((tmp_path / "current.json").read_text())["version"] == "2"


def test_parity_failure_publishes_nothing(trained, tmp_path, monkeypatch):
    params, pipe, train, test = trained
    good = publish(trained, tmp_path, "1")
    before = {p.name for p in tmp_path.iterdir()}
    other = fit_pipeline(train, None, {**MPARAMS, "n_estimators": 5, "random_state": 1}, params)
    other_model = edge.export_onnx(other, params.schema, params.prepare, task(params))
    monkeypatch.setattr(edge, "export_onnx", lambda *a, **k: other_model)
    with pytest.raises(edge.ParityError, match="parity failed") as err:
        publish(trained, tmp_path, "2")
    assert err.value.hint
    assert {p.name for p in tmp_path.iterdir()} == before  # no v2, no temp folder
    assert edge.current_bundle(tmp_path) == good.path


def test_no_current_bundle_yet(tmp_path):
    assert edge.current_bundle(tmp_path) is None


def test_unsafe_bundle_name_is_refused(trained, tmp_path):
    params, pipe, _, test = trained
    with pytest.raises(TarnError, match="safe folder name"):
        edge.publish_bundle(pipe, name="../evil", version="1", tags={}, metrics={},
                            X_holdout=test.X, schema_cfg=params.schema,
                            prepare_cfg=params.prepare, task=task(params), edge_cfg=params.edge,
                            out_root=tmp_path)
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- verification
def copy_bundle(published: edge.Bundle, tmp_path: Path) -> Path:
    return Path(shutil.copytree(published.path, tmp_path / published.path.name))


def test_tampered_model_is_refused(published, tmp_path):
    bundle = copy_bundle(published, tmp_path)
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.onnx"):
        EdgeModel(bundle)


def test_tampered_schema_and_missing_files_are_refused(published, tmp_path):
    bundle = copy_bundle(published, tmp_path)
    schema = bundle / "schema.json"
    schema.write_text(schema.read_text().replace('"required": true', '"required": false'))
    with pytest.raises(BundleError, match="schema.json"):
        EdgeModel(bundle)
    (bundle / "metadata.json").unlink()
    with pytest.raises(BundleError, match="metadata.json"):
        EdgeModel(bundle)


# --------------------------------------------------------------------------- runner
def write_csv(X: pd.DataFrame, path: Path, extra: dict | None = None) -> None:
    """The model frame as a client would write it: '?' for missing, extra columns allowed."""
    df = X.copy()
    for k, v in (extra or {}).items():
        df[k] = v
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(df.columns)
        for row in df.itertuples(index=False):
            w.writerow(["?" if pd.isna(v) else v for v in row])


def run_runner(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tarn.edge.runner", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_prints_python_probabilities(trained, published, tmp_path):
    _, pipe, _, test = trained
    X = pd.concat([test.X[test.X["workclass"].isna()].head(10), test.X.head(30)])
    path = tmp_path / "rows.csv"
    write_csv(X, path, extra={"income": 0})
    res = run_runner(str(published.path), str(path))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().split("\n")
    assert lines[0] == "proba,label" and len(lines) == len(X) + 1
    got = np.array([float(line.split(",")[0]) for line in lines[1:]])
    labels = np.array([int(line.split(",")[1]) for line in lines[1:]])
    expected = python_proba(pipe, X)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert (labels == (expected >= 0.5)).all()
    rows = predict_csv(published.path, path)
    assert [r["label"] for r in rows] == labels.tolist()


def test_cli_errors_are_one_line_and_name_the_problem(trained, published, tmp_path):
    _, _, _, test = trained
    X = test.X.head(3)
    path = tmp_path / "no_age.csv"
    write_csv(X.drop(columns=["age"]), path)
    res = run_runner(str(published.path), str(path))
    assert res.returncode == 2 and "age" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    bad = X.copy().astype({"fnlwgt": object})
    bad.iloc[1, bad.columns.get_loc("fnlwgt")] = "lots"
    write_csv(bad, path)
    res = run_runner(str(published.path), str(path))
    assert res.returncode == 2 and "line 3" in res.stderr and "fnlwgt" in res.stderr
    res = run_runner(str(tmp_path / "nowhere"), str(path))
    assert res.returncode == 2 and "nowhere" in res.stderr


def test_cli_reads_the_lakes_header_and_applies_the_contract(trained, published, tmp_path):
    """The lake's own header (education-num, capital-gain, ...: the contract's aliases) is read
    as the ETL reads it; a value the ETL would quarantine is refused naming its line and
    column, or scored and listed with --unknown-values flag."""
    _, pipe, _, test = trained
    X = test.X.head(5).copy()
    lake = X.rename(columns=lambda c: c.replace("_", "-"))
    path = tmp_path / "lake.csv"
    write_csv(lake, path, extra={"income": ">50K"})
    res = run_runner(str(published.path), str(path))
    assert res.returncode == 0, res.stderr
    got = np.array([float(line.split(",")[0]) for line in res.stdout.strip().split("\n")[1:]])
    np.testing.assert_allclose(got, python_proba(pipe, X), atol=1e-4)
    schema = json.loads((published.path / "schema.json").read_text())
    cols = {c["name"]: c for c in schema["columns"]}
    assert cols["education_num"]["aliases"] == ["education-num"]
    assert cols["age"]["min"] == 17 and schema["unknown_categories"] == "quarantine"

    bad = X.copy().astype({"workclass": object})
    bad.iloc[2, bad.columns.get_loc("workclass")] = "Spaceship"
    write_csv(bad, path)
    res = run_runner(str(published.path), str(path))
    assert res.returncode == 2 and "line 4" in res.stderr
    assert "column 'workclass': unknown category 'Spaceship'" in res.stderr
    res = run_runner(str(published.path), str(path), "--unknown-values", "flag")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().split("\n")
    assert lines[0] == "proba,label,violations" and len(lines) == 6
    assert lines[3].endswith("workclass: unknown category 'Spaceship'")
    assert lines[1].endswith(",")  # clean rows: nothing listed
    rows = predict_csv(published.path, path, "flag")
    assert rows[2]["violations"] == ["workclass: unknown category 'Spaceship'"]


def test_runner_imports_no_training_stack():
    code = ("import sys, json, tarn.edge.runner; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})), "
            "'tarn.config' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    top, config_loaded = res.stdout.rsplit(" ", 1)
    loaded = set(json.loads(top))
    assert "onnxruntime" in loaded
    assert not loaded & {"mlflow", "xgboost", "sklearn", "pandas", "skl2onnx", "pydantic"}
    assert config_loaded.strip() == "False"
