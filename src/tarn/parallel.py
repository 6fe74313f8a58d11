"""Dask handling in one place: a LocalCluster by default, an existing scheduler when
``compute.scheduler`` names one. Tuning and distributed training ask this module for a client
and never create clusters themselves."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tarn.config import ComputeConfig
from tarn.errors import TarnError


class ComputeError(TarnError):
    """The Dask scheduler cannot be reached or used."""


@contextlib.contextmanager
def dask_client(cfg: ComputeConfig, n_workers: int | None = None,
                timeout_s: float = 20) -> Iterator:
    """A ``distributed.Client``; the LocalCluster (if any) lives as long as the block."""
    import logging

    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)
    if cfg.scheduler:
        try:
            client = Client(cfg.scheduler, timeout=timeout_s)
        except (OSError, TimeoutError) as e:
            raise ComputeError(f"Dask scheduler {cfg.scheduler} did not answer in "
                               f"{timeout_s:.0f} s ({e})",
                               "start it (`dask scheduler`) or set compute.scheduler: \"\" "
                               "for a local cluster") from e
        try:
            yield client
        finally:
            client.close()
        return
    with LocalCluster(n_workers=n_workers or cfg.n_workers,
                      threads_per_worker=cfg.threads_per_worker, processes=True,
                      dashboard_address=None, silence_logs=logging.WARNING) as cluster, \
            Client(cluster) as client:
        yield client


def fit_xgb_dask(client, z, y, weight, model_params: dict):
    """Fit XGBoost with ``xgboost.dask`` across the cluster's workers and return a plain
    ``XGBClassifier`` holding the same booster (so it fits in a sklearn Pipeline and exports to
    ONNX like a locally trained one)."""
    import tempfile
    from pathlib import Path

    import dask.array as da
    import numpy as np
    import xgboost as xgb
    from xgboost import dask as dxgb

    n_workers = max(1, len(client.scheduler_info()["workers"]))
    rows = max(1, -(-len(y) // n_workers))
    X = da.from_array(np.asarray(z, dtype=np.float32), chunks=(rows, z.shape[1]))
    Y = da.from_array(np.asarray(y), chunks=rows)
    W = None if weight is None else da.from_array(np.asarray(weight), chunks=rows)
    dm = dxgb.DaskXGBClassifier(**model_params)
    dm.client = client
    dm.fit(X, Y, sample_weight=W)
    local = xgb.XGBClassifier(**model_params)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.json"
        dm.save_model(path)
        local.load_model(path)
    return local
