import hashlib
import json

import pytest

from tarn.errors import LakeError
from tarn.stages import snapshot
from tests.support.project import write_params


def test_manifest_records_exact_bytes(lake_project):
    params, root = lake_project
    res = snapshot.run(params, root)
    m = json.loads((root / "data" / "snapshot" / "manifest.json").read_text())
    assert [b["name"] for b in m["batches"]] == ["0001-adult-train", "0002-adult-train",
                                                 "0003-adult-test"]
    assert [b["rows"] for b in m["batches"]] == [400, 400, 200]
    for e in m["files"]:
        frozen = root / "data" / "snapshot" / e["path"]
        lake_file = root / "data" / "lake" / e["path"].removeprefix("files/")
        assert frozen.read_bytes() == lake_file.read_bytes()
        assert e["sha256"] == hashlib.sha256(frozen.read_bytes()).hexdigest()
        assert e["size"] == frozen.stat().st_size
    assert res.manifest_hash == m["hash"] and res.n_rows == 1000


def test_unchanged_lake_gives_identical_snapshot(lake_project):
    params, root = lake_project
    first = snapshot.run(params, root)
    before = (root / "data" / "snapshot" / "manifest.json").read_bytes()
    again = snapshot.run(params, root)
    assert again.manifest_hash == first.manifest_hash
    assert (root / "data" / "snapshot" / "manifest.json").read_bytes() == before


def test_changed_byte_changes_the_hash(lake_project):
    params, root = lake_project
    first = snapshot.run(params, root)
    f = root / "data" / "lake" / "0003-adult-test" / "adult.csv"
    f.write_text(f.read_text().replace("<=50K.", "<=50K", 1))
    assert snapshot.run(params, root).manifest_hash != first.manifest_hash


def test_include_selects_batches(lake_project):
    _, root = lake_project
    params = write_params(root, {"lake.include": ["*-train"]})
    assert snapshot.run(params, root).n_files == 2


def test_missing_lake_is_a_clear_error(tmp_path):
    params = write_params(tmp_path)
    with pytest.raises(LakeError, match="lake not found"):
        snapshot.run(params, tmp_path)
    assert not (tmp_path / "data" / "snapshot").exists()


def test_retired_batches_are_skipped_and_recorded(lake_project):
    from tarn.core.lake import Lake

    params, root = lake_project
    Lake(str(root / "data" / "lake")).retire("0002-adult-train", "bad export")
    res = snapshot.run(params, root)
    m = json.loads((root / "data" / "snapshot" / "manifest.json").read_text())
    assert [b["name"] for b in m["batches"]] == ["0001-adult-train", "0003-adult-test"]
    assert [(r["name"], r["reason"]) for r in m["retired"]] == [("0002-adult-train",
                                                                  "bad export")]
    assert res.retired == ("0002-adult-train",) and res.n_rows == 600
