"""Every ``tarn.*`` tag, defined once: written and parsed here and nowhere else.

Model-version tags are typed records (:class:`Lineage`, :class:`PromotionRecord`,
:class:`GateRecord`, :class:`DeploymentRecord`) so a reader gets ints and lists, not strings
parsed two different ways. Run tags (on MLflow runs, not versions) are the constants in
:class:`RunTag`.

A version page is read by a person: it carries at most :data:`MAX_VERSION_TAGS` tags, the few
readable ones of :class:`VersionTag` (task, test figure, gate verdict, data digest) and one JSON
tag per record (``tarn_lineage``, ``tarn_promotion``, ``tarn_gates``, ``tarn_deployment``: the
underscore sorts them after every ``tarn.`` tag, and the UI lists tags by name, so the readable
ones come first).
``version_tags()`` writes that form; ``from_tags`` reads it and the older one tag per field
(versions registered before), so every reader works on both. ``to_tags()`` stays the flat
form, for run tags (a run page has room) and results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, ClassVar

PREFIX = "tarn."
# on the registered model (not a version): who holds the promotion lock, until when
PROMOTION_LOCK = "tarn.promotion_lock"
# on the registered model: the version alias and stage last agreed on (to tell which of the
# two someone moved since, in the MLflow UI or API)
AGREED_PRODUCTION = "tarn.agreed_production"
STAGE_PROMOTION_ACTOR = "mlflow-registry-stage"
MAX_VERSION_TAGS = 8  # what a version page shows without scrolling past the useful ones


class VersionTag:
    """The readable tags on a model version: what a person scans on the versions list."""

    TASK = "tarn.task"  # binary | multiclass | regression
    TEST = "tarn.test"  # the headline test figure, e.g. "roc_auc 0.912"
    GATE = "tarn.gate"  # the last gate verdict: passed | refused | skipped (forced)
    DATA = "tarn.data"  # the snapshot digest (12 characters) and the training rows
    # the headline test figure per task: the first of these the version has
    HEADLINE = ("roc_auc", "accuracy", "rmse")


class RunTag:
    """Tags on MLflow runs (trials, monitoring runs), not on model versions."""

    STAGE = "tarn.stage"
    PARAMS_HASH = "tarn.params_hash"
    BEST_TRIAL = "tarn.best_trial"
    TRIAL = "tarn.trial"
    STATUS = "tarn.status"
    ERROR = "tarn.error"
    STOP_REASON = "tarn.stop_reason"  # why the search ended: max_evals | time budget
    REFERENCE_VERDICT = "tarn.reference_verdict"  # did the search beat the default models?
    STOPPED_EARLY = "tarn.stopped_early"  # a trial the stop rule ended, with the reason
    DECISION = "tarn.decision"
    PRODUCTION_VERSION = "tarn.production_version"
    NEW_BATCHES = "tarn.new_batches"


def _csv(values: tuple[str, ...] | list[str]) -> str:
    return ",".join(values)


def _uncsv(text: str | None) -> tuple[str, ...]:
    return tuple(x for x in (text or "").split(",") if x)


class _Record:
    """A dataclass stored as ``tarn.<field>`` tags; lists as comma-separated, bools as
    ``true``/``false``, dicts as JSON. Missing tags read as the field's default."""

    LISTS: ClassVar[frozenset[str]] = frozenset()
    INTS: ClassVar[frozenset[str]] = frozenset()
    BOOLS: ClassVar[frozenset[str]] = frozenset()
    JSONS: ClassVar[frozenset[str]] = frozenset()
    NAMES: ClassVar[dict[str, str]] = {}  # field -> tag name when it differs from the field
    # the one JSON tag holding the record on a version page ("" = one tag per field)
    TAG: ClassVar[str] = ""

    @classmethod
    def key(cls, name: str) -> str:
        return PREFIX + cls.NAMES.get(name, name)

    def as_json_dict(self) -> dict[str, Any]:
        """The record's set fields (empty ones left out), as the JSON tag holds them."""
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if v in ("", (), None, 0, False) and f.name not in self.BOOLS:
                continue
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def version_tags(self) -> dict[str, str]:
        """The record as a version carries it: one JSON tag (flat tags if it has no ``TAG``)."""
        if not self.TAG:
            return self.to_tags()
        return {self.TAG: json.dumps(self.as_json_dict(), default=float, sort_keys=True,
                                     separators=(",", ":"))}

    def to_tags(self) -> dict[str, str]:
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            v: Any = getattr(self, f.name)
            if f.name in self.LISTS:
                v = _csv(v)
            elif f.name in self.BOOLS:
                v = str(bool(v)).lower()
            elif f.name in self.JSONS:
                if v is None:
                    continue
                v = json.dumps(v, default=float)
            out[self.key(f.name)] = str(v)
        return out

    @classmethod
    def from_tags(cls, tags: dict[str, str]):
        """The record from a version's (or a run's) tags: the JSON tag when there is one, else
        the tag per field of versions registered before it."""
        if cls.TAG and cls.TAG in tags:
            try:
                doc = json.loads(tags[cls.TAG])
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                return cls._from_json(doc)
        kw: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            raw = tags.get(cls.key(f.name))
            if raw is None:
                continue
            if f.name in cls.LISTS:
                kw[f.name] = _uncsv(raw)
            elif f.name in cls.INTS:
                kw[f.name] = int(raw or 0)
            elif f.name in cls.BOOLS:
                kw[f.name] = raw == "true"
            elif f.name in cls.JSONS:
                kw[f.name] = json.loads(raw) if raw else None
            else:
                kw[f.name] = raw
        return cls(**kw)

    @classmethod
    def _from_json(cls, doc: dict[str, Any]):
        kw: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name not in doc:
                continue
            v = doc[f.name]
            if f.name in cls.LISTS:
                v = tuple(str(x) for x in (v or ()))
            elif f.name in cls.INTS:
                v = int(v or 0)
            elif f.name in cls.BOOLS:
                v = bool(v)
            kw[f.name] = v
        return cls(**kw)

    @classmethod
    def present(cls, tags: dict[str, str]) -> bool:
        """True if any of this record's tags is set on a version."""
        return (bool(cls.TAG) and cls.TAG in tags) or any(
            cls.key(f.name) in tags for f in fields(cls))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Lineage(_Record):
    """Where a version came from: code, data, configuration, parent. Every version has one."""

    kind: str = ""  # "full" | "incremental"
    git_commit: str = ""
    snapshot_hash: str = ""
    params_hash: str = ""
    schema_hash: str = ""
    train_rows: int = 0
    mitigation: str = ""
    # why the train stage registered the reweighed or the unmitigated model (validation check)
    mitigation_reason: str = ""
    batches: tuple[str, ...] = ()  # every lake batch the version's trees learned from
    tune_run_id: str = ""  # full: the search that chose its hyperparameters
    parent_version: str = ""  # incremental: the version it continued
    new_batches: tuple[str, ...] = ()  # incremental: the batches its new trees read
    new_data_hash: str = ""  # incremental: sha256 of the manifest of the files they read
    incremental_streak: int = 0  # incremental retrainings in a row up to this version
    test_batches: tuple[str, ...] = ()  # the batches its test figures were measured on

    LISTS: ClassVar[frozenset[str]] = frozenset({"batches", "new_batches", "test_batches"})
    INTS: ClassVar[frozenset[str]] = frozenset({"train_rows", "incremental_streak"})
    TAG: ClassVar[str] = "tarn_lineage"

    def data_tag(self) -> str:
        """The readable data digest: which snapshot (or new data), how many rows."""
        digest = (self.new_data_hash if self.kind == "incremental" else "") or self.snapshot_hash
        return f"{digest[:12]} ({self.train_rows:,} rows)"

    def to_tags(self) -> dict[str, str]:
        tags = super().to_tags()
        # a full version has no parent: leave those tags out rather than write empty ones
        for name in ("tune_run_id", "parent_version", "new_batches", "new_data_hash",
                     "incremental_streak", "test_batches"):
            if not getattr(self, name):
                tags.pop(self.key(name))
        if not self.mitigation_reason:  # not checked (incremental, or no reweighing)
            tags.pop(self.key("mitigation_reason"))
        return tags


