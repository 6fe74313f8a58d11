"""Two real datasets tarn has never seen, through the whole lifecycle with no code of their own:
Palmer penguins (multiclass: species; missing values; ``sex`` as the sensitive feature) and
scikit-learn's diabetes data (regression: disease progression; ``sex`` coded 1/2). Both ship in
wheels (palmerpenguins, scikit-learn): nothing is downloaded.

For each: the files as CSV -> `tarn init` -> `dvc repro` -> `tarn promote` -> a real
`tarn serve` (/predict, /invocations, the prediction log, the published ONNX bundle and
`tarn edge predict`) -> a new lake batch -> `tarn monitor` -> `tarn retrain`."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tarn.config import Params, load_params
from tarn.core.registry import Registry
from tests.support.project import FAST_TUNE, REPO, set_param, sh
from tests.support.servers import free_port
from tests.support.serving import Server, server_env, wait_version

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Dataset:
    name: str
    task: str
    target: str
    frame: pd.DataFrame  # raw text values, as in the files
    figures: dict[str, float]  # evaluate.json figure -> the floor (lower: "<" prefix in name)
    tolerance: float  # promote.tolerance, in the task loss's own units


def penguins() -> Dataset:
    """The raw CSV of the palmerpenguins wheel, as text (its ``NA`` markers kept)."""
    from importlib.resources import files

    raw = files("palmerpenguins").joinpath("data/penguins.csv").read_text()
    frame = pd.read_csv(io.StringIO(raw), dtype=str, keep_default_na=False)
    # published models separate the three species almost perfectly (about 0.97-0.99 accuracy)
    return Dataset("penguins", "multiclass", "species", frame,
                   {"accuracy": 0.9, "f1_macro": 0.85, "<logloss": 0.4}, 0.2)


def diabetes() -> Dataset:
    from sklearn.datasets import load_diabetes

    d = load_diabetes(as_frame=True, scaled=False)
    frame = d.data.assign(progression=d.target).astype(str)
    # linear models reach R2 about 0.45-0.5 on held-out rows; the target's std is about 77
    return Dataset("diabetes", "regression", "progression", frame,
                   {"r2": 0.2, "<rmse": 70.0, "<mae": 60.0}, 10.0)


DATASETS = {"penguins": penguins, "diabetes": diabetes}


@dataclass
class Project:
    data: Dataset
    root: Path
    init_output: str
    new_batch: pd.DataFrame  # rows added to the lake after the first promotion

    @property
    def params(self) -> Params:
        return load_params(self.root / "params.yaml", env={})

    def registry(self) -> Registry:
        p = self.params
        return Registry(p.mlflow, self.root, p.promote.alias)

    def tarn(self, *args: str, check: bool = True) -> tuple[int, str]:
        """(exit status, what it printed: tarn's console writes to stderr)."""
        res = sh(self.root, "tarn", *args, check=check)
        return res.returncode, res.stdout + res.stderr


def _split(frame: pd.DataFrame, seed: int = 0) -> list[pd.DataFrame]:
    """Shuffled, cut 60/20/20: the first lake batch, the held-out test batch, a later batch."""
    order = np.random.default_rng(seed).permutation(len(frame))
    cut = [0, int(0.6 * len(frame)), int(0.8 * len(frame)), len(frame)]
    return [frame.iloc[order[a:b]] for a, b in zip(cut, cut[1:], strict=False)]


@pytest.fixture(scope="module", params=sorted(DATASETS))
def project(request, tmp_path_factory) -> Project:
    """A git + DVC project made from the repo's files, `tarn init` on the dataset's first two
    files, a small search budget, then `dvc repro` (every stage, as `make run` does)."""
    data = DATASETS[request.param]()
    root = tmp_path_factory.mktemp(data.name)
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    first, test, new = _split(data.frame)
    files = []
    for i, part in enumerate((first, test), 1):
        files.append(root / f"{data.name}-{i}.csv")
        part.to_csv(files[-1], index=False)
    res = sh(root, "tarn", "init", *map(str, files), "--target", data.target,
             "--sensitive", "sex", "--force")
    for key, value in {"tune.max_evals": 4, **FAST_TUNE,
                       "tune.early_stopping_rounds": 20, "tune.n_jobs": 1, "train.n_jobs": 1,
                       "promote.tolerance": data.tolerance,
                       "promote.max_demographic_parity_difference": 0.6,
                       # a test split of 69-88 rows: groups of 20+ make the fairness gap
                       "bias.min_group_rows": 20,
                       "serve.notify_url": "", "serve.poll_interval_s": 0.5,
                       "serve.log_flush_interval_s": 0.5, "serve.log_file_idle_s": 1,
                       "monitor.min_rows": 30}.items():
        set_param(root, key, value)
    sh(root, "dvc", "repro")
    return Project(data, root, res.stdout + res.stderr, new)


@pytest.fixture(scope="module")
def server(project):
    s = Server(project.root, project.root / "params.yaml", free_port(), server_env())
    yield s
    s.stop()


def records(frame: pd.DataFrame, params: Params) -> list[dict]:
    """Model inputs as JSON records typed by the contract (missing markers -> null)."""
    missing = set(params.schema.missing_values)
    out = []
    for row in frame.to_dict("records"):
        rec = {}
        for col in params.schema.columns:
            v = str(row[col.aliases[0] if col.aliases else col.name]).strip()
            rec[col.name] = None if v in missing else int(v) if col.dtype == "int" else \
                float(v) if col.dtype == "float" else v
        out.append(rec)
    return out


def test_init_writes_the_task_and_the_pipeline_measures_it(project):
    params, data = project.params, project.data
    assert f"task: {data.task} (target {data.target!r}, auto:" in project.init_output
    assert params.schema.task == data.task and params.schema.name == data.name
    assert params.mlflow.registered_model == f"tarn-{data.name}"
    sex = params.schema.column("sex")
    assert sex.dtype == "category" and params.promote.gated(params.schema.sensitive) == ["sex"]
    if data.task == "multiclass":
        assert params.schema.classes == ["Adelie", "Chinstrap", "Gentoo"]
        assert sex.nullable and "NA" in params.schema.missing_values
    else:
        assert not params.schema.target.mapping and params.schema.target.min is not None
        assert sex.categories == ["1.0", "2.0"]
    figures = json.loads((project.root / "reports" / "evaluate.json").read_text())["model"]
    for name, floor in data.figures.items():
        if name.startswith("<"):
            assert figures[name[1:]] < floor, (name, figures)
        else:
            assert figures[name] > floor, (name, figures)
    card = project.registry().card("1")
    assert card["task"] == data.task
    assert card["classes"] == params.schema.classes
    assert card["schema"]["target"]["name"] == data.target


@dataclass
class Production:
    """Version 1 promoted and deployed, and what the server answered for 25 new rows (read
    by the tests below, so none depends on another having run first)."""

    promote_output: str
    rows: list[dict]
    predict: dict
    invocations: dict


@pytest.fixture(scope="module")
def production(project, server) -> Production:
    out = project.tarn("promote", "--latest")[1]
    server.admin()
    wait_version(server, "1")
    rows = records(project.new_batch.head(25), project.params)
    r = server.http.post("/predict", json=rows)
    assert r.status_code == 200, r.text
    inv = server.http.post("/invocations", json={"dataframe_records": rows})
    assert inv.status_code == 200, inv.text
    return Production(out, rows, r.json(), inv.json())


def test_promote_then_serve_per_task(project, production):
    params, data = project.params, project.data
    assert "version 1 is production" in production.promote_output, production.promote_output
    rows = production.rows
    preds = production.predict["predictions"]
    assert len(preds) == len(rows)
    want = np.asarray(_native(project, rows))
    if data.task == "multiclass":
        classes = params.schema.classes
        for p in preds:
            assert set(p["probabilities"]) == set(classes)
            assert abs(sum(p["probabilities"].values()) - 1) < 1e-4
            assert p["class"] == classes[p["label"]] == max(p["probabilities"],
                                                            key=p["probabilities"].get)
        got = np.array([[p["probabilities"][c] for c in classes] for p in preds])
        truth = project.new_batch.head(25)[data.target].map(params.schema.target.mapping)
        assert (got.argmax(1) == truth.to_numpy()).mean() > 0.85
    else:
        assert all(set(p) >= {"prediction"} and "probability" not in p for p in preds)
        got = np.array([p["prediction"] for p in preds])
    assert np.abs(got - want).max() <= 1e-3 * max(1.0, float(np.abs(want).max()))
    inv_preds = np.asarray(production.invocations["predictions"])
    assert inv_preds.shape == ((len(rows), 3) if data.task == "multiclass" else (len(rows),))
    assert np.abs(inv_preds - want).max() <= 1e-3 * max(1.0, float(np.abs(want).max()))


def _native(project: Project, rows: list[dict]) -> np.ndarray:
    """The registered version's own scores (tarn's trusted loader): class probabilities, or
    values."""
    pipe = project.registry().load_model("1")
    X = pd.DataFrame(rows).astype({c.name: "float64" for c in project.params.schema.columns
                                   if c.numeric})
    return pipe.predict_proba(X) if project.data.task == "multiclass" else pipe.predict(X)


def test_the_prediction_log_holds_the_task_columns(project, production):
    deadline = time.monotonic() + 30
    log = project.root / project.params.serve.prediction_log
    while not list(log.glob("preds-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.5)
    frames = [pd.read_parquet(f) for f in log.glob("preds-*.parquet")]
    assert frames, f"no closed prediction log file in {log}"
    logged = pd.concat(frames)
    if project.data.task == "multiclass":
        assert {"proba_0", "proba_1", "proba_2", "label"} <= set(logged.columns)
        assert np.allclose(logged[["proba_0", "proba_1", "proba_2"]].sum(axis=1), 1, atol=1e-4)
    else:
        assert "prediction" in logged.columns and "proba" not in logged.columns
        assert logged["prediction"].between(0, 500).all()


def test_the_bundle_scores_like_the_server_on_the_edge(project, production):
    params = project.params
    bundles = project.root / params.edge.bundle_dir
    bundle = bundles / f"{params.mlflow.registered_model}-v1"
    deadline = time.monotonic() + 120  # the server publishes it when it deploys the version
    while not (bundle / "model.onnx").is_file() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert (bundle / "model.onnx").is_file(), list(bundles.glob("*")) if bundles.exists() else []
    batch = project.new_batch.head(25).drop(columns=[project.data.target])
    batch.to_csv(project.root / "edge.csv", index=False)
    out = sh(project.root, "tarn", "edge", "predict", str(bundle),
             str(project.root / "edge.csv")).stdout  # the scored rows, as CSV
    scored = list(csv.DictReader(io.StringIO(out)))
    served = production.predict["predictions"]  # version 1's answers for the same rows
    assert len(scored) == len(served) == 25
    if project.data.task == "multiclass":
        assert [r["class"] for r in scored] == [p["class"] for p in served]
        got = np.array([[float(r[f"proba_{i}"]) for i in range(3)] for r in scored])
        want = np.array([[p["probabilities"][c] for c in params.schema.classes]
                         for p in served])
    else:
        got = np.array([float(r["prediction"]) for r in scored])
        want = np.array([p["prediction"] for p in served])
    assert np.abs(got - want).max() <= 1e-3 * max(1.0, float(np.abs(want).max()))


def test_monitor_then_retrain_on_a_new_batch(project, production, server):
    data, root = project.data, project.root
    new = root / f"{data.name}-3.csv"
    project.new_batch.to_csv(new, index=False)
    project.tarn("lake", "add", str(new), "--batch", f"{data.name}-new")
    out = project.tarn("monitor")[1]
    print(out)
    # the lake row counts the new batch's rows (none quarantined); then the decision
    assert re.search(rf"lake\W+{len(project.new_batch)}\b", out) and "decision:" in out, out
    assert ("rmse" if data.task == "regression" else "logloss") in out, out
    status, text = project.tarn("retrain", "--mode", "incremental", check=False)
    assert "incremental retraining from version 1 -> version 2" in text, text
    reg = project.registry()
    assert reg.lineage("2").kind == "incremental"
    assert reg.card("2")["task"] == data.task
    assert status == 0 and "version 2 is production" in text, text
    wait_version(server, "2", timeout=60)
    r = server.http.post("/predict", json=records(project.new_batch.head(3), project.params))
    key = "probabilities" if data.task == "multiclass" else "prediction"
    assert r.status_code == 200 and all(key in p for p in r.json()["predictions"]), r.text
