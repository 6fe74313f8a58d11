"""MLflow connection: one place that turns configuration into a tracking URI, an experiment and
a client, and turns "the store is unreachable or locked" into an error that says what to do."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tarn.config import MlflowConfig, Params, ParamsView
from tarn.core.files import private_dir
from tarn.errors import TarnError, first_line


class TrackingError(TarnError):
    """The MLflow tracking store or registry cannot be used."""


@dataclass(frozen=True)
class Tracking:
    uri: str
    experiment_id: str
    registered_model: str


_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s:/?#@]*)"
                       r"(?::(?P<secret>[^\s/?#@]*))?@")
_SECRET_PARAM = re.compile(r"(?i)\b(?P<key>password|passwd|pwd|secret|token|access_key|"
                           r"secret_key|sig|signature|x-amz-signature|x-amz-credential)="
                           r"(?P<value>[^&\s#'\"]+)")


def redact(text: str) -> str:
    """``text`` with the credentials of any URI in it hidden: ``scheme://user:***@host``
    (a user alone, which may be a token, becomes ``***``), and secret-looking query
    parameters (``password=``, ``token=``, ...) become ``key=***``. Every message that leaves
    the process and may hold a tracking, database or storage URI goes through this."""
    if not text:
        return text

    def userinfo(m: re.Match) -> str:
        if m.group("secret") is not None:
            return f"{m.group('scheme')}{m.group('user')}:***@"
        return f"{m.group('scheme')}***@"

    return _SECRET_PARAM.sub(lambda m: f"{m.group('key')}=***", _USERINFO.sub(userinfo, text))


def tracking_uri(cfg: MlflowConfig, root: Path) -> str:
    """The configured URI, or a SQLite store inside the project (absolute, so artifacts and the
    database land in the same place whatever folder a process runs in)."""
    if cfg.tracking_uri:
        return cfg.tracking_uri
    store = private_dir((root / cfg.store_dir).resolve())  # the database and the artifacts
    return f"sqlite:///{store / 'mlflow.db'}"


def _private_database(uri: str) -> None:
    """MLflow creates the SQLite file with the umask's mode (0644): make it owner-only, with
    its journal files (the folder is 0700 too)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        for f in (db, db.with_name(db.name + "-journal"), db.with_name(db.name + "-wal"),
                  db.with_name(db.name + "-shm")):
            with contextlib.suppress(FileNotFoundError):
                if f.stat().st_mode & 0o077:
                    os.chmod(f, 0o600)


def connect(cfg: MlflowConfig, root: Path) -> Tracking:
    """Point MLflow at the store and make sure the experiment exists."""
    import mlflow

    uri = tracking_uri(cfg, root)
    probe(uri)
    # MLflow prints two links per run to a remote server (a GET each): tarn shows progress
    # bars instead, and a 40-trial search would print 80 lines
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        with quiet_mlflow():  # no migration chatter on first use
            client = mlflow.MlflowClient(uri)
            exp = (client.get_experiment(client.get_run(cfg.join_run_id).info.experiment_id)
                   if cfg.join_run_id else client.get_experiment_by_name(cfg.experiment))
        if exp is None:
            artifacts = None
            if not uri.startswith(("http:", "https:", "databricks")):  # a database URI
                artifacts = (root / cfg.store_dir / "artifacts").resolve().as_uri()
            exp_id = client.create_experiment(cfg.experiment, artifact_location=artifacts)
        else:
            exp_id = exp.experiment_id
    except Exception as e:  # MLflow raises many types for "cannot reach the store"
        raise TrackingError(redact(f"MLflow tracking store {uri} is not usable "
                                   f"({first_line(e)})"),
                            "start the tracking server, free the SQLite file, or fix "
                            "mlflow.tracking_uri / MLFLOW_TRACKING_URI") from e
    _private_database(uri)
    mlflow.set_experiment(experiment_id=exp_id)
    return Tracking(uri, exp_id, cfg.registered_model)


