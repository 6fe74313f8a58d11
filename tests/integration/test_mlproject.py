"""`mlflow run` as the README writes it: tarn joins the run MLflow opened."""

from __future__ import annotations

import shutil

import mlflow
import pytest

from tests.support.project import REPO, sh, small_project

pytestmark = pytest.mark.slow
# only what `mlflow run` itself sets: nothing another test left in this process's environment
CLEAN_ENV = ("env", "-u", "MLFLOW_EXPERIMENT_ID", "-u", "MLFLOW_EXPERIMENT_NAME", "-u",
             "MLFLOW_RUN_ID", "-u", "MLFLOW_REGISTRY_URI")


def test_mlflow_run_entry_points_join_the_projects_run(tmp_path):
    params = small_project(tmp_path)
    shutil.copy(REPO / "MLproject", tmp_path / "MLproject")
    uri = f"sqlite:///{tmp_path / '.mlflow' / 'mlflow.db'}"
    res = sh(tmp_path, *CLEAN_ENV,
             f"MLFLOW_TRACKING_URI={uri}", "mlflow", "run", ".", "-e", "tune",
             "--env-manager", "local", "--experiment-name", params.mlflow.experiment)
    out = res.stdout + res.stderr
    assert "Traceback" not in out and "succeeded" in out
    client = mlflow.MlflowClient(uri, registry_uri=uri)  # not the process-wide registry
    exp = client.get_experiment_by_name(params.mlflow.experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`mlflow.source.type` = 'PROJECT'")
    assert len(runs) == 1
    project_run = runs[0]
    assert project_run.data.tags["tarn.stage"] == "tune"  # tarn's tuning run is MLflow's run
    trials = client.search_runs([exp.experiment_id],
                                f"tags.mlflow.parentRunId = '{project_run.info.run_id}'")
    assert len(trials) == params.tune.max_evals
    sh(tmp_path, *CLEAN_ENV,
       f"MLFLOW_TRACKING_URI={uri}", "mlflow", "run", ".", "-e", "train",
       "--env-manager", "local", "--experiment-name", params.mlflow.experiment)
    assert client.search_model_versions("name = 'tarn-test'")
    sh(tmp_path, *CLEAN_ENV, f"MLFLOW_TRACKING_URI={uri}", "mlflow", "run", ".", "-e",
       "evaluate", "--env-manager", "local", "--experiment-name", params.mlflow.experiment)
    sh(tmp_path, *CLEAN_ENV, f"MLFLOW_TRACKING_URI={uri}", "tarn", "promote", "--latest")
    res = sh(tmp_path, *CLEAN_ENV, f"MLFLOW_TRACKING_URI={uri}", "mlflow", "run", ".", "-e",
             "monitor", "--env-manager", "local", "--experiment-name", params.mlflow.experiment)
    assert "decision:" in res.stdout + res.stderr and "Traceback" not in res.stdout + res.stderr
