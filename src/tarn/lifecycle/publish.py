"""Publish the client bundle for the production version without a server (a server publishes
it itself when it deploys): the bundle target's publish (:mod:`tarn.edge.target`): check the
deployment signature, load (trusted), export to ONNX, prove parity, point clients."""

from __future__ import annotations

from pathlib import Path

from tarn.config import Params
from tarn.core.progress import Step, no_steps
from tarn.core.signing import DeployKey
from tarn.core.targets import Site
from tarn.edge.target import BundleTarget


def publish(params: Params, root: Path, version: str | None = None,
            step: Step = no_steps, key: DeployKey | None = None):
    """The bundle of ``version`` (default: production), published and made current; only a
    version signed with ``key`` (default: the project's deployment key)."""
    return BundleTarget(Site(params, root, key=key)).publish_bundle(version, step)
