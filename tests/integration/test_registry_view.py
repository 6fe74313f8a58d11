"""The light registry view (no MLflow import) answers as MLflow's client does: on a real
SQLite store, on a real `mlflow server`, and through the client when the store's schema is
one it does not know. ``tarn status`` and ``tarn report`` read through it."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from tarn.config import Params
from tarn.core.registry import Registry
from tarn.core.registry import view as light
from tarn.core.registry.view import ClientView, RestView, SqliteView, open_view
from tests.support.project import seed_store, write_params
from tests.support.servers import MlflowServer

MODEL = "tarn-view"
HEAVY = ("mlflow", "sklearn", "xgboost", "onnx", "onnxruntime", "evidently", "dask", "fastapi")


def _project(root: Path, **overrides) -> Params:
    root.mkdir(parents=True, exist_ok=True)
    params = write_params(root, {"mlflow.registered_model": MODEL, "serve.notify_url": "",
                                 **overrides})
    seed_store(params, root)
    return params


def _populate(reg: Registry) -> None:
    """Four versions (one deleted), run metrics (one NaN), version and model tags, two
    aliases, stages moved by two promotions: what status and report read."""
    c = reg.client
    c.create_registered_model(reg.name)
    for i in range(4):
        run = c.create_run(reg.tracking.experiment_id)
        c.log_metric(run.info.run_id, "test_roc_auc", 0.8 + i / 100)
        c.log_metric(run.info.run_id, "test_logloss", 0.4 - i / 100)
        c.log_metric(run.info.run_id, "test_logloss", 0.3 - i / 100)  # the latest counts
        if i == 1:
            c.log_metric(run.info.run_id, "test_brier", math.nan)
        mv = c.create_model_version(reg.name, source=f"runs:/{run.info.run_id}/model",
                                    run_id=run.info.run_id)
        c.set_model_version_tag(reg.name, mv.version, "note", f"version {mv.version}")
    c.delete_model_version(reg.name, "4")
    reg.promote("1", None, reason="first")
    reg.promote("2", None, reason="second")  # 1 archived, 2 in Production
    c.set_registered_model_alias(reg.name, "champion", "1")
    c.set_registered_model_tag(reg.name, "team", "tarn")


def _answers(view) -> dict:
    """Everything a reader asks, NaN made comparable."""
    versions = view.versions()
    return {
        "versions": [(v.version, v.current_stage, v.run_id, v.tags) for v in versions],
        "aliases": view.aliases(), "production": view.production(),
        "stage": view.stage_versions(), "archived": view.stage_versions("Archived"),
        "metrics": {v.version: {k: "nan" if math.isnan(x) else x
                                for k, x in view.run_metrics(v.version, v).items()}
                    for v in versions},
        "one": view.version("2").tags,
    }


def test_the_sqlite_view_answers_as_the_mlflow_client(tmp_path):
    params = _project(tmp_path)
    reg = Registry(params.mlflow, tmp_path)
    _populate(reg)
    view = open_view(params.mlflow, tmp_path, params.promote.alias)
    assert isinstance(view, SqliteView)
    got, want = _answers(view), _answers(ClientView(reg))
    assert got == want
    assert [v[0] for v in got["versions"]] == ["1", "2", "3"]  # the deleted one is not shown
    assert got["production"] == "2" and got["aliases"] == {"production": "2", "champion": "1"}
    assert got["metrics"]["2"]["test_brier"] == "nan"
    assert got["metrics"]["1"]["test_logloss"] == pytest.approx(0.3)
    # what Registry itself returns, not only through the adapter
    assert [str(v.version) for v in reg.versions()] == ["1", "2", "3"]
    assert reg.run_metrics("3") == view.run_metrics("3")
    with pytest.raises(light.RegistryError, match="version 9 not found"):
        view.version("9")


def test_a_schema_the_view_does_not_know_is_read_through_the_client(tmp_path, monkeypatch):
    """An MLflow upgrade migrates the store to a revision tarn has not checked: the reads go
    through MLflow's client, with the same answers."""
    params = _project(tmp_path)
    reg = Registry(params.mlflow, tmp_path)
    _populate(reg)
    db = tmp_path / params.mlflow.store_dir / "mlflow.db"
    with sqlite3.connect(db) as con:
        revision = con.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    monkeypatch.setattr(light, "KNOWN_SCHEMAS", frozenset({"0123456789ab"}))
    view = open_view(params.mlflow, tmp_path, params.promote.alias)
    assert isinstance(view, ClientView)
    monkeypatch.setattr(light, "KNOWN_SCHEMAS", frozenset({revision}))
    assert _answers(view) == _answers(open_view(params.mlflow, tmp_path,
                                                params.promote.alias))


