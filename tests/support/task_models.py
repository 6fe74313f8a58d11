"""A model for any task fitted and registered directly (core.features + Task.estimator +
core.model.packaging + Registry.register), not through the stages: a version with its card,
optionally trained on a narrower contract than the project's (columns dropped)."""

from __future__ import annotations

from pathlib import Path

from tarn.config import Params, SchemaConfig
from tarn.core.catalog import load_split
from tarn.core.features import build_preprocessor, to_model_frame
from tarn.core.model import packaging
from tarn.core.registry import Registry
from tarn.core.tags import Lineage
from tarn.core.task import Task
from tests.support.project import seed_store
from tests.support.signing import sign_by_hand


def narrower(schema: SchemaConfig, drop: tuple[str, ...]) -> SchemaConfig:
    """The contract without the ``drop`` columns."""
    raw = schema.model_dump(by_alias=True)
    raw["columns"] = [c for c in raw["columns"] if c["name"] not in drop]
    raw["sensitive"] = [s for s in raw["sensitive"] if s not in drop]
    return SchemaConfig.model_validate(raw)


def fit_version(params: Params, root: Path, *, drop: tuple[str, ...] = (),
                threshold: float = 0.5, rounds: int = 20) -> str:
    """Fit a small Pipeline on the prepared train split for the project's task (its contract
    without ``drop``) and register it with its card; returns the version."""
    from sklearn.pipeline import Pipeline

    seed_store(params, root)
    schema = narrower(params.schema, drop)
    task = Task.of(schema, threshold)
    train, test = load_split(params, root, "train"), load_split(params, root, "test")
    X = to_model_frame(train.frame, schema, params.prepare)
    pipe = Pipeline([("pre", build_preprocessor(schema, params.prepare)),
                     ("model", task.estimator(n_estimators=rounds, max_depth=3,
                                              learning_rate=0.3, n_jobs=1, random_state=0))])
    pipe.fit(X, train.y)
    pack = packaging(schema, params.prepare, task, pipe, X.head(5))
    Xt = to_model_frame(test.frame, schema, params.prepare)
    figures = {f"test_{m}": task.metric(m, test.y, task.scores(pipe, Xt)) for m in task.metrics}
    return registry(params, root).register(pipe, Lineage(kind="full", train_rows=len(X)),
                                           "train", {}, figures, pack).version


def registry(params: Params, root: Path) -> Registry:
    return Registry(params.mlflow, root, params.promote.alias)


def force_production(params: Params, root: Path, version: str) -> None:
    """Make ``version`` production without the gates (the registry applies it), signed with
    the project's deployment key as a forced `tarn promote` would be (a server refuses an
    unsigned version)."""
    sign_by_hand(params, root, version, reason="test")
    registry(params, root).promote(version, None, reason="test")


def served_task_project(root: Path, kind: str, **overrides):
    """(params, Server): a ``kind`` project (tests.support.tasks) prepared by the real stages,
    version 1 fitted here and in production, and a real `tarn serve` serving it."""
    from tarn.stages import etl, prepare, snapshot
    from tests.support.servers import free_port
    from tests.support.serving import Server, server_env, wait_version
    from tests.support.tasks import task_project

    params = task_project(root, kind, **{
        "serve.poll_interval_s": 0.5, "serve.notify_url": "",
        "serve.log_flush_interval_s": 0.3, "serve.log_file_idle_s": 0.5, **overrides})
    snapshot.run(params, root)
    etl.run(params, root)
    prepare.run(params, root)
    assert fit_version(params, root) == "1"
    server = Server(root, root / "params.yaml", free_port(), server_env())
    try:
        force_production(params, root, "1")
        server.admin()
        wait_version(server, "1", timeout=120)
    except BaseException:
        server.stop()
        raise
    return params, server
