"""The client bundle as a deployment target: what ``current.json`` names (read light, see
:mod:`tarn.edge.pointer`), published by ``tarn bundle publish`` or by the server when it
deploys (its leader exports, proves parity and points clients after it serves the version).

The export stack (scikit-learn, ONNX, MLflow) is imported only inside :meth:`publish_bundle`,
so ``tarn status`` reads the pointer without it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tarn.core.progress import no_steps
from tarn.core.targets import Generated, Holding, Site
from tarn.edge.pointer import current_bundle, current_version
from tarn.errors import TarnError


@dataclass(frozen=True)
class BundleTarget:
    """The ONNX bundle browsers and edge devices get (``edge.bundle_dir``)."""

    site: Site
    name: str = "bundle"

    @property
    def out_root(self) -> Path:
        return self.site.root / self.site.params.edge.bundle_dir

    def holds(self) -> Holding:
        try:
            folder = current_bundle(self.out_root)
        except TarnError as e:
            return Holding(self.name, str(self.out_root), None, reachable=False,
                           problem=e.message)
        return Holding(self.name, str(folder or self.out_root),
                       current_version(self.out_root) if folder else None)

    def stale(self, production: str, held: Holding) -> str:
        if held.version == production:
            return ""
        return (f"client bundle holds version {held.version or 'none'}, production is "
                f"{production}: run `tarn bundle publish` (a running server also publishes it "
                "when it deploys)")

    def publish(self, version: str, step: Callable[[str], None]) -> str:
        b = self.publish_bundle(version, step)
        return (f"published {b.path} (parity: max |diff| {b.parity.max_abs_diff:.2g} on "
                f"{b.parity.rows:,} rows)")

    def follow(self, version: str) -> str:
        return ""  # the server publishes it when it deploys; `tarn status` says when stale

    def generated(self) -> list[Generated]:
        return [Generated(self.out_root, "published client bundles")]

    def publish_bundle(self, version: str | None = None, step=no_steps):
        """Load ``version`` (default: production) only if it carries a valid deployment
        signature, export it to ONNX, prove parity on the test split, point clients at it and
        record the deployment. Returns the :class:`tarn.edge.export.Bundle`."""
        from tarn.core.catalog import load_split
        from tarn.core.features import to_model_frame
        from tarn.core.model import served_contract
        from tarn.core.registry import Registry, RegistryError
        from tarn.core.signing import project_key
        from tarn.core.tags import DeploymentRecord
        from tarn.edge import export as edge

        params, root = self.site.params, self.site.root
        reg = Registry(params.mlflow, root, params.promote.alias)
        version = version or reg.production_intent()
        if version is None:
            raise RegistryError("nothing is in production", "promote a version first")
        mv = reg.version(version)
        step(f"loading version {version} (its deployment signature checked first)")
        key = self.site.key or project_key(params, root)
        pipe, card = reg.load_with_card(version, key=key)  # the version's own task, contract
        served = served_contract(card, params.schema, params.prepare, params.train.threshold)
        step("reading the test split")
        frame = load_split(params, root, "test").frame  # parity is proven on held-out rows
        step(f"exporting version {version} to ONNX and checking parity on {len(frame):,} "
             "test rows")
        bundle = edge.publish_bundle(
            pipe, name=reg.name, version=version, tags=dict(mv.tags),
            metrics=reg.run_metrics(version, mv),
            X_holdout=to_model_frame(frame, served.schema, served.prepare),
            schema_cfg=served.schema, prepare_cfg=served.prepare, task=served.task,
            edge_cfg=params.edge, out_root=self.out_root)
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        reg.record_deployment(version, DeploymentRecord().with_target(
            self.name, now, str(bundle.path), "tarn bundle publish"))
        return bundle
