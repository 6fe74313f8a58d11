"""Dask handling in one place: a LocalCluster by default, an existing scheduler when
``compute.scheduler`` names one. Tuning and distributed training ask this module for a client
and never create clusters themselves."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tarn.config import ComputeConfig
from tarn.errors import TarnError, first_line


class ComputeError(TarnError):
    """The Dask scheduler cannot be reached or used."""


@contextlib.contextmanager
def dask_client(cfg: ComputeConfig, n_workers: int | None = None) -> Iterator:
    """A ``distributed.Client`` with at least one worker; the LocalCluster (if any) lives as
    long as the block."""
    import logging

    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    if cfg.scheduler:
        try:
            client = Client(cfg.scheduler, timeout=cfg.connect_timeout_s)
        except (OSError, TimeoutError, ValueError) as e:
            raise ComputeError(f"Dask scheduler {cfg.scheduler} did not answer in "
                               f"{cfg.connect_timeout_s:g} s ({first_line(e)})",
                               "start it (`dask scheduler`), fix compute.scheduler / "
                               "DASK_SCHEDULER_ADDRESS, or set compute.scheduler: \"\" "
                               "for a local cluster") from e
        try:
            try:
                client.wait_for_workers(1, timeout=cfg.worker_timeout_s)
            except TimeoutError as e:
                raise ComputeError(f"Dask scheduler {cfg.scheduler} has no workers after "
                                   f"{cfg.worker_timeout_s:g} s",
                                   f"start some: `dask worker {cfg.scheduler} --nthreads 1`") \
                    from e
            yield client
        finally:
            client.close()
        return
    with LocalCluster(n_workers=n_workers or cfg.n_workers,
                      threads_per_worker=cfg.threads_per_worker, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        yield client



class WorkerWatch:
    """Turns "the cluster lost all its workers" (or its scheduler) into a ComputeError after
    ``worker_timeout_s`` instead of waiting forever on futures nobody will run."""

    def __init__(self, client, cfg: ComputeConfig) -> None:
        self.client = client
        self.cfg = cfg
        self.since: float | None = None

    def check(self) -> None:
        import time

        try:
            alive = self.client.status == "running" and bool(
                self.client.scheduler_info().get("workers"))
        except Exception:  # noqa: BLE001 - a lost scheduler counts as "no workers"
            alive = False
        if alive:
            self.since = None
            return
        now = time.monotonic()
        self.since = self.since or now
        if now - self.since > self.cfg.worker_timeout_s:
            raise self.lost()

    def lost(self) -> ComputeError:
        where = self.cfg.scheduler or "the local cluster"
        return ComputeError(f"no Dask worker (or scheduler) answered at {where} for "
                            f"{self.cfg.worker_timeout_s:g} s; the run stopped",
                            "restart the workers (`dask worker <scheduler address>`) "
                            "and run again")

    def scatter(self, data):
        """Send ``data`` to every worker once (trials then refer to it by key)."""
        try:
            return self.client.scatter(data, broadcast=True, timeout=self.cfg.worker_timeout_s)
        except (TimeoutError, OSError) as e:
            raise self.lost() from e


def fit_xgb_dask(client, z, y, weight, model_params: dict, task=None):
    """Fit XGBoost with ``xgboost.dask`` across the cluster's workers and return a plain
    ``XGBClassifier`` / ``XGBRegressor`` (``task``: a :class:`tarn.core.task.Task`, binary when
    None) holding the same booster (so it fits in a sklearn Pipeline and exports to ONNX like
    a locally trained one)."""
    import tempfile
    from pathlib import Path

    import dask.array as da
    import numpy as np
    from xgboost import dask as dxgb

    from tarn.core.task import Task

    task = task or Task("binary", ("0", "1"))

    n_workers = max(1, len(client.scheduler_info()["workers"]))
    rows = max(1, -(-len(y) // n_workers))
    X = da.from_array(np.asarray(z, dtype=np.float32), chunks=(rows, z.shape[1]))
    Y = da.from_array(np.asarray(y), chunks=rows)
    W = None if weight is None else da.from_array(np.asarray(weight), chunks=rows)
    params = {"objective": task.objective, "eval_metric": task.eval_metric, **model_params}
    dm = task.dask_estimator(dxgb, **params)
    dm.client = client
    dm.fit(X, Y, sample_weight=W)
    local = task.estimator(**params)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.json"
        dm.save_model(path)
        local.load_model(path)
    return local
