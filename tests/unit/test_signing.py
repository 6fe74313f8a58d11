"""Signed gate verdicts (tarn.core.signing): the key file is private and made once, a
signature holds only for the files, card, version and verdict it was made over, and the
deployment record keeps one entry per target (older singular records read into it)."""

from __future__ import annotations

import json
import os
import threading

import pytest

from tarn.core.signing import (
    FORCED,
    PASSED,
    artifact_digest,
    check,
    key_path,
    load_key,
    sign,
)
from tarn.core.tags import DeploymentRecord, GateRecord, LoadRefusal
from tarn.errors import TarnError
from tests.support.perms import mode

CARD = {"task": "binary", "classes": ["<=50K", ">50K"], "threshold": 0.4}


def _model(folder):
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "MLmodel").write_text("flavors: {}\n")
    (folder / "model" / "model.skops").write_bytes(b"\x00skops bytes")
    return folder / "model"


def _signed(key, digest, verdict=PASSED, reason="passed gates", version="3"):
    return sign(key, name="m", version=version, digest=digest, card=CARD, verdict=verdict,
                reason=reason, signed_by="ann", signed_at="2026-12-06T05:00:00+00:00")


def test_the_key_is_created_once_owner_only_and_refused_when_others_can_read_it(tmp_path):
    path = key_path(tmp_path, ".tarn/deploy.key")
    assert path == tmp_path / ".tarn" / "deploy.key"
    keys = []
    threads = [threading.Thread(target=lambda: keys.append(load_key(path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({k.secret for k in keys}) == 1 and len(keys[0].secret) == 32  # one key
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert not [p for p in path.parent.iterdir() if p != path]  # no temp file left
    assert keys[0].secret.hex() not in repr(keys[0])
    os.chmod(path, 0o640)
    with pytest.raises(TarnError, match="readable by others") as e:
        load_key(path)
    assert "chmod 600" in e.value.hint
    with pytest.raises(TarnError, match="no deployment key"):
        load_key(tmp_path / "absent.key", create=False)
    bad = tmp_path / "bad.key"
    bad.write_text("abcd\n")
    os.chmod(bad, 0o600)
    with pytest.raises(TarnError, match="hex-encoded"):
        load_key(bad)


def test_a_signature_holds_only_for_what_it_was_made_over(tmp_path):
    key = load_key(tmp_path / "k")
    folder = _model(tmp_path / "a")
    digest = artifact_digest(folder)
    sig = _signed(key, digest).as_dict()
    assert check(key, sig, name="m", version="3", digest=digest, card=CARD) == ""
    assert "no deployment signature" in check(key, None, name="m", version="3",
                                              digest=digest, card=CARD)
    # a model file changed after signing: another digest
    (folder / "model.skops").write_bytes(b"\x00other bytes")
    changed = artifact_digest(folder)
    assert changed != digest
    assert "files changed" in check(key, sig, name="m", version="3", digest=changed, card=CARD)
    # the same signature copied onto another version, or over another card
    assert "does not match" in check(key, sig, name="m", version="4", digest=digest, card=CARD)
    assert "does not match" in check(key, sig, name="m", version="3", digest=digest,
                                     card={**CARD, "threshold": 0.1})
    # a forced verdict's reason is inside the payload: editing it breaks the signature
    forced = _signed(key, digest, FORCED, "hotfix").as_dict()
    assert check(key, forced, name="m", version="3", digest=digest, card=CARD) == ""
    tampered = {**forced, "reason": "passed gates", "verdict": PASSED}
    assert "does not match" in check(key, tampered, name="m", version="3", digest=digest,
                                     card=CARD)
    # anyone with registry write access can write a signature tag, but not with this key
    other = load_key(tmp_path / "other")
    forged = _signed(other, digest).as_dict()
    assert "another deployment key" in check(key, forged, name="m", version="3",
                                             digest=digest, card=CARD)
    # ... nor by claiming this key's id
    assert "does not match" in check(key, {**forged, "key_id": key.key_id}, name="m",
                                     version="3", digest=digest, card=CARD)
    with pytest.raises(ValueError, match="verdict"):
        _signed(key, digest, "refused")


def test_an_added_file_changes_the_digest(tmp_path):
    folder = _model(tmp_path / "a")
    before = artifact_digest(folder)
    (folder / "extra.py").write_text("import os\n")
    assert artifact_digest(folder) != before


def test_the_signature_rides_in_the_gate_record_and_a_refusal_says_if_signing_lifts_it():
    sig = {"verdict": "passed", "hmac": "ab"}
    rec = GateRecord("passed", {"a": 1}, "", sig)
    assert GateRecord.from_tags(rec.version_tags()).signature == sig
    assert GateRecord.from_tags(rec.to_tags()).signature == sig
    assert GateRecord("refused", {"a": 1}).signature is None  # a refusal drops it
    assert LoadRefusal("m version 2 refused: no valid deployment signature: none").unsigned
    assert not LoadRefusal("m version 2 refused: not skops").unsigned


def test_the_deployment_record_has_one_entry_per_target():
    rec = (DeploymentRecord().with_target("backend", "t1", "http://h:8000", "onnx")
           .with_target("bundle", "t1", "/p/bundles/m-v3"))
    later = DeploymentRecord().with_target("toy", "t2", "/p/toy")
    both = rec.merged(later)
    assert set(both.targets()) == {"backend", "bundle", "toy"} and both.deployed_at == "t2"
    assert DeploymentRecord.from_tags(both.version_tags()) == both
    assert DeploymentRecord.from_tags(both.to_tags()) == both
    # older versions: one field per target, in the JSON tag or flat tags
    old = {"deployed_at": "t0", "deployed_backend": "http://h", "deployed_source": "python",
           "deployed_bundle": "/b", "deployment_note": "gates were skipped"}
    for tags in ({"tarn_deployment": json.dumps(old)},
                 {f"tarn.{k}": v for k, v in old.items()}):
        read = DeploymentRecord.from_tags(tags)
        assert read.targets() == {"backend": {"at": "t0", "where": "http://h",
                                              "detail": "python"},
                                  "bundle": {"at": "t0", "where": "/b"}}
        assert read.deployment_note == "gates were skipped"