def probe(uri: str, timeout_s: float = 5) -> None:
    """Fail in seconds when a remote store is down: MLflow itself retries an unreachable
    server, and an unreachable database, with backoff for minutes before it gives up."""
    scheme = uri.split(":", 1)[0].split("+")[0].lower()
    if scheme in ("http", "https"):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
                return
        except urllib.error.HTTPError:
            return  # it answers (a proxy may guard /health): MLflow's own errors say the rest
        except OSError as e:
            raise TrackingError(redact(f"MLflow tracking server {uri} does not answer in "
                                       f"{timeout_s:g} s "
                                       f"({first_line(getattr(e, 'reason', e))})"),
                                "start it (README, \"Scaling out\"), or fix "
                                "mlflow.tracking_uri / MLFLOW_TRACKING_URI") from e
    if scheme in ("postgresql", "mysql"):
        import sqlalchemy

        url = sqlalchemy.engine.make_url(uri)
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": int(timeout_s)})
        try:
            with engine.connect():
                return
        except Exception as e:  # noqa: BLE001 - any driver error means "not usable"
            shown = url.render_as_string(hide_password=True)
            raise TrackingError(redact(f"MLflow database {shown} is not reachable "
                                       f"({first_line(e)})"),
                                "start the database server, or fix mlflow.tracking_uri / "
                                "MLFLOW_TRACKING_URI") from e
        finally:
            engine.dispose()



