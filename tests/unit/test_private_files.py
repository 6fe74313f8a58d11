"""Owner-only files (issue 21): what tarn writes is 0600 in 0700 folders whatever the umask,
and the MLflow SQLite store it creates is too."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from tarn.core.files import atomic_dir, atomic_path, private_dir, staged, write_json
from tests.support.perms import mode, open_umask  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("open_umask")


def test_atomic_writes_are_owner_only(tmp_path):
    write_json(tmp_path / "new" / "deeper" / "a.json", {"x": 1})
    assert mode(tmp_path / "new" / "deeper" / "a.json") == 0o600
    assert mode(tmp_path / "new") == mode(tmp_path / "new" / "deeper") == 0o700
    target = tmp_path / "b.bin"
    with atomic_path(target) as tmp:
        tmp.unlink()
        tmp.write_bytes(b"recreated by a writer with the umask's 0666")
    assert mode(target) == 0o600


def test_staged_tables_are_owner_only_even_when_the_writer_recreates_the_file(tmp_path):
    with staged() as st:
        st.parquet(tmp_path / "t.parquet", pd.DataFrame({"a": [1]}))
        p = st.path(tmp_path / "q.parquet")
        p.unlink()
        pd.DataFrame({"b": [2]}).to_parquet(p)  # 0666 with this umask
    assert mode(tmp_path / "t.parquet") == mode(tmp_path / "q.parquet") == 0o600


def test_atomic_dir_contents_are_owner_only(tmp_path):
    with atomic_dir(tmp_path / "snap") as d:
        (d / "files" / "0001-a").mkdir(parents=True)
        (d / "files" / "0001-a" / "rows.csv").write_text("a\n1\n")
    assert mode(tmp_path / "snap") == mode(tmp_path / "snap" / "files") == 0o700
    assert mode(tmp_path / "snap" / "files" / "0001-a") == 0o700
    assert mode(tmp_path / "snap" / "files" / "0001-a" / "rows.csv") == 0o600


def test_an_existing_output_folder_is_made_private(tmp_path):
    d = tmp_path / "curated"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    private_dir(d)
    assert mode(d) == 0o700
