"""Building test projects: params.yaml with overrides, small raw lakes cut from the bundled
data, a prepared project, extra batches, a registered version. Every test module imports its
helpers from here (never from another test module)."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tarn.config import Params, params_from_dict
from tarn.core.tracking import quiet_mlflow, tracking_uri
from tarn.datasets import ADULT_COLUMNS, adult_lines
from tarn.stages import etl, prepare, snapshot, train

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# a quick search for tiny lakes: 80 rounds x the lowest rate 0.25 = 20, so fits can reach
# early stopping (params.yaml refuses less); no warm starts, so tune.max_evals is the number
# of configurations the tests count (warm starts come besides it: tests/unit/test_search_plan)
FAST_TUNE = {
    "tune.n_estimators": 80,
    "tune.space.learning_rate": {"dist": "loguniform", "low": 0.25, "high": 0.4},
    "tune.warm_starts": [],
}
SMALL = {
    "tune.max_evals": 4,
    **FAST_TUNE,
    # tests count trials: a fixed budget no search here comes near, not `auto` (rows x columns
    # x cores), which a loaded machine reaches before the last trials (8 of 10 ran)
    "tune.timeout_s": 600,
    "tune.early_stopping_rounds": 5,
    "tune.n_jobs": 1,
    "train.n_jobs": 1,
    "mlflow.registered_model": "tarn-test",
}


def repo_params_dict() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def params_dict(overrides: dict | None = None) -> dict:
    """The repo's params.yaml as a dict, with ``overrides`` (dotted keys) applied."""
    raw = repo_params_dict()
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = value
    return raw


def write_params(root: Path, overrides: dict | None = None) -> Params:
    """params.yaml in ``root``: the repo's, with nested ``overrides`` applied."""
    raw = params_dict(overrides)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return params_from_dict(raw)


def set_param(root: Path, dotted: str, value) -> None:
    """Change one key of an existing params.yaml in place."""
    p = root / "params.yaml"
    raw = yaml.safe_load(p.read_text())
    node = raw
    *parents, leaf = dotted.split(".")
    for k in parents:
        node = node[k]
    node[leaf] = value
    p.write_text(yaml.safe_dump(raw, sort_keys=False))


def copy_repo(root: Path) -> Path:
    """``root`` made a DVC repo holding this project's pipeline files (src/, dvc.yaml,
    params.yaml; git is the caller's)."""
    root.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    return root


def adult_csv(part: str, start: int, n: int) -> str:
    lines = adult_lines(part)[start:start + n]
    return "\n".join([", ".join(ADULT_COLUMNS), *lines]) + "\n"


def write_small_lake(lake: Path, n_train: int = 400, n_test: int = 200) -> None:
    """Two train batches and one test batch, raw format, as `tarn lake seed` would write."""
    for name, part, start, n in [("0001-adult-train", "train", 0, n_train),
                                 ("0002-adult-train", "train", n_train, n_train),
                                 ("0003-adult-test", "test", 0, n_test)]:
        (lake / name).mkdir(parents=True)
        (lake / name / "adult.csv").write_text(adult_csv(part, start, n))


# What the data stages read (their declared READS and AMBIENT keys): two projects that agree
# on these get the same snapshot, curated table and splits, whatever else their params say
DATA_KEYS = tuple(sorted({*snapshot.READS, *snapshot.AMBIENT, *etl.READS, *etl.AMBIENT,
                          *prepare.READS, *prepare.AMBIENT}))
_CACHE: dict[str, Path] = {}  # this session's scratch folder ("dir") and its templates


def _scratch() -> Path:
    """A folder for this test session's templates, removed when the session ends."""
    if "dir" not in _CACHE:
        _CACHE["dir"] = Path(tempfile.mkdtemp(prefix="tarn-templates-"))
        atexit.register(shutil.rmtree, _CACHE["dir"], True)
    return _CACHE["dir"]


def _dig(raw: dict, dotted: str):
    node = raw
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def small_project(root: Path, lake: tuple[int, int] = (600, 300), **overrides) -> Params:
    """A project with a small lake, snapshotted, curated and prepared (real stages).

    The stages run once per session for each distinct lake and data-stage params (DATA_KEYS);
    later projects copy that prepared template into ``root`` (before anything is tracked or
    registered: no MLflow store is copied). A lake the caller wrote itself, or one not on the
    local disk, is always prepared in place."""
    raw = params_dict({**SMALL, **overrides})
    if (root / "data" / "lake").exists() or "://" in str(_dig(raw, "lake.url")):
        params = write_params(root, {**SMALL, **overrides})
        if not (root / "data" / "lake").exists():
            write_small_lake(root / "data" / "lake", n_train=lake[0], n_test=lake[1])
        _prepare(params, root)
        return params
    key = hashlib.sha256(json.dumps([lake, {k: _dig(raw, k) for k in DATA_KEYS}],
                                    sort_keys=True, default=str).encode()).hexdigest()[:16]
    template = _scratch() / key
    if key not in _CACHE:
        shutil.rmtree(template, ignore_errors=True)  # a build this session did not finish
        template.mkdir()
        params = write_params(template, {**SMALL, **overrides})
        write_small_lake(template / "data" / "lake", n_train=lake[0], n_test=lake[1])
        _prepare(params, template)
        _CACHE[key] = template
    shutil.copytree(template, root, dirs_exist_ok=True, symlinks=True)
    return write_params(root, {**SMALL, **overrides})


