"""Reading the registry through the MLflow client: versions, aliases, the production
version, the stage, a version's records and its run's metrics."""

from __future__ import annotations

from tarn.core.registry.common import Connection, RegistryError
from tarn.core.tags import (
    DeploymentRecord,
    GateRecord,
    Lineage,
    LoadRefusal,
    PromotionRecord,
    RetrainRecord,
)
from tarn.errors import first_line


class Reads(Connection):
    """Read-only calls (the light view, :mod:`tarn.core.registry.view`, answers the same
    questions without MLflow; a differential test keeps the two in step)."""

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

    def gate_record(self, version: str) -> GateRecord:
        return GateRecord.from_tags(dict(self.version(version).tags))

    def refusal(self, version: str) -> str:
        """Why tarn's loader refused ``version`` ('' if it never did): recorded on the
        version the first time anything tried to load it."""
        return LoadRefusal.from_tags(dict(self.version(version).tags)).load_refused

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

    def registered_model_tags(self) -> dict[str, str]:
        """The tags on the registered model itself (the lock, the agreed production)."""
        return dict(self.client.get_registered_model(self.name).tags)
