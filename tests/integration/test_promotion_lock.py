"""Two `tarn promote` processes against one registry, from two project folders (so no
shared file lock): the lock kept in the registry serializes them."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tarn.core.registry import Registry
from tests.support.project import BIN, make_version, small_project

pytestmark = pytest.mark.slow


def test_promotions_from_two_machines_do_not_interleave(tmp_path):
    main = tmp_path / "main"
    main.mkdir()
    params = small_project(main)
    v1 = make_version(params, main)
    reg = Registry(params.mlflow, main)
    source = reg.version(v1).source
    uri = reg.tracking.uri  # the shared store: one SQLite file, absolute path
    versions = [str(reg.client.create_model_version("tarn-test", source=source).version)
                for _ in range(4)]
    roots = []
    for name in ("machine-a", "machine-b"):  # own folders, own .mlflow/promote.lock
        root = tmp_path / name
        root.mkdir()
        raw = yaml.safe_load((main / "params.yaml").read_text())
        raw["mlflow"]["tracking_uri"] = uri
        raw["serve"]["notify_url"] = ""
        (root / "params.yaml").write_text(yaml.safe_dump(raw))
        roots.append(root)
    subprocess.run([str(BIN / "tarn"), "--params", str(roots[0] / "params.yaml"), "promote",
                    "--version", v1, "--force", "--reason", "start"], check=True,
                   capture_output=True)
    for a, b in (versions[:2], versions[2:]):
        before = reg.production()
        procs = [subprocess.Popen([str(BIN / "tarn"), "--params", str(root / "params.yaml"),
                                   "promote", "--version", v, "--force", "--reason", "race"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for root, v in zip(roots, (a, b), strict=True)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert all(p.returncode == 0 for p in procs), outs
        prev = {v: reg.record_tags(v)["tarn.previous_production"] for v in (a, b)}
        winner = reg.production()
        loser = a if winner == b else b
        # serialized: the first recorded the old production, the second the first
        assert prev[loser] == before and prev[winner] == loser, prev
        alias, staged = reg.state()
        assert staged == [alias] == [winner]
    assert "tarn.promotion_lock" not in reg.client.get_registered_model("tarn-test").tags
