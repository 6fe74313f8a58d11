"""Every call to the MLflow model registry: resolve versions, gate, promote, roll back.

The ``production`` alias is the source of truth; the legacy stage ``Production`` follows it
(previous one archived) because the MLflow UI and many users still look at stages. Promotion
holds a file lock, so two promotions on this machine cannot interleave, and ends by checking
that alias and stage agree.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tarn.config import Params
from tarn.errors import TarnError, first_line


class RegistryError(TarnError):
    """The registry refuses, or a version does not exist."""


class PromotionRefused(TarnError):
    """A candidate failed its gates; ``gates`` holds the figures."""

    def __init__(self, message: str, hint: str, gates: Gates) -> None:
        super().__init__(message, hint)
        self.gates = gates


@dataclass
class Gates:
    candidate: str
    champion: str | None
    metric: str
    candidate_metric: float
    champion_metric: float | None
    tolerance: float
    fairness_feature: str
    candidate_dpd: float
    max_dpd: float
    schema_compatible: bool
    schema_problems: list[str] = field(default_factory=list)

    @property
    def metric_ok(self) -> bool:
        if self.champion_metric is None:
            return True
        if self.metric == "logloss":
            return self.candidate_metric <= self.champion_metric + self.tolerance
        return self.candidate_metric >= self.champion_metric - self.tolerance

    @property
    def fairness_ok(self) -> bool:
        return self.candidate_dpd <= self.max_dpd

    @property
    def passed(self) -> bool:
        return self.metric_ok and self.fairness_ok and self.schema_compatible

    def failures(self) -> list[str]:
        out = []
        if not self.metric_ok:
            out.append(f"{self.metric} {self.candidate_metric:.4f} vs champion "
                       f"{self.champion_metric:.4f} (tolerance {self.tolerance})")
        if not self.fairness_ok:
            out.append(f"demographic parity difference on {self.fairness_feature} "
                       f"{self.candidate_dpd:.4f} > {self.max_dpd}")
        if not self.schema_compatible:
            out.append("input schema incompatible: " + "; ".join(self.schema_problems))
        return out


@dataclass(frozen=True)
class Promotion:
    version: str
    previous: str | None
    gates: Gates | None
    forced: bool


class Registry:
    """The registered model named in params, in the tracking store named in params."""

    def __init__(self, params: Params, root: Path) -> None:
        import mlflow

        from tarn.tracking import connect

        self.params = params
        self.root = root
        self.tracking = connect(params.mlflow, root)
        self.name = params.mlflow.registered_model
        self.alias = params.promote.alias
        self.client = mlflow.MlflowClient(self.tracking.uri)

    # ------------------------------------------------------------------ reading
    def version(self, version: str):
        try:
            return self.client.get_model_version(self.name, str(version))
        except Exception as e:  # noqa: BLE001 - MLflow raises RestException / MlflowException
            raise RegistryError(f"{self.name} version {version} not found ({first_line(e)})",
                                "see the versions with `tarn status`") from e

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

    # ------------------------------------------------------------------ gates
    def evaluate_gates(self, candidate: str, champion: str | None) -> Gates:
        """Score candidate and champion on the same held-out rows (the prepared test split)."""
        from tarn.evaluate import fairness
        from tarn.prepare import load_split

        cfg = self.params.promote
        test = load_split(self.params, self.root, "test")
        problems = self.schema_problems(candidate, champion) if champion else []

        def score(version: str) -> tuple[float, np.ndarray]:
            proba = self.predict_proba(version, test.X)
            return _metric(cfg.metric, test.y, proba), proba

        cand_metric, cand_proba = score(candidate)
        champ_metric = score(champion)[0] if champion and not problems else None
        pred = (cand_proba >= cfg.threshold).astype(int)
        dpd = fairness(test.y, pred, test.frame, [cfg.fairness_feature])[
            cfg.fairness_feature]["demographic_parity_difference"]
        return Gates(candidate, champion, cfg.metric, cand_metric, champ_metric, cfg.tolerance,
                     cfg.fairness_feature, dpd, cfg.max_demographic_parity_difference,
                     not problems, problems)

    def predict_proba(self, version: str, X) -> np.ndarray:
        import mlflow

        model = mlflow.pyfunc.load_model(f"models:/{self.name}/{version}")
        return np.asarray(model.predict(X))[:, 1]

    def schema_problems(self, candidate: str, champion: str) -> list[str]:
        """Why the candidate cannot take the champion's requests (empty = compatible)."""
        cand, champ = self.input_schema(candidate), self.input_schema(champion)
        problems = []
        for col, (kind, _required) in champ.items():
            if col not in cand:
                problems.append(f"column {col!r} missing")
            elif cand[col][0] != kind:
                problems.append(f"column {col!r} is {cand[col][0]}, was {kind}")
        for col, (_, required) in cand.items():
            if col not in champ and required:
                problems.append(f"new required column {col!r}")
        return problems

    def input_schema(self, version: str) -> dict[str, tuple[str, bool]]:
        from mlflow.models import get_model_info

        info = get_model_info(f"models:/{self.name}/{version}")
        if info.signature is None:
            return {}
        return {c.name: (c.type.name, c.required) for c in info.signature.inputs.inputs}

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        path = (self.root / self.params.mlflow.store_dir).resolve() / "promote.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def promote(self, version: str, *, force: bool = False, reason: str = "",
                actor: str | None = None) -> Promotion:
        """Gate, then point the alias (and the stage) at ``version``; record who/when/why."""
        if force and not reason:
            raise RegistryError("--force needs --reason", "say why the gates are skipped")
        self.version(version)  # exists?
        with self._lock():
            previous = self.production()
            gates = None if force else self.evaluate_gates(version, previous if previous
                                                          != version else None)
            if gates is not None and not gates.passed:
                self._tag(version, {"tarn.last_gate_result": "refused",
                                    "tarn.last_gate_figures": json.dumps(asdict(gates))})
                raise PromotionRefused(
                    f"version {version} refused: " + "; ".join(gates.failures()),
                    "improve the model, or `tarn promote --force --reason ...`", gates)
            self._set_production(version)
            self._tag(version, {
                "tarn.promoted_by": actor or getpass.getuser(),
                "tarn.promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "tarn.promotion_reason": reason or "passed gates",
                "tarn.promotion_forced": str(force).lower(),
                "tarn.previous_production": previous or "",
                **({"tarn.last_gate_result": "passed",
                    "tarn.last_gate_figures": json.dumps(asdict(gates))} if gates else {}),
            })
            self.check_consistent()
        return Promotion(version, previous, gates, force)

    def rollback(self, reason: str = "", actor: str | None = None) -> Promotion:
        """Put back the version that was production before the current one."""
        current = self.production()
        if current is None:
            raise RegistryError("nothing is in production", "promote a version first")
        previous = self.version(current).tags.get("tarn.previous_production")
        if not previous:
            raise RegistryError(f"version {current} has no previous production version",
                                "promote a specific version with `tarn promote --version N`")
        return self.promote(previous, force=True, actor=actor,
                            reason=reason or f"rollback from version {current}")

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

    def sync_stage(self) -> None:
        """Make the stage follow the alias (repairs an alias set by hand in the UI)."""
        current = self.production()
        if current is not None and self.stage_versions() != [current]:
            with self._lock():
                current = self.production()  # read again: a promotion may have just finished
                if current is not None and self.stage_versions() != [current]:
                    self._set_production(current)

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


def _metric(name: str, y: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import log_loss, roc_auc_score

    return float(log_loss(y, proba, labels=[0, 1]) if name == "logloss"
                 else roc_auc_score(y, proba))