@dataclass(frozen=True)
class PromotionRecord(_Record):
    """Who made a version production, when, why, and what it replaced."""

    promoted_by: str = ""
    promoted_at: str = ""
    reason: str = ""
    forced: bool = False
    previous_production: str = ""

    BOOLS: ClassVar[frozenset[str]] = frozenset({"forced"})
    NAMES: ClassVar[dict[str, str]] = {"reason": "promotion_reason",
                                       "forced": "promotion_forced"}
    TAG: ClassVar[str] = "tarn_promotion"


@dataclass(frozen=True)
class RetrainRecord(_Record):
    """Why a retrained version exists: its mode, whether the user forced it (``tarn retrain
    --mode``) or the monitor chose it, and the reason in words."""

    retrain_mode: str = ""  # "incremental" | "full"
    retrain_forced: bool = False
    retrain_reason: str = ""

    BOOLS: ClassVar[frozenset[str]] = frozenset({"retrain_forced"})
    # written once, just after registration, into the version's lineage (one tag fewer)
    TAG: ClassVar[str] = "tarn_lineage"


@dataclass(frozen=True)
class GateRecord(_Record):
    """The last gate verdict on a version, with the figures it was based on."""

    result: str = ""  # "passed" | "refused" | "skipped (forced)"
    figures: dict | None = None
    # a forced promotion skips the gates: ``result`` says so, and this says what the last
    # verdict that was run said (e.g. "passed"), so the two are never read as one
    measured: str = ""
    # the verdict that let the version into production, signed with the deployment key
    # (tarn.core.signing.Signature as a dict); kept by a rollback, dropped by a refusal
    signature: dict | None = None

    JSONS: ClassVar[frozenset[str]] = frozenset({"figures", "signature"})
    NAMES: ClassVar[dict[str, str]] = {"result": "last_gate_result",
                                       "figures": "last_gate_figures",
                                       "signature": "deploy_signature"}
    TAG: ClassVar[str] = "tarn_gates"
    SKIPPED: ClassVar[str] = "skipped (forced)"

    def version_tags(self) -> dict[str, str]:
        """The readable verdict (``tarn.gate``) beside the JSON record."""
        return {VersionTag.GATE: self.result, **super().version_tags()}

    @classmethod
    def from_tags(cls, tags: dict[str, str]):
        rec = super().from_tags(tags)
        if not rec.result and tags.get(VersionTag.GATE):
            return cls(tags[VersionTag.GATE], rec.figures, rec.measured, rec.signature)
        return rec


