"""Every call to the MLflow model registry: register, load, tag, alias, read a version's run.

No other module calls the registry. The ``production`` alias is the source of truth; the
legacy stage ``Production`` follows it (previous one archived) because the MLflow UI and many
users still look at stages. Whether a version *may* be promoted is decided elsewhere
(``tarn.lifecycle.gates``); the registry applies the verdict.

Promotions are serialized by a lock kept in the registry itself (a tag on the registered
model with owner and expiry, written, then read back after a settle delay to confirm), so two
``tarn promote`` on two machines against one registry cannot interleave; a local file lock
is the fast path on one machine. Before the alias moves, the lock is re-checked and the
production version compared with the one read at the start (compare-and-set): if someone
moved it meanwhile, the promotion stops instead of recording a wrong ``previous_production``.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import random
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pandas as pd

from tarn.config import MlflowConfig
from tarn.core.tags import (
    AGREED_PRODUCTION,
    PROMOTION_LOCK,
    STAGE_PROMOTION_ACTOR,
    DeploymentRecord,
    GateRecord,
    Lineage,
    LoadRefusal,
    PromotionRecord,
    RetrainRecord,
    RunTag,
    VersionTag,
)
from tarn.errors import TarnError, first_line

DEFAULT_ALIAS = "production"
LOCK_TTL_S = 300.0  # a promoter that died frees the lock after this long
LOCK_WAIT_S = 120.0  # how long a promotion waits for another one to finish
LOCK_SETTLE_S = 0.5  # written, then read back after this long: the last writer owns it


CARD_MARKDOWN = "model_card.md"  # on the version's run: the card, for a person


def headline(metrics: dict[str, float]) -> str:
    """The readable test figure ("roc_auc 0.9121") from ``test_*`` metrics ("" if none)."""
    for name in VersionTag.HEADLINE:
        v = metrics.get(f"test_{name}")
        if isinstance(v, int | float) and not isinstance(v, bool):
            return f"{name} {float(v):.4f}"
    return ""


def logged_model_id(model_uri: str) -> str | None:
    """The MLflow 3 logged model id in a ``models:/m-...`` URI (None for another URI)."""
    return model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None


class RegistryError(TarnError):
    """The registry refuses, or a version does not exist."""


class Verdict(Protocol):
    """What the gates decided about a candidate (see ``tarn.lifecycle.gates``)."""

    @property
    def passed(self) -> bool: ...

    def failures(self) -> list[str]: ...

    def as_dict(self) -> dict: ...


class PromotionRefused(TarnError):
    """A candidate failed its gates; ``gates`` holds the verdict and its figures."""

    def __init__(self, message: str, hint: str, gates: Verdict) -> None:
        super().__init__(message, hint)
        self.gates = gates


@dataclass(frozen=True)
class Promotion:
    version: str
    previous: str | None
    gates: Verdict | None
    forced: bool


@dataclass(frozen=True)
class Registered:
    run_id: str
    model_uri: str
    registered_model: str
    version: str

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, "model_uri": self.model_uri,
                "registered_model": self.registered_model, "version": self.version}


class Registry:
    """The registered model named in ``mlflow.registered_model``, in the configured store."""

    def __init__(self, cfg: MlflowConfig, root: Path, alias: str = DEFAULT_ALIAS) -> None:
        import mlflow

        from tarn.core.tracking import connect

        self.cfg = cfg
        self.root = root
        self.tracking = connect(cfg, root)
        self.name = cfg.registered_model
        self.alias = alias
        self.client = mlflow.MlflowClient(self.tracking.uri)

    def uri(self, version: str) -> str:
        return f"models:/{self.name}/{version}"

    # ------------------------------------------------------------------ reading
    def version(self, version: str):
        try:
            return self.client.get_model_version(self.name, str(version))
        except Exception as e:  # noqa: BLE001 - MLflow raises RestException / MlflowException
            raise RegistryError(f"{self.name} version {version} not found ({first_line(e)})",
                                "see the versions with `tarn status`") from e

    def versions(self) -> list:
        """Every version of the model, oldest first."""
        return sorted(self.client.search_model_versions(f"name = '{self.name}'"),
                      key=lambda v: int(v.version))

    def aliases(self) -> dict[str, str]:
        """alias -> version of the registered model (search results carry no aliases)."""
        try:
            return {a: str(v) for a, v in
                    self.client.get_registered_model(self.name).aliases.items()}
        except Exception:  # noqa: BLE001 - no model yet
            return {}

    def latest(self) -> str:
        versions = self.client.search_model_versions(f"name = '{self.name}'")
        if not versions:
            raise RegistryError(f"registered model {self.name!r} has no versions",
                                "train one first (`dvc repro` or `tarn train`)")
        return str(max(int(v.version) for v in versions))

    def production(self) -> str | None:
        """The version holding the production alias, or None if there is none. An unreachable
        registry raises: "no production model" and "cannot tell" are different answers."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.name, self.alias).version)
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None  # no alias (or no model) yet
            raise

    def stage_versions(self, stage: str = "Production") -> list[str]:
        return sorted(str(v.version) for v in self.client.search_model_versions(
            f"name = '{self.name}'") if v.current_stage == stage)

    def lineage(self, version: str) -> Lineage:
        return Lineage.from_tags(dict(self.version(version).tags))

    def promotion_record(self, version: str) -> PromotionRecord:
        return PromotionRecord.from_tags(dict(self.version(version).tags))

    def record_tags(self, version: str) -> dict[str, str]:
        """The version's tags with every record also in the flat form (one ``tarn.<field>``
        tag per field, as versions registered before the JSON tags carry them): one view for
        readers of either form."""
        tags = dict(self.version(version).tags)
        flat: dict[str, str] = {}
        for record in (Lineage, RetrainRecord, PromotionRecord, GateRecord, DeploymentRecord,
                       LoadRefusal):
            if record.present(tags):
                flat.update(record.from_tags(tags).to_tags())
        return {**flat, **tags}

    def run_metrics(self, version: str, mv=None) -> dict[str, float]:
        """The metrics of the run that logged ``version`` (test figures from evaluate)."""
        mv = mv or self.version(version)
        return dict(self.client.get_run(mv.run_id).data.metrics) if mv.run_id else {}

    def load_model(self, version: str):
        """The version's sklearn Pipeline: the one place a ``models:/`` URI is loaded.

        The artifacts are downloaded into a folder that is always removed, checked by
        :func:`tarn.core.model.load_trusted` (skops only, no bundled code, allow-listed
        types) and never handed to MLflow's own loader. A refusal is recorded on the version.
        """
        return self.load_with_card(version)[0]

    def load_with_card(self, version: str) -> tuple[object, dict]:
        """(Pipeline, card) of a version from one download: what it predicts (task, classes,
        threshold) and the contract it was trained on travel with it (``{}`` for a version
        from before cards; see :func:`tarn.core.model.read_card`)."""
        import tempfile

        import mlflow.artifacts

        from tarn.core.model import UntrustedModel, load_trusted, read_card

        with tempfile.TemporaryDirectory(prefix="tarn-model-") as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=self.uri(version),
                                                        dst_path=tmp)
            try:
                return load_trusted(Path(local)), read_card(Path(local))
            except UntrustedModel as e:
                e.message = f"{self.name} version {version} refused: {e.message}"
                with contextlib.suppress(Exception):  # recording must not hide the refusal
                    self._tag(version, LoadRefusal(e.message).to_tags())
                    self._forget_agreed(str(version))
                raise

    def card(self, version: str) -> dict:
        """The card the version carries in its ``MLmodel`` metadata (task, classes, threshold,
        contract; see :func:`tarn.core.model.packaging`); ``{}`` for a version from before
        cards. Only the ``MLmodel`` YAML is downloaded and read: nothing is executed."""
        import tempfile

        import mlflow.artifacts

        from tarn.core.model import read_card

        with tempfile.TemporaryDirectory(prefix="tarn-card-") as tmp:
            mlflow.artifacts.download_artifacts(artifact_uri=f"{self.uri(version)}/MLmodel",
                                                dst_path=tmp)
            return read_card(Path(tmp))

    def task(self, version: str):
        """The :class:`tarn.core.task.Task` the version was trained for (from its card)."""
        from tarn.core.task import Task

        return Task.from_card(self.card(version))

    def scores(self, version: str, X: pd.DataFrame):
        """(task, scores): the version's own task and its scores for ``X`` (binary: P(class 1);
        multiclass: (n, K) probabilities; regression: values)."""
        from tarn.core.task import Task

        pipe, card = self.load_with_card(version)
        task = Task.from_card(card)
        return task, task.scores(pipe, X)

    def input_schema(self, version: str) -> dict[str, tuple[str, bool]]:
        from mlflow.models import get_model_info

        info = get_model_info(self.uri(version))
        if info.signature is None:
            return {}
        return {c.name: (c.type.name, c.required) for c in info.signature.inputs.inputs}

    def schema_problems(self, candidate: str, champion: str) -> list[str]:
        """Why the candidate cannot take the champion's requests or answer them the same way
        (empty = compatible): its columns, and its task and classes (from the cards: a
        binary model's clients read a probability, a regression model's a value)."""
        cand, champ = self.input_schema(candidate), self.input_schema(champion)
        problems = []
        t_cand, t_champ = self.task(candidate), self.task(champion)
        if t_cand.kind != t_champ.kind:
            problems.append(f"task {t_cand.kind}, the champion's {t_champ.kind}: responses "
                            "change shape and no metric compares the two")
        elif t_cand.kind == "multiclass" and t_cand.classes != t_champ.classes:
            problems.append(f"classes {list(t_cand.classes)}, the champion's "
                            f"{list(t_champ.classes)}: no metric compares the two")
        for col, (kind, _required) in champ.items():
            if col not in cand:
                problems.append(f"column {col!r} missing")
            elif cand[col][0] != kind:
                problems.append(f"column {col!r} is {cand[col][0]}, was {kind}")
        for col, (_, required) in cand.items():
            if col not in champ and required:
                problems.append(f"new required column {col!r}")
        return problems

    # ------------------------------------------------------------------ writing
    def register(self, pipe, lineage: Lineage, run_name: str, logged_params: dict,
                 metrics: dict, pack, documents: dict[str, object] | None = None, *,
                 started: float | None = None, inputs: list | None = None) -> Registered:
        """Log the Pipeline as an MLflow model in a new run and register it as a new version
        carrying its lineage (one call: no version without its lineage). Training and
        retraining both register through here.

        ``started`` (a ``time.time()``) is when the work the run records began: the run
        starts then, so its duration in the UI is the fit's, not the upload's. ``inputs``
        (:class:`tarn.core.tracking.DataInput`) are the tables the model learned from: the
        run's datasets. The version gets the readable tags and one JSON lineage tag; the
        run keeps the flat tags, and the card as ``model_card.md``."""
        import mlflow

        from tarn.core.model import TRUSTED_TYPES, card_markdown, pip_requirements
        from tarn.core.tracking import log_inputs, quiet_mlflow, start_run

        tags = lineage.to_tags()
        readable = {VersionTag.TASK: str(pack.card.get("task", "")),
                    VersionTag.DATA: lineage.data_tag()}
        test = headline(metrics)
        if test:
            readable[VersionTag.TEST] = test
        version_tags = {**readable, **lineage.version_tags()}
        # the run starts when the work began (``started``), not at the upload
        with quiet_mlflow(), start_run(run_name, self.tracking.experiment_id, started) as run:
            mlflow.set_tags({**tags, RunTag.STAGE: run_name})
            mlflow.log_params(dict(logged_params))
            mlflow.log_metrics(metrics)
            log_inputs(run.info.run_id, list(inputs or []))
            for name, doc in (documents or {}).items():  # e.g. the manifest of the new data
                mlflow.log_dict(doc, name)
            mlflow.log_text(card_markdown(pack.card, lineage.as_json_dict(), metrics),
                            CARD_MARKDOWN)
            # no input example: MLflow would check it by loading the model with its own
            # loader, which tarn switches off (pickle); the signature carries the contract,
            # and tarn's loader and the server's warm-up check the model
            info = mlflow.sklearn.log_model(
                pipe, name="model", signature=pack.signature, pyfunc_predict_fn=pack.predict_fn,
                metadata=pack.metadata,
                skops_trusted_types=TRUSTED_TYPES, pip_requirements=pip_requirements())
            mv = mlflow.register_model(info.model_uri, self.name, tags=version_tags)
        return Registered(run.info.run_id, info.model_uri, self.name, str(mv.version))

    def record_deployment(self, version: str, record: DeploymentRecord) -> None:
        self._tag(version, record.version_tags())

    def record_retrain(self, version: str, record: RetrainRecord) -> None:
        """Why a retrained version exists, added to its lineage tag (written once, by the
        process that registered it, before anyone promotes it)."""
        tags = dict(self.version(version).tags)
        raw = tags.get(Lineage.TAG)
        if raw is None:  # a version from before the JSON lineage: its own tags
            self._tag(version, record.to_tags())
            return
        doc = {**json.loads(raw), **record.as_json_dict()}
        self._tag(version, {Lineage.TAG: json.dumps(doc, sort_keys=True, default=float,
                                                    separators=(",", ":"))})

    def record_gates(self, version: str, result: str, verdict: Verdict) -> None:
        self._tag(version, GateRecord(result, verdict.as_dict()).version_tags())

    def record_test(self, version: str, metrics: dict[str, float]) -> None:
        """The headline test figure on the version (``tarn.test``), from the evaluate
        stage's ``test_*`` metrics."""
        text = headline(metrics)
        if text:
            self._tag(version, {VersionTag.TEST: text})

    def gate_record(self, version: str) -> GateRecord:
        return GateRecord.from_tags(dict(self.version(version).tags))

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        path = (self.root / self.cfg.store_dir).resolve() / "promote.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _lock_holder(self) -> dict | None:
        raw = self.client.get_registered_model(self.name).tags.get(PROMOTION_LOCK)
        try:
            held = json.loads(raw) if raw else None
        except ValueError:
            return None
        return held if isinstance(held, dict) and held.get("expires", 0) > time.time() else None

    @contextlib.contextmanager
    def _lock(self) -> Iterator[str]:
        """Hold the promotion lock (file lock here, registry lock everywhere); yields the
        owner id."""
        owner = f"{getpass.getuser()}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        with self._file_lock():
            deadline = time.monotonic() + LOCK_WAIT_S
            while True:
                held = self._lock_holder()
                if held is None:
                    self.client.set_registered_model_tag(self.name, PROMOTION_LOCK, json.dumps(
                        {"owner": owner, "expires": time.time() + LOCK_TTL_S}))
                    time.sleep(LOCK_SETTLE_S)
                    held = self._lock_holder()
                    if held is not None and held.get("owner") == owner:
                        break
                if time.monotonic() > deadline:
                    raise RegistryError(
                        f"another promotion holds the lock ({(held or {}).get('owner')})",
                        f"wait for it; if its process died the lock expires in "
                        f"{LOCK_TTL_S:.0f} s (tag {PROMOTION_LOCK} on {self.name})")
                time.sleep(0.2 + random.random() * 0.3)
            try:
                yield owner
            finally:
                with contextlib.suppress(Exception):
                    if (self._lock_holder() or {}).get("owner") == owner:
                        self.client.delete_registered_model_tag(self.name, PROMOTION_LOCK)

    def _still_mine(self, owner: str) -> None:
        if (self._lock_holder() or {}).get("owner") != owner:
            raise RegistryError("the promotion lock expired or was taken while gating",
                                "retry the promotion")

    def promote(self, version: str, judge: Callable[[str, str | None], Verdict] | None, *,
                reason: str = "", actor: str | None = None) -> Promotion:
        """Point the alias (and the stage) at ``version`` if ``judge(version, champion)``
        passes (``judge=None`` skips the gates: a forced promotion); record who/when/why."""
        if judge is None and not reason:
            raise RegistryError("--force needs --reason", "say why the gates are skipped")
        self.version(version)  # exists?
        with self._lock() as owner:
            return self._promote_locked(owner, version, judge, reason, actor)

    def rollback(self, reason: str = "", actor: str | None = None) -> Promotion:
        """Put back the version the current one replaced: read and moved under one lock."""
        with self._lock() as owner:
            current, previous = self.previous_production()
            return self._promote_locked(owner, previous, None,
                                        reason or f"rollback from version {current}", actor)

    def _promote_locked(self, owner: str, version: str,
                        judge: Callable[[str, str | None], Verdict] | None, reason: str,
                        actor: str | None) -> Promotion:
        forced = judge is None
        previous = self.production()
        verdict = None if forced else judge(version, previous if previous != version else None)
        if verdict is not None and not verdict.passed:
            self.record_gates(version, "refused", verdict)
            raise PromotionRefused(
                f"version {version} did not pass the gates: " + "; ".join(verdict.failures()),
                "improve the model, or `tarn promote --force --reason ...`", verdict)
        self._still_mine(owner)
        now = self.production()
        if now != previous:  # compare-and-set: someone moved it without the lock
            raise RegistryError(f"production moved from {previous} to {now} during the "
                                "promotion; nothing changed", "check `tarn status`, then retry")
        self._set_production(version)
        record = PromotionRecord(
            promoted_by=actor or getpass.getuser(),
            promoted_at=datetime.now(UTC).isoformat(timespec="seconds"),
            reason=reason or "passed gates", forced=forced,
            previous_production=previous or "")
        self._tag(version, record.version_tags())
        if verdict is not None:
            self.record_gates(version, "passed", verdict)
        else:  # the gates did not run: say so, beside what they said when they last did
            last = self.gate_record(version)
            self._tag(version, GateRecord(GateRecord.SKIPPED, last.figures, last.measured if (
                last.result == GateRecord.SKIPPED) else last.result).version_tags())
        self.check_consistent()
        return Promotion(version, previous, verdict, forced)

    def previous_production(self) -> tuple[str, str]:
        """(current production, the version it replaced), for a rollback."""
        current = self.production()
        if current is None:
            raise RegistryError("nothing is in production", "promote a version first")
        previous = self.promotion_record(current).previous_production
        if not previous:
            raise RegistryError(f"version {current} has no previous production version",
                                "promote a specific version with `tarn promote --version N`")
        return current, previous

    def _set_production(self, version: str) -> None:
        self.client.set_registered_model_alias(self.name, self.alias, version)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stages are deprecated, still what the UI shows
            # archive the others one by one: MLflow's archive_existing_versions=True compares
            # an integer column with a string and fails on PostgreSQL (mlflow/mlflow#24592)
            self.client.transition_model_version_stage(self.name, version, "Production")
            for other in self.stage_versions():
                if other != str(version):
                    self.client.transition_model_version_stage(self.name, other, "Archived")
        if self.refusal(str(version)):
            self._forget_agreed(str(version))
        else:
            self.client.set_registered_model_tag(self.name, AGREED_PRODUCTION, str(version))

    def refusal(self, version: str) -> str:
        """Why tarn's loader refused ``version`` ('' if it never did): recorded on the
        version the first time anything tried to load it."""
        return LoadRefusal.from_tags(dict(self.version(version).tags)).load_refused

    def _forget_agreed(self, version: str) -> None:
        """A refused version is never the one alias and stage agreed on: the record goes
        (``production_intent`` then resolves a disagreement without it: a refused version
        never wins one)."""
        tags = self.client.get_registered_model(self.name).tags
        if tags.get(AGREED_PRODUCTION) == version:
            self.client.delete_registered_model_tag(self.name, AGREED_PRODUCTION)

    def sync_stage(self) -> None:
        """Make the stage follow the alias (repairs an alias set by hand in the UI)."""
        current = self.production()
        if current is not None and self.stage_versions() != [current]:
            with self._lock():
                current = self.production()  # read again: a promotion may have just finished
                if current is not None and self.stage_versions() != [current]:
                    self._set_production(current)

    def production_intent(self) -> str | None:
        """The version the user means as production, after making alias and stage agree.

        The ``production`` alias and the stage ``Production`` are two ways to say the same
        thing (the registry page's stage transition, ``transition_model_version_stage``, and
        what many users still click). tarn remembers the version they last agreed on; when
        they disagree, whichever moved since is the intent and the other follows. A version
        moved *into* Production by stage is promoted like an alias set by hand (gates
        skipped, recorded). Archiving the production version by stage does not undeploy it:
        the stage is restored."""
        alias, staged = self.production(), self.stage_versions()
        if alias is not None and staged == [alias]:
            return alias
        if not staged and alias is None:
            return None
        # a disagreement: decide under the promotion lock, so a read halfway through someone
        # else's promotion (alias moved, stage not yet) is never taken for an intent
        with self._lock() as owner:
            alias, staged = self.production(), self.stage_versions()
            if (alias is not None and staged == [alias]) or (not staged and alias is None):
                return alias
            agreed = self.client.get_registered_model(self.name).tags.get(AGREED_PRODUCTION)
            # a version tarn refused to load never wins a disagreement: moving the stage (or
            # the alias) away from one is the fix, moving it onto one is not an intent
            entered = [v for v in staged if v != agreed and v != alias and not self.refusal(v)]
            if entered and (alias is None or alias == agreed or self.refusal(alias)):
                # the stage moved: alias follows
                newest = max(entered, key=lambda v: self.version(v).last_updated_timestamp or 0)
                self._promote_locked(owner, newest, None, "stage set to Production in the "
                                     "MLflow registry: gates skipped", STAGE_PROMOTION_ACTOR)
                return newest
            if alias is not None:  # the alias moved (or the stage was archived): stage follows
                self._set_production(alias)
            return alias

    def state(self) -> tuple[str | None, list[str]]:
        """(alias target, versions in stage Production), read together under the promotion
        lock, so never halfway through someone else's promotion."""
        with self._lock():
            return self.production(), self.stage_versions()

    def check_consistent(self) -> None:
        current = self.production()
        staged = self.stage_versions()
        if current is not None and staged != [current]:
            raise RegistryError(f"alias {self.alias} -> {current} but stage Production -> "
                                f"{staged}", "run `tarn promote --version "
                                f"{current} --force --reason repair`")

    def register_webhook(self, url: str, secret: str) -> str:
        """Ask the tracking server to call ``url`` when an alias of this model is set.

        Only a remote ``mlflow server`` delivers webhooks (not a local SQLite store)."""
        if not self.tracking.uri.startswith(("http://", "https://")):
            raise RegistryError("webhooks need a remote MLflow tracking server",
                                "set mlflow.tracking_uri / MLFLOW_TRACKING_URI to its URL; "
                                "locally the server polls the alias instead")
        if not secret:
            raise RegistryError("no webhook secret", "set TARN_WEBHOOK_SECRET")
        hook = self.client.create_webhook(
            name=f"tarn-{self.name}-{self.alias}", url=url,
            events=["model_version_alias.created"], secret=secret,
            description=f"tarn: deploy {self.name}@{self.alias}")
        return hook.webhook_id

    def _tag(self, version: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_model_version_tag(self.name, version, k, v)
