"""Every ``tarn.*`` tag, defined once: written and parsed here and nowhere else.

Model-version tags are typed records (:class:`Lineage`, :class:`PromotionRecord`,
:class:`GateRecord`, :class:`DeploymentRecord`) so a reader gets ints and lists, not strings
parsed two different ways. Run tags (on MLflow runs, not versions) are the constants in
:class:`RunTag`.
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

    @classmethod
    def key(cls, name: str) -> str:
        return PREFIX + cls.NAMES.get(name, name)

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
    def present(cls, tags: dict[str, str]) -> bool:
        """True if any of this record's tags is set on a version."""
        return any(cls.key(f.name) in tags for f in fields(cls))  # type: ignore[arg-type]


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


@dataclass(frozen=True)
class RetrainRecord(_Record):
    """Why a retrained version exists: its mode, whether the user forced it (``tarn retrain
    --mode``) or the monitor chose it, and the reason in words."""

    retrain_mode: str = ""  # "incremental" | "full"
    retrain_forced: bool = False
    retrain_reason: str = ""

    BOOLS: ClassVar[frozenset[str]] = frozenset({"retrain_forced"})


@dataclass(frozen=True)
class GateRecord(_Record):
    """The last gate verdict on a version, with the figures it was based on."""

    result: str = ""  # "passed" | "refused"
    figures: dict | None = None

    JSONS: ClassVar[frozenset[str]] = frozenset({"figures"})
    NAMES: ClassVar[dict[str, str]] = {"result": "last_gate_result",
                                       "figures": "last_gate_figures"}


@dataclass(frozen=True)
class DeploymentRecord(_Record):
    """Where a version is deployed (written by the server when it swaps to it)."""

    deployed_at: str = ""
    deployed_backend: str = ""
    deployed_source: str = ""
    deployed_bundle: str = ""
    deployment_note: str = ""

    def to_tags(self) -> dict[str, str]:
        return {k: v for k, v in super().to_tags().items() if v}


@dataclass(frozen=True)
class LoadRefusal(_Record):
    """Why tarn refused to load a version (its files could run code); never loaded."""

    load_refused: str = ""
