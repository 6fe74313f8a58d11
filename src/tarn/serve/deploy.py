"""The deployment path, whoever promotes: follow the registry's production alias.

:class:`Reconciler` polls the alias (level-triggered) and can be nudged at once (admin call,
registry webhook). On a change, in this order: it loads the new version through the trusted
loader, builds the client ONNX bundle and proves parity on held-out rows, builds the fastest
predictor that keeps parity (the verified ONNX graph for small requests, the Pipeline for
large ones), warms it, swaps one reference in :class:`ModelHolder` (requests in flight finish
on the model they started with, none sees a half-loaded one), and only then points clients at
the new bundle. If any step fails, nothing moves: the old model and the old bundle stay, the
failure is reported once and retried with exponential backoff.

With ``serve.workers`` > 1 every process runs its own reconciler and swaps on its own. Only
the *leader* (worker 0) exports the bundle, proves parity, points clients at it and records the
deployment in the registry; a follower loads the model and then the leader's bundle for the
same version once it is on disk (checksums verified), so the work is not done twice and two
processes never write the same folder.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from tarn.config import Params
from tarn.core.signing import DeployKey, UnsignedVersion, project_key
from tarn.core.tags import DeploymentRecord
from tarn.core.task import Task
from tarn.errors import first_line
from tarn.serve.inputs import Column, InputSchema

log = logging.getLogger("tarn.serve")


class Predictor(Protocol):
    def scores(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """The model's scores per row, as :meth:`tarn.core.task.Task.scores` defines them
        (binary: P(class 1); multiclass: (n, K) probabilities; regression: values)."""
        ...


class PythonPredictor:
    """The registered sklearn Pipeline itself (the fallback when no verified bundle exists)."""

    def __init__(self, pipe, columns: list[Column], task: Task) -> None:
        self.pipe = pipe
        self.task = task
        self.names = [c.name for c in columns]

    def scores(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        return self.task.scores(self.pipe, pd.DataFrame(columns, columns=self.names))


class HybridPredictor:
    """The verified ONNX graph for small requests (no per-call sklearn overhead), the native
    Pipeline for large batches (XGBoost's own predictor is faster there). Both are the same
    model: publishing the bundle proved their probabilities agree on the held-out rows."""

    def __init__(self, onnx: Predictor, python: Predictor, max_onnx_rows: int) -> None:
        self.onnx, self.python, self.cutoff = onnx, python, max_onnx_rows

    def scores(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(columns.values())))
        return (self.onnx if n <= self.cutoff else self.python).scores(columns)


@dataclass(frozen=True)
class Deployed:
    name: str
    version: str
    predictor: Predictor
    columns: list[Column]
    source: str  # "onnx" | "python"
    loaded_at: str
    bundle: str | None
    task: Task  # what the version predicts, from its own card (classes, threshold)
    inputs: InputSchema = field(init=False, repr=False, compare=False)  # names + contract

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", InputSchema(self.columns))


class ModelHolder:
    """One reference to the serving model; replacing it is the atomic swap."""

    def __init__(self) -> None:
        self.current: Deployed | None = None


MAX_BACKOFF_S = 300.0  # a failing version is retried at most this far apart
FOLLOWER_WAIT_S = 120.0  # a follower waits this long for the leader's bundle, then fails


@dataclass
class _Failure:
    attempts: int
    retry_at: float  # time.monotonic()
    error: str


@dataclass
class Status:
    last_check: float = 0.0
    last_error: str = ""
    registry_errors: int = 0
    swaps: int = 0
    swap_failures: int = 0
    unsigned_refusals: int = 0  # loads refused: no valid deployment signature
    history: list[dict] = field(default_factory=list)


class Reconciler:
    """Keeps ``holder`` on the version that holds the production alias."""

    def __init__(self, params: Params, root: Path, holder: ModelHolder,
                 server_url: str = "", leader: bool = True,
                 key: DeployKey | None = None) -> None:
        self.params = params
        self.root = root
        self.holder = holder
        self.server_url = server_url
        self.leader = leader  # publishes the bundle and records deployments
        # deploys only versions `tarn promote` signed with this key (read at the server edge)
        self.key = key if key is not None else project_key(params, root)
        self.status = Status()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)
        self._registry = None
        self._holdout: pd.DataFrame | None = None
        self._failures: dict[str, _Failure] = {}  # version -> its last failed deployment
        # last_error is about reaching production (a refused version, the registry away):
        # it goes once production is served again
        self._error_until_served = False

    # --------------------------------------------------------------- lifecycle
    def start(self) -> Reconciler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)

    def nudge(self) -> None:
        """Reconcile now instead of at the next poll."""
        self._wake.set()

    # --------------------------------------------------------------- the work
    def registry(self):
        if self._registry is None:
            from tarn.core.registry import Registry

            self._registry = Registry(self.params.mlflow, self.root, self.params.promote.alias)
        return self._registry

    def reconcile(self, *, retry_now: bool = True) -> str | None:
        """One pass: deploy the production version if it is not the one serving.

        In order: load (trusted), build and parity-check the client bundle, warm, swap, then
        point clients at the bundle. On any failure nothing moves: the old version keeps
        serving and the old bundle stays current. A failing version is reported once and
        retried with exponential backoff (the poll loop honours it; ``retry_now`` - an admin
        call, a webhook, startup - tries at once)."""
        with self._lock:
            self.status.last_check = time.time()
            try:
                reg = self.registry()
                target = self._intent(reg)
            except Exception as e:  # noqa: BLE001 - unreachable registry: keep serving
                self.status.registry_errors += 1
                self.status.last_error = f"registry unreachable: {first_line(e)}"
                self._error_until_served = True
                self._registry = None
                return None
            current = self.holder.current
            if target is None or (current is not None and current.version == target):
                if self._error_until_served and (target is None or current is not None):
                    self.status.last_error, self._error_until_served = "", False
                return target
            failed = self._failures.get(target)
            if failed is not None and not retry_now and time.monotonic() < failed.retry_at:
                return target  # backing off
            try:
                deployed, bundle = self.load(target)
            except UnsignedVersion as e:  # moved to production by hand: never deployed
                self.status.unsigned_refusals += 1
                self._failed(target, first_line(e), failed, refused=True)
                return target
            except Exception as e:  # noqa: BLE001 - a bad version must not stop serving
                self._failed(target, first_line(e), failed)
                return target
            self._failures.pop(target, None)
            self.status.last_error, self._error_until_served = "", False
            self.holder.current = deployed  # the swap
            if self.leader:
                self._point_clients(reg.name, target, bundle)
            self.status.swaps += 1
            self.status.history.append({"version": target, "at": deployed.loaded_at,
                                        "source": deployed.source})
            if self.leader:
                self._record(reg, deployed)
            return target

    def _intent(self, reg) -> str | None:
        """The version to serve: the alias when alias and stage agree (plain reads, nothing
        written). When they disagree, a promotion may be halfway (alias moved, stage not yet):
        read again a moment later; only a disagreement that lasts is someone moving one of them
        by hand, and only the leader settles it (``production_intent``: alias or stage,
        whichever moved last, the other follows). Followers follow the alias."""
        for attempt in range(3):
            alias, staged = reg.production(), reg.stage_versions()
            if alias is not None and staged == [alias]:
                return alias
            if alias is None and not staged:
                return None  # nothing promoted yet
            if not self.leader:
                return alias
            if attempt < 2:
                self._stop.wait(0.3)
        return reg.production_intent()

    def _failed(self, version: str, error: str, before: _Failure | None,
                refused: bool = False) -> None:
        attempts = before.attempts + 1 if before else 1
        delay = min(MAX_BACKOFF_S, self.params.serve.poll_interval_s * 2 ** (attempts - 1))
        self._failures[version] = _Failure(attempts, time.monotonic() + delay, error)
        self.status.swap_failures += 1
        serving = self.holder.current.version if self.holder.current else "none"
        what = (f"version {version} refused (still serving {serving})" if refused
                else f"version {version} failed to load")
        self.status.last_error = (f"{what}: {error} (attempt {attempts}; next try in "
                                  f"{delay:.0f} s)")
        self._error_until_served = True
        if before is None or before.error != error:  # reported once, not every poll
            log.error(self.status.last_error)

    def _point_clients(self, name: str, version: str, bundle) -> None:
        from tarn.edge import export as edge

        out_root = self.root / self.params.edge.bundle_dir
        try:
            if bundle is None:
                edge.withdraw_current(out_root)
            else:
                edge.point_current(out_root, name, version, bundle)
        except OSError as e:  # the server already serves it; clients catch up next time
            self.status.last_error = f"client bundle pointer not updated: {first_line(e)}"
            log.error(self.status.last_error)

    def _loop(self) -> None:
        while not self._stop.is_set():
            nudged = self._wake.is_set()
            self._wake.clear()
            self.reconcile(retry_now=nudged)
            self._wake.wait(self.params.serve.poll_interval_s)

    def holdout(self) -> pd.DataFrame | None:
        """The prepared test split's curated rows (parity data), read once; each version
        takes its own input columns from it (:func:`holdout_for`)."""
        if self._holdout is None:
            from tarn.core.catalog import load_split

            try:
                self._holdout = load_split(self.params, self.root, "test").frame
            except Exception:  # noqa: BLE001 - no prepared data here: no parity data
                return None
        return self._holdout

    def served(self, version: str, card: dict):
        """The task and contract of the version being loaded: from its card; a version from
        before cards is described by today's params.yaml, and the log says so."""
        from tarn.core.model import served_contract

        p = self.params
        served = served_contract(card, p.schema, p.prepare, p.train.threshold)
        if not served.from_card:
            log.warning("version %s carries no card (registered before tasks): its requests "
                        "are checked against today's params.yaml schema", version)
        return served

    def load(self, version: str):
        """Load (trusted), build the parity-checked client bundle (not yet pointed at), pick
        the predictor, warm it. Returns (Deployed, bundle or None). Raises on any failure.

        Requests are validated against the version's own contract (its card), so a version
        trained on other columns or categories than today's params.yaml is served as trained."""
        from tarn.core.features import input_schema
        from tarn.serve.inputs import columns_from_signature

        reg = self.registry()
        mv = reg.version(version)
        pipe, card = reg.load_with_card(version, key=self.key)  # signed? then trusted?
        served = self.served(version, card)
        task = served.task
        columns = columns_from_signature(input_schema(served.schema, served.prepare).to_dict(),
                                         served.schema)
        predictor: Predictor = PythonPredictor(pipe, columns, task)
        source, bundle = "python", None
        holdout = holdout_for(self.holdout(), served)
        if holdout is not None:  # no held-out rows here: no parity proof, Python serves
            from tarn.edge import export as edge
            from tarn.edge.runner import EdgeModel

            found = self._published(reg.name, version) if self.leader else None
            if found is not None:  # published before (a rollback): proved then, reused
                bundle, model = found
            elif self.leader:
                bundle = edge.publish_bundle(
                    pipe, name=reg.name, version=version, tags=dict(mv.tags),
                    metrics=reg.run_metrics(version, mv), X_holdout=holdout,
                    schema_cfg=served.schema, prepare_cfg=served.prepare, task=task,
                    edge_cfg=self.params.edge, out_root=self.root / self.params.edge.bundle_dir,
                    point=False)  # ParityError: a deployment failure, nothing moves
                model = EdgeModel(bundle.path)
            else:
                bundle, model = self._leaders_bundle(reg.name, version)
            predictor = HybridPredictor(model, predictor, self.params.serve.onnx_max_rows)
            source = "onnx"
        warm = {c.name: (np.array([np.nan]) if c.kind != "string" else np.array([None],
                                                                               dtype=object))
                for c in columns}
        if holdout is not None and len(holdout):
            warm = {c.name: _column(holdout.head(8), c) for c in columns}
        scores = np.asarray(predictor.scores(warm), dtype=np.float64)
        if not np.all(np.isfinite(scores)):
            raise ValueError("warm-up predictions are not finite")
        deployed = Deployed(reg.name, version, predictor, columns, source,
                            datetime.now(UTC).isoformat(timespec="milliseconds"),
                            str(bundle.path) if bundle else None, task)
        return deployed, bundle

    def _leaders_bundle(self, name: str, version: str):
        """(bundle, EdgeModel) of ``version`` as the leader publishes it: waits until the
        folder is on disk and verifies (a folder being replaced is retried). Raises after
        FOLLOWER_WAIT_S (the leader refused the version, e.g. parity failed: nothing moves
        here either)."""
        deadline = time.monotonic() + FOLLOWER_WAIT_S
        problem = "not published yet"
        while time.monotonic() < deadline and not self._stop.is_set():
            found = self._published(name, version)
            if isinstance(found, tuple):
                return found
            problem = found or problem
            time.sleep(0.05)
        raise TimeoutError(f"the leader's bundle of version {version} is not ready ({problem})")

    def _published(self, name: str, version: str):
        """(Bundle, EdgeModel) of ``version`` when its bundle folder is on disk, verified
        (checksums, and metadata naming this version: parity was proved when it was
        published, and a registered version never changes); else None, or for the follower's
        wait the reason as a string. A rollback then swaps without exporting again."""
        from tarn.edge.export import Bundle, _dir_name
        from tarn.edge.runner import BundleError, EdgeModel

        path = self.root / self.params.edge.bundle_dir / _dir_name(name, version)
        if not path.is_dir():
            return None
        try:
            model = EdgeModel(path)
        except (BundleError, OSError, TypeError, ValueError) as e:
            return first_line(e) if not self.leader else None
        if model.version != str(version):
            return f"holds version {model.version}" if not self.leader else None
        return Bundle(path, None, str(model.metadata.get("sha256", ""))), model

    def _record(self, reg, d: Deployed) -> None:
        """Tag the version with where it is deployed (the backend, and the client bundle the
        leader published); note when gates were skipped."""
        try:
            promoted = reg.promotion_record(d.version).promoted_at
            record = DeploymentRecord().with_target(
                "backend", d.loaded_at, self.server_url or "tarn serve", d.source,
                note="" if promoted else ("alias set outside `tarn promote` (e.g. the MLflow "
                                          "UI): gates were skipped"))
            if d.bundle:
                record = record.with_target("bundle", d.loaded_at, d.bundle, "tarn serve")
            reg.record_deployment(d.version, record)
            reg.sync_stage()
        except Exception as e:  # noqa: BLE001 - bookkeeping must not undo a deployment
            self.status.last_error = f"deployed {d.version} but could not tag it: {first_line(e)}"


def holdout_for(frame: pd.DataFrame | None, served) -> pd.DataFrame | None:
    """The held-out rows as the served version's model frame, or None when they lack one of
    its input columns (a version trained on another contract: no parity data here)."""
    if frame is None:
        return None
    from tarn.core.features import to_model_frame

    try:
        return to_model_frame(frame, served.schema, served.prepare)
    except KeyError as e:
        log.warning("no parity rows for this version (%s): the Python model serves", e)
        return None


def _column(df: pd.DataFrame, c: Column) -> np.ndarray:
    if c.kind == "string":
        s = df[c.name].astype(object)
        return s.where(s.notna(), None).to_numpy(dtype=object)
    return df[c.name].to_numpy(dtype=np.float64)