def _prepare(params: Params, root: Path) -> None:
    snapshot.run(params, root)
    etl.run(params, root)
    prepare.run(params, root)


def seed_store(params: Params, root: Path) -> None:
    """Put an empty, already migrated MLflow SQLite database where the project's local store
    will be: what MLflow's first use would create (its schema and Default experiment), without
    running its ~100 migrations again for every test project. Nothing else is in it, so the
    project's own experiment, runs and versions are made by the code under test."""
    if params.mlflow.tracking_uri or (root / params.mlflow.store_dir / "mlflow.db").exists():
        return
    blank = _scratch() / "blank-store" / "mlflow.db"
    if not blank.exists():
        import mlflow

        blank.parent.mkdir()
        with quiet_mlflow():  # creates and migrates the database, as a first use would
            mlflow.MlflowClient(f"sqlite:///{blank}").search_experiments()
        os.chmod(blank, 0o600)
    store = Path(tracking_uri(params.mlflow, root).removeprefix("sqlite:///"))  # its folder
    shutil.copy2(blank, store)


def tracked_project(root: Path, lake: tuple[int, int] = (600, 300), **overrides) -> Params:
    """``small_project`` with its local MLflow store already made (``seed_store``): for tests
    of tuning and training, where the store's first creation is not what they test."""
    params = small_project(root, lake, **overrides)
    seed_store(params, root)
    return params


def make_version(params: Params, root: Path, rounds: int = 30, depth: int = 4,
                 lr: float = 0.2) -> str:
    """Register a new version with the given capacity (few rounds = a worse model)."""
    seed_store(params, root)
    (root / "models").mkdir(exist_ok=True)
    (root / "models" / "best_params.json").write_text(json.dumps(
        {"params": {"max_depth": depth, "learning_rate": lr}, "best_iteration": rounds - 1,
         "parent_run_id": "test"}))
    # as the tune stage leaves it when it compared nothing (dvc.yaml: a train dependency)
    pd.DataFrame().to_parquet(root / "models" / "validation_scores.parquet")
    return train.run(params, root).version


def write_batch(root: Path, name: str, lines: list[str]) -> None:
    """A lake batch of raw Adult lines (header included)."""
    d = root / "data" / "lake" / name
    d.mkdir(parents=True)
    (d / "adult.csv").write_text("\n".join([", ".join(ADULT_COLUMNS), *lines]) + "\n")


def prior_shifted(n: int, positive_rate: float = 0.6) -> list[str]:
    """Prior shift: the same kind of people, but far more of them earn >50K, so P(y|x) moves
    and the parent under-predicts: a shift only new trees can learn."""
    pos, neg = [], []
    for ln in adult_lines("test")[5000:]:
        ln = ln.replace(">50K.", ">50K").replace("<=50K.", "<=50K")
        (pos if ln.endswith(">50K") else neg).append(ln)
    k = int(n * positive_rate)
    mixed = pos[:k] + neg[:n - k]
    return [mixed[i] for i in np.random.default_rng(0).permutation(len(mixed))]


def sh(root: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command in ``root`` with the venv's tools on PATH; fail loudly by default."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


class _Payload:
    """Unpickling this creates ``marker``: the code an attacker's model would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def register_pickled_version(params: Params, root: Path, marker: Path) -> str:
    """Register a cloudpickle model version whose loading would create ``marker``; the file is
    not created by registering it."""
    import mlflow
    import mlflow.sklearn
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from tarn.core.tracking import connect

    tracking = connect(params.mlflow, root)
    pipe = Pipeline([("evil", FunctionTransformer(_Payload(marker)))])
    with mlflow.start_run(run_name="attacker", experiment_id=tracking.experiment_id):
        info = mlflow.sklearn.log_model(pipe, name="model", serialization_format="cloudpickle",
                                        pip_requirements=["scikit-learn"])
    mv = mlflow.register_model(info.model_uri, params.mlflow.registered_model)
    assert not marker.exists()
    return str(mv.version)


def missing_params(raw: dict) -> list[str]:
    """The dvc.yaml params keys a params.yaml dict lacks: `dvc repro` fails on each, read by
    the stage or not."""
    out = []
    for stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values():
        for p in stage.get("params", []):
            node = raw
            for part in (p if isinstance(p, str) else next(iter(p))).split("."):
                node = node[part] if isinstance(node, dict) and part in node else KeyError
            if node is KeyError:
                out.append(p)
    return out
