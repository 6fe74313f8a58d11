"""Publish the client bundle for the production version without a server (a server publishes
it itself when it deploys): load (trusted), export to ONNX, prove parity, point clients."""

from __future__ import annotations

from pathlib import Path

from tarn.config import Params
from tarn.core.catalog import load_split
from tarn.core.features import to_model_frame
from tarn.core.model import served_contract
from tarn.core.progress import Step, no_steps
from tarn.core.registry import Registry, RegistryError
from tarn.edge import export as edge


def publish(params: Params, root: Path, version: str | None = None,
            step: Step = no_steps) -> edge.Bundle:
    """The bundle of ``version`` (default: production), published and made current."""
    reg = Registry(params.mlflow, root, params.promote.alias)
    version = version or reg.production_intent()
    if version is None:
        raise RegistryError("nothing is in production", "promote a version first")
    mv = reg.version(version)
    step(f"loading version {version}")
    pipe, card = reg.load_with_card(version)  # the version's own task and contract
    served = served_contract(card, params.schema, params.prepare, params.train.threshold)
    step("reading the test split")
    frame = load_split(params, root, "test").frame  # parity is proven on held-out rows
    step(f"exporting version {version} to ONNX and checking parity on {len(frame):,} test rows")
    return edge.publish_bundle(
        pipe, name=reg.name, version=version, tags=dict(mv.tags),
        metrics=reg.run_metrics(version, mv),
        X_holdout=to_model_frame(frame, served.schema, served.prepare),
        schema_cfg=served.schema, prepare_cfg=served.prepare, task=served.task,
        edge_cfg=params.edge, out_root=root / params.edge.bundle_dir)
