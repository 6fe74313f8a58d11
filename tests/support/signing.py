"""Sign a version as `tarn promote` does (the project's deployment key, a forced verdict with
its reason), without moving the alias: for tests that then move production by hand and expect
a deployment."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from pathlib import Path

from tarn.config import Params
from tarn.core.registry import Registry
from tarn.core.signing import FORCED, project_key, sign
from tarn.core.tags import GateRecord


def sign_by_hand(params: Params, root: Path, version: str,
                 reason: str = "signed by a test") -> dict:
    """Write ``version``'s deployment signature (what promote writes before the alias moves)
    and return it; the alias and stage are left alone."""
    reg = Registry(params.mlflow, root, params.promote.alias)
    digest, card = reg.artifacts(version)
    sig = sign(project_key(params, root), name=reg.name, version=str(version), digest=digest,
               card=card, verdict=FORCED, reason=reason, signed_by=getpass.getuser(),
               signed_at=datetime.now(UTC).isoformat(timespec="seconds")).as_dict()
    last = reg.gate_record(version)
    tags = GateRecord(last.result or GateRecord.SKIPPED, last.figures, last.measured,
                      sig).version_tags()
    for k, v in tags.items():
        reg.client.set_model_version_tag(reg.name, str(version), k, v)
    return sig