def test_the_installed_mlflow_schema_is_one_the_view_reads(tmp_path):
    """Fails after an MLflow upgrade that changed the schema: run this module against the new
    store, and add its revision to KNOWN_SCHEMAS once it passes (until then status and report
    read through the client, slower but right)."""
    params = _project(tmp_path)
    view = SqliteView(tmp_path / params.mlflow.store_dir / "mlflow.db", MODEL, "production")
    assert view.schema() in light.KNOWN_SCHEMAS, (
        f"MLflow store schema {view.schema()} is not in tarn.core.registry.view.KNOWN_SCHEMAS")


@pytest.mark.slow  # a tracking server process: ~20 s to start on a quiet machine
def test_the_rest_view_answers_as_the_mlflow_client_on_a_tracking_server(tmp_path):
    (tmp_path / "server").mkdir()
    server = MlflowServer(tmp_path / "server")
    try:
        params = _project(tmp_path / "project", **{"mlflow.tracking_uri": server.url})
        reg = Registry(params.mlflow, tmp_path / "project")
        _populate(reg)
        view = open_view(params.mlflow, tmp_path / "project", params.promote.alias, env={})
        assert isinstance(view, RestView)
        got = _answers(view)
        assert got == _answers(ClientView(reg))
        assert got["production"] == "2" and got["stage"] == ["2"]
        # an MLflow client setting the REST view does not apply: the client reads
        assert isinstance(open_view(params.mlflow, tmp_path / "project", "production",
                                    env={"MLFLOW_TRACKING_TOKEN": "t"}), ClientView)
        assert RestView(server.url, "no-such-model", "production").production() is None
    finally:
        server.stop()


def test_a_project_without_a_store_reads_as_empty_and_creates_nothing(tmp_path):
    params = write_params(tmp_path, {"mlflow.registered_model": MODEL})
    view = open_view(params.mlflow, tmp_path, params.promote.alias)
    assert (view.versions(), view.aliases(), view.production()) == ([], {}, None)
    assert not (tmp_path / params.mlflow.store_dir).exists()


def test_a_disagreement_is_settled_by_the_full_registry(tmp_path):
    """Stage moved by hand in the MLflow UI: the read sees the disagreement, and settling it
    (a write, under the promotion lock) makes alias and stage agree again."""
    params = _project(tmp_path)
    reg = Registry(params.mlflow, tmp_path)
    _populate(reg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stages are deprecated
        reg.client.transition_model_version_stage(MODEL, "3", "Production")
    view = open_view(params.mlflow, tmp_path, params.promote.alias)
    before, production = light.settle_production(view, params.mlflow, tmp_path)
    assert before == ("2", ["2", "3"])
    assert production == "3"  # the stage moved since they last agreed: the alias follows
    assert (view.production(), view.stage_versions()) == ("3", ["3"])


def test_status_and_report_read_the_registry_without_importing_mlflow(tmp_path):
    """The whole read, not only the import: a fresh process gathers status and report on a
    store with versions and loads none of the heavy libraries."""
    params = _project(tmp_path)
    _populate(Registry(params.mlflow, tmp_path))
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from tarn.config import load_params
        from tarn.lifecycle.report import report
        from tarn.lifecycle.status import status
        root = Path({str(tmp_path)!r})
        params = load_params(root / "params.yaml")
        s = status(params, root, "http://127.0.0.1:9")
        sections, _ = report(params, root)
        assert s.production == "2" and [v.version for v in s.versions] == ["1", "2", "3"], s
        assert any(x.title.startswith("production") and x.rows[0][0] == "2"
                   for x in sections), sections
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "[]"