def params_hash(params: Params | ParamsView, keys: tuple[str, ...]) -> str:
    """A stable hash of the params keys that shaped a model (``catalog.lineage_keys``: whole
    sections or dotted keys; lineage, recorded from the whole configuration, whatever part of
    it the calling stage may read)."""
    full = params.full if isinstance(params, ParamsView) else params
    dumped = full.model_dump(mode="json", by_alias=True)

    def value(key: str):
        node = dumped
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    canon = json.dumps({k: value(k) for k in keys}, sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()


def git_commit(root: Path) -> str:
    """The code version (with '-dirty' if the tree has changes), or 'unknown' outside git."""
    with contextlib.suppress(Exception):
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout
        if sha:
            return sha + ("-dirty" if dirty.strip() else "")
    return "unknown"


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Silence MLflow's per-run chatter (run URLs, migration logs) on the terminal."""
    import logging

    loggers = [logging.getLogger(n) for n in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def start_run(run_name: str, experiment_id: str | None = None, started: float | None = None):
    """``mlflow.start_run``, with the run starting at ``started`` (a ``time.time()``) when the
    work it records began before it could be opened: its duration in the UI is the work's."""
    import mlflow
    from mlflow.environment_variables import MLFLOW_RUN_ID

    if started is None or MLFLOW_RUN_ID.get():  # `mlflow run`: its run, which began first
        return mlflow.start_run(run_name=run_name, experiment_id=experiment_id)
    exp = experiment_id or mlflow.tracking.fluent._get_experiment_id()
    run = mlflow.MlflowClient().create_run(exp, start_time=int(started * 1000),
                                           run_name=run_name)
    return mlflow.start_run(run_id=run.info.run_id)


# ----------------------------------------------------------------------------- datasets
# MLflow's Dataset column and a run's "Datasets used": what a run read, named and fingerprinted,
# never its rows (a 300k-row table would otherwise be profiled and hashed by MLflow itself)
CONTEXTS = ("training", "validation", "test", "reference", "new data")


@dataclass(frozen=True)
class DataInput:
    """One table a run read: a name a person scans, the context it was read in, where it came
    from (``source``: a URI, with the manifest digest of the files as ``?manifest=``), a digest
    of its content, its row count and columns (a profile, not the rows)."""

    name: str
    context: str
    source: str
    digest: str
    rows: int
    columns: tuple[tuple[str, str], ...]  # (name, MLflow type) of each column

    def dataset(self):
        """The MLflow dataset: metadata only (source, digest, schema, profile)."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.types import ColSpec, Schema

        bare = self.source.split("?", 1)[0]
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": both local
            warnings.simplefilter("ignore")
            source = type(resolve_dataset_source(bare))(self.source)  # local / s3 / gs ...
        schema = Schema([ColSpec(t, n) for n, t in self.columns]) if self.columns else None
        rows, cols = self.rows, len(self.columns)

        class _Profiled(MetaDataset):
            @property
            def profile(self):  # shown beside the digest in the UI
                return {"num_rows": rows, "num_columns": cols}

            def to_dict(self) -> dict[str, str]:
                return {**super().to_dict(), "profile": json.dumps(self.profile)}

        return _Profiled(source, name=self.name, digest=self.digest, schema=schema)


def _mlflow_type(dtype) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "long"
    if pd.api.types.is_float_dtype(dtype):
        return "double"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    return "string"


def source_uri(location: str | Path, manifest_digest: str = "") -> str:
    """``location`` as a URI (a local folder becomes ``file://``), with the digest of the
    manifest that pins its files."""
    text = str(location)
    uri = text if "://" in text else Path(text).resolve().as_uri()
    return f"{uri}?manifest={manifest_digest}" if manifest_digest else uri


def frame_input(frame, name: str, context: str, source: str) -> DataInput:
    """A table in memory (new lake batches, a training frame): digest of every row's values
    (pandas' row hashes, then sha256: about 0.1 s per 300k rows), columns from the dtypes."""
    import pandas as pd

    h = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    h.update(",".join(map(str, frame.columns)).encode())
    return DataInput(name, context, source, h.hexdigest()[:16], len(frame),
                     tuple((str(c), _mlflow_type(t)) for c, t in frame.dtypes.items()))


def file_input(path: Path, name: str, context: str, source: str) -> DataInput:
    """A Parquet file (a prepared split): digest of its bytes, rows and columns from its
    footer; the rows themselves are not read."""
    import pyarrow.parquet as pq

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    meta = pq.read_metadata(path)
    empty = pq.read_schema(path).empty_table().to_pandas()
    return DataInput(name, context, source, h.hexdigest()[:16], meta.num_rows,
                     tuple((str(c), _mlflow_type(t)) for c, t in empty.dtypes.items()))


def batches_input(lake_url: str, root: Path, frame, names: list[str], manifest: list[dict],
                  context: str) -> DataInput:
    """New lake batches (curated rows): sourced from the lake, with the digest of the manifest
    of the files read (the same digest an incremental version records as new_data_hash)."""
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    where = lake_url if "://" in lake_url else root / lake_url
    shown = names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]} ({len(names)} batches)"
    return frame_input(frame, f"lake {shown}", context, redact(source_uri(where, digest)))


def split_inputs(params: Params | ParamsView, root: Path,
                 contexts: dict[str, str]) -> list[DataInput]:
    """The prepared splits named in ``contexts`` (split -> context), each sourced from the
    snapshot it was cut from (its URI and manifest digest)."""
    from tarn.core.catalog import SPLIT_FILE, load_manifest

    snapshot = root / params.paths.snapshot
    digest = load_manifest(snapshot).get("hash", "")
    src = source_uri(snapshot, digest)
    return [file_input(root / params.paths.prepared / SPLIT_FILE.format(split=split),
                       f"{split} @ snapshot {digest[:8]}", context, src)
            for split, context in contexts.items()]


def log_inputs(run_id: str, inputs: list[DataInput]) -> None:
    """Record ``inputs`` on a run (MLflow's Dataset column): one call for every stage."""
    import mlflow
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    if not inputs:
        return
    for i in inputs:
        if i.context not in CONTEXTS:
            raise ValueError(f"dataset context {i.context!r} is not one of {CONTEXTS}")
    mlflow.MlflowClient().log_inputs(run_id, [
        DatasetInput(i.dataset()._to_mlflow_entity(),
                     [InputTag(MLFLOW_DATASET_CONTEXT, i.context)]) for i in inputs])
