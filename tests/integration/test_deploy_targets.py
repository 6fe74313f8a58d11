"""The deployment seam, on a real SQLite registry: a toy target defined here, registered with
one line, is picked up by promotion (it follows and its deployment is recorded on the
version), `tarn status` (what it holds, a stale warning with its fix) and `tarn reset` (what
it wrote); and only signed versions deploy: `tarn bundle publish` refuses a version moved to
production by hand, `tarn status` says how to fix it, a rollback re-uses the signature its
version got when it was promoted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tarn.core.registry import Registry
from tarn.core.signing import UnsignedVersion, project_key
from tarn.core.tags import DeploymentRecord
from tarn.core.targets import Generated, Holding, Site
from tarn.lifecycle import targets as registered
from tarn.lifecycle.promote import promote, rollback
from tarn.lifecycle.publish import publish
from tarn.lifecycle.reset import generated_state
from tarn.lifecycle.status import status
from tests.support.project import make_version, tracked_project
from tests.support.signing import sign_by_hand

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class ToyTarget:
    """A folder holding the production version's number: a stand-in for a container image or
    a serving platform's manifest. It deploys on promotion, itself."""

    site: Site
    name: str = "toy"

    @property
    def folder(self):
        return self.site.root / "toy"

    def holds(self) -> Holding:
        f = self.folder / "version.txt"
        return Holding(self.name, str(self.folder), f.read_text() if f.exists() else None,
                       "manifest")

    def stale(self, production: str, held: Holding) -> str:
        return "" if held.version == production else (
            f"toy holds {held.version or 'nothing'}, production is {production}: run "
            "`toy deploy`")

    def publish(self, version: str, step: Callable[[str], None]) -> str:
        self.folder.mkdir(exist_ok=True)
        (self.folder / "version.txt").write_text(version)
        return f"toy now holds {version}"

    def follow(self, version: str) -> str:
        return self.publish(version, print)

    def generated(self) -> list[Generated]:
        return [Generated(self.folder, "toy manifests")]


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setitem(registered.TARGETS, "toy", ToyTarget)  # the one registration line
    params = tracked_project(tmp_path, **{"serve.notify_url": "", "serve.port": 1,
                                          "promote.max_demographic_parity_difference": 0.9,
                                          "promote.tolerance": 0.5})
    return params, tmp_path


def test_a_toy_target_is_followed_reported_and_reset(project):
    params, root = project
    v1, v2 = make_version(params, root), make_version(params, root, rounds=31)
    site = Site(params, root)
    promote(params, root, v1)
    lines = registered.follow(site, v1)
    assert f"toy now holds {v1}" in lines
    assert any("not notified" in line for line in lines)  # the backend: no admin secret
    reg = Registry(params.mlflow, root)
    entry = DeploymentRecord.from_tags(dict(reg.version(v1).tags)).targets()["toy"]
    assert entry["where"] == str(root / "toy") and entry["detail"] == "manifest"

    s = status(params, root)
    assert [h.target for h in s.targets] == ["backend", "bundle", "toy"]
    assert s.target("toy").version == v1 and not s.target("backend").reachable
    assert not [w for w in s.warnings if w.startswith("toy")]
    assert any("client bundle holds version none" in w for w in s.warnings)

    promote(params, root, v2)  # production moves; the toy is not told
    s = status(params, root)
    [warning] = [w for w in s.warnings if w.startswith("toy")]
    assert f"toy holds {v1}, production is {v2}" in warning and "`toy deploy`" in warning

    wiped = {t.path: t.what for t in generated_state(params, root)}
    assert wiped[root / "toy"] == "toy manifests"
    assert project_key(params, root).path not in wiped  # the key outlives a reset


def test_only_signed_versions_deploy_and_a_rollback_keeps_its_signature(project):
    params, root = project
    v1, v2 = make_version(params, root), make_version(params, root, rounds=31)
    promote(params, root, v1)
    reg = Registry(params.mlflow, root)
    key = project_key(params, root)
    signed = reg.gate_record(v1).signature
    assert signed["verdict"] == "passed" and signed["key_id"] == key.key_id
    reg.load_with_card(v1, key=key)  # valid: loads

    reg.client.set_registered_model_alias("tarn-test", "production", v2)  # by hand
    with pytest.raises(UnsignedVersion, match="no valid deployment signature") as e:
        publish(params, root, key=key)
    assert f"tarn promote --version {v2}" in e.value.hint
    assert "no valid deployment signature" in reg.refusal(v2)  # recorded on the version
    assert not (root / params.edge.bundle_dir / "current.json").exists()
    s = status(params, root)
    [warning] = [w for w in s.warnings if "no server or bundle deploys" in w]
    assert f"version {v2}" in warning and f"`tarn promote --version {v2}`" in warning
    assert next(r for r in s.versions if r.version == v2).refused

    # the fix: a signed version back (by hand too), then promote signs v2 and lifts the refusal
    reg.client.set_registered_model_alias("tarn-test", "production", v1)
    promote(params, root, v2, force=True, reason="hotfix after review")
    sig = reg.gate_record(v2).signature
    assert sig["verdict"] == "forced" and sig["reason"] == "hotfix after review"
    assert reg.refusal(v2) == ""
    reg.load_with_card(v2, key=key)

    back = rollback(params, root)
    assert back.version == v1 and reg.gate_record(v1).signature == signed  # re-used
    bundle = publish(params, root, key=key)  # production v1 again: signed, published
    assert bundle.path.name == f"tarn-test-v{v1}"
    entry = DeploymentRecord.from_tags(dict(reg.version(v1).tags)).targets()["bundle"]
    assert entry["where"] == str(bundle.path)

    # a signature copied onto another version does not verify there
    sign_by_hand(params, root, v2)
    tags = dict(reg.version(v1).tags)
    reg.client.set_model_version_tag("tarn-test", v2, "tarn_gates", tags["tarn_gates"])
    with pytest.raises(UnsignedVersion, match="does not match|files changed"):
        reg.load_with_card(v2, key=key)
