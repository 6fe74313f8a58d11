"""Alias and stage kept in agreement, and promotions that move them.

The ``production`` alias is the source of truth; the legacy stage ``Production`` follows it
(the previous one archived) because the MLflow UI and many users still look at stages.
Whether a version *may* be promoted is decided elsewhere (``tarn.lifecycle.gates``); this
applies the verdict. Before the alias moves, the lock is re-checked and the production
version compared with the one read at the start (compare-and-set): if someone moved it
meanwhile, the promotion stops instead of recording a wrong ``previous_production``."""

from __future__ import annotations

import getpass
import warnings
from collections.abc import Callable
from datetime import UTC, datetime

from tarn.core.registry.common import Promotion, PromotionRefused, RegistryError, Verdict
from tarn.core.registry.lock import PromotionLock
from tarn.core.registry.register import Registration
from tarn.core.signing import FORCED, PASSED, DeployKey, sign
from tarn.core.tags import (
    AGREED_PRODUCTION,
    STAGE_PROMOTION_ACTOR,
    GateRecord,
    LoadRefusal,
    PromotionRecord,
)


class Sync(Registration, PromotionLock):
    """Promote, roll back, and make alias and stage agree (under the promotion lock)."""

    def promote(self, version: str, judge: Callable[[str, str | None], Verdict] | None, *,
                reason: str = "", actor: str | None = None,
                key: DeployKey | None = None) -> Promotion:
        """Point the alias (and the stage) at ``version`` if ``judge(version, champion)``
        passes (``judge=None`` skips the gates: a forced promotion); record who/when/why.
        With ``key``, the verdict (passed, or forced with the reason) is signed on the
        version before the alias moves: what servers deploy (:mod:`tarn.core.signing`)."""
        if judge is None and not reason:
            raise RegistryError("--force needs --reason", "say why the gates are skipped")
        self.version(version)  # exists?
        with self._lock() as owner:
            return self._promote_locked(owner, version, judge, reason, actor, key)

    def rollback(self, reason: str = "", actor: str | None = None) -> Promotion:
        """Put back the version the current one replaced: read and moved under one lock."""
        with self._lock() as owner:
            current, previous = self.previous_production()
            return self._promote_locked(owner, previous, None,
                                        reason or f"rollback from version {current}", actor)

    def _promote_locked(self, owner: str, version: str,
                        judge: Callable[[str, str | None], Verdict] | None, reason: str,
                        actor: str | None, key: DeployKey | None = None) -> Promotion:
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
        # the verdict, signed before the alias moves (a server reacting to the alias finds
        # it); without a key (a rollback, a stage moved by hand) the last signature stays:
        # a rollback re-uses the one its version got when it was promoted
        last = self.gate_record(version)
        if verdict is not None:
            gate = GateRecord("passed", verdict.as_dict(), signature=self._signed(
                version, key, PASSED, reason or "passed gates", actor) if key else None)
        else:  # the gates did not run: say so, beside what they said when they last did
            gate = GateRecord(GateRecord.SKIPPED, last.figures, last.measured if (
                last.result == GateRecord.SKIPPED) else last.result, self._signed(
                version, key, FORCED, reason, actor) if key else last.signature)
        self._tag(version, gate.version_tags())
        if key is not None:
            self._lift_unsigned_refusal(version)
        self._set_production(version)
        record = PromotionRecord(
            promoted_by=actor or getpass.getuser(),
            promoted_at=datetime.now(UTC).isoformat(timespec="seconds"),
            reason=reason or "passed gates", forced=forced,
            previous_production=previous or "")
        self._tag(version, record.version_tags())
        self.check_consistent()
        return Promotion(version, previous, verdict, forced)

    def _signed(self, version: str, key: DeployKey, verdict: str, reason: str,
                actor: str | None) -> dict:
        """The signature of ``verdict`` on the version's model files and card."""
        digest, card = self.artifacts(version)  # known from the gates' download, if any
        return sign(key, name=self.name, version=str(version), digest=digest, card=card,
                    verdict=verdict, reason=reason, signed_by=actor or getpass.getuser(),
                    signed_at=datetime.now(UTC).isoformat(timespec="seconds")).as_dict()

    def _lift_unsigned_refusal(self, version: str) -> None:
        """A refusal for want of a signature ends once the version is signed (a refusal of
        its files stays: those never change)."""
        tags = dict(self.version(version).tags)
        if LoadRefusal.from_tags(tags).unsigned:
            for name in LoadRefusal().to_tags():
                self.client.delete_model_version_tag(self.name, version, name)

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