@dataclass(frozen=True)
class DeploymentRecord(_Record):
    """Where a version is deployed: one entry per deployment target (``backend``,
    ``bundle``, any registered one; see :mod:`tarn.core.targets`), each ``{"at", "where",
    "detail"}``, written by whoever deployed it there. ``deployed_at`` is the latest of them.
    Versions recorded by older code (one field per target) read into the same entries."""

    deployed_at: str = ""
    deployed_to: dict | None = None  # target name -> {"at": ..., "where": ..., "detail": ...}
    deployment_note: str = ""

    JSONS: ClassVar[frozenset[str]] = frozenset({"deployed_to"})
    TAG: ClassVar[str] = "tarn_deployment"
    # the singular fields of older versions: (target, what the field held)
    _LEGACY: ClassVar[dict[str, tuple[str, str]]] = {
        "deployed_backend": ("backend", "where"), "deployed_source": ("backend", "detail"),
        "deployed_bundle": ("bundle", "where")}

    def targets(self) -> dict[str, dict]:
        """target name -> its entry (empty when deployed nowhere)."""
        return {k: dict(v) for k, v in (self.deployed_to or {}).items() if isinstance(v, dict)}

    def with_target(self, target: str, at: str, where: str, detail: str = "",
                    note: str | None = None) -> DeploymentRecord:
        """This record with ``target``'s entry replaced (the others kept)."""
        entries = {**self.targets(), target: {k: v for k, v in (
            ("at", at), ("where", where), ("detail", detail)) if v}}
        return DeploymentRecord(max(self.deployed_at, at), entries,
                                self.deployment_note if note is None else note)

    def merged(self, newer: DeploymentRecord) -> DeploymentRecord:
        """``newer``'s entries over this record's (each target keeps its own last entry)."""
        return DeploymentRecord(max(self.deployed_at, newer.deployed_at),
                                {**self.targets(), **newer.targets()} or None,
                                newer.deployment_note or self.deployment_note)

    @classmethod
    def _legacy(cls, rec: DeploymentRecord, doc: dict) -> DeploymentRecord:
        entries = rec.targets()
        for name, (target, what) in cls._LEGACY.items():
            if doc.get(name):
                entries.setdefault(target, {"at": rec.deployed_at})[what] = str(doc[name])
        return DeploymentRecord(rec.deployed_at, entries or None, rec.deployment_note)

    @classmethod
    def _from_json(cls, doc: dict[str, Any]):
        return cls._legacy(super()._from_json(doc), doc)

    @classmethod
    def from_tags(cls, tags: dict[str, str]):
        rec = super().from_tags(tags)
        if cls.TAG in tags:
            return rec
        return cls._legacy(rec, {name: tags.get(PREFIX + name) for name in cls._LEGACY})

    def to_tags(self) -> dict[str, str]:
        return {k: v for k, v in super().to_tags().items() if v}


# the start of a refusal for want of a valid signature (the version's files are fine; signing
# it, by promoting it, lifts the refusal)
UNSIGNED_REFUSAL = "no valid deployment signature"


@dataclass(frozen=True)
class LoadRefusal(_Record):
    """Why tarn refused to load a version: its files could run code (never loaded), or it
    has no valid deployment signature (lifted when `tarn promote` signs it)."""

    load_refused: str = ""

    @property
    def unsigned(self) -> bool:
        return UNSIGNED_REFUSAL in self.load_refused
