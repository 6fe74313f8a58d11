import json

import pandas as pd
import pytest

from tarn.errors import EtlError
from tarn.stages import etl, snapshot
from tests.support.project import adult_csv, write_params


def _bad_batch(lake):
    """One file that breaks the contract in every row-level way, with known line numbers."""
    text = adult_csv("train", 5000, 3).splitlines()  # rows no other batch has
    text += [
        "abc, Private, 1, HS-grad, 9, Divorced, Sales, Unmarried, White, Female, 0, 0, 40, "
        "United-States, <=50K",                              # line 5: not a number
        "30, Astronaut, 1, HS-grad, 9, Divorced, Sales, Unmarried, White, Female, 0, 0, 40, "
        "United-States, <=50K",                              # line 6: unknown category
        "30, Private, 1, HS-grad",                           # line 7: malformed
        text[1],                                             # line 8: duplicate of line 2
    ]
    (lake / "0009-bad").mkdir()
    (lake / "0009-bad" / "bad.csv").write_text("\n".join(text) + "\n")


def test_accounting_and_quarantine(lake_project):
    _, root = lake_project
    params = write_params(root, {"etl.dedup": "global"})  # exact rows count as duplicates
    _bad_batch(root / "data" / "lake")
    snapshot.run(params, root)
    res = etl.run(params, root)
    rep = res.report
    for name, c in [("total", rep["total"]), *rep["batches"].items()]:
        assert c["read"] == c["written"] + c["rejected"] + c["duplicates"], name
    bad = rep["batches"]["0009-bad"]
    assert bad == {"read": 7, "written": 3, "rejected": 3, "duplicates": 1,
                   "rejected_by_reason": {"malformed_line": 1, "not_a_number": 1,
                                          "unknown_category": 1}}
    q = pd.read_parquet(res.quarantine)
    qb = q[q["batch"] == "0009-bad"].sort_values("line")
    assert qb["line"].tolist() == [5, 6, 7, 8]
    assert qb["reason"].tolist() == ["not_a_number", "unknown_category", "malformed_line",
                                     "duplicate"]
    assert qb["file"].unique().tolist() == ["files/0009-bad/bad.csv"]
    assert json.loads(qb.iloc[0]["raw"])["age"] == "abc"  # the raw record is kept verbatim
    assert "0009-bad:files/0009-bad/bad.csv:2" in qb.iloc[3]["detail"]
    table = pd.read_parquet(res.curated)
    assert len(table) == rep["total"]["written"]
    assert table["batch"].nunique() == 4
    assert json.loads((root / "reports" / "etl.json").read_text()) == rep


def test_chunk_size_does_not_change_the_result(lake_project, tmp_path):
    params, root = lake_project
    snapshot.run(params, root)
    big = etl.run(params, root)
    t_big = pd.read_parquet(big.curated)
    small = write_params(root, {"etl.chunk_rows": 37})
    res = etl.run(small, root)
    pd.testing.assert_frame_equal(pd.read_parquet(res.curated), t_big)
    assert res.report == big.report


def test_dedup_scopes(lake_project):
    params, root = lake_project
    lake = root / "data" / "lake"
    (lake / "0004-again").mkdir()
    (lake / "0004-again" / "a.csv").write_text(adult_csv("train", 0, 10))  # re-delivered rows
    snapshot.run(params, root)
    # auto without a key: identical rows are different people, all kept
    assert etl.run(params, root).report["batches"]["0004-again"]["duplicates"] == 0
    exact = write_params(root, {"etl.dedup": "global"})
    assert etl.run(exact, root).report["batches"]["0004-again"]["duplicates"] == 10
    per_batch = write_params(root, {"etl.dedup": "batch"})
    assert etl.run(per_batch, root).report["batches"]["0004-again"]["duplicates"] == 0


def test_duplicates_are_judged_by_the_key_and_read_batches_agrees(lake_project):
    from tarn.core.ingest import read_batches

    params, root = lake_project
    lake = root / "data" / "lake"
    (lake / "0004-again").mkdir()
    rows = adult_csv("train", 0, 10).splitlines()
    # same key (age, fnlwgt) as earlier rows, other hours: a later delivery of the same records
    changed = [rows[0]] + [r.replace(", 40, ", ", 41, ", 1) for r in rows[1:]]
    (lake / "0004-again" / "a.csv").write_text("\n".join(changed) + "\n")
    keyed = write_params(root, {"schema.key": ["age", "fnlwgt"]})
    snapshot.run(keyed, root)
    report = etl.run(keyed, root).report
    assert report["batches"]["0004-again"]["duplicates"] == 10  # by key, not by exact row
    assert report["total"]["read"] == report["total"]["written"] + report["total"][
        "rejected"] + report["total"]["duplicates"]
    df, _ = read_batches(keyed, root, ["0004-again"])  # monitoring's path: same settings
    assert len(df) == 10  # duplicates within these batches only: none here
    plain = write_params(root, {"schema.key": []})
    df, _ = read_batches(plain, root, ["0003-adult-test", "0004-again"])
    assert len(df) == 200 + 10  # auto, no key: nothing removed


@pytest.mark.parametrize(("name", "content", "match"), [
    ("bad.parquet", b"PAR1 garbage PAR1", "not a readable Parquet file"),
    ("nohead.csv", adult_csv("train", 0, 2).replace("age, ", "", 1).encode(), "missing column"),
    ("extra.csv", adult_csv("train", 0, 2).replace("income", "income, zip", 1)
     .replace("<=50K\n", "<=50K, 123\n").encode(), "unexpected column"),
    # issue 21: one quoted field sent this file to the csv module, whose last 'age' won
    ("twice.csv", adult_csv("train", 0, 2).replace("income", "income, age", 1)
     .replace("<=50K\n", '<=50K, "99"\n').encode(), "names column 'age' twice"),
])
def test_file_level_errors_name_the_file_and_leave_outputs_untouched(lake_project, name, content,
                                                                     match):
    params, root = lake_project
    snapshot.run(params, root)
    first = etl.run(params, root)
    manifest = root / "data" / "snapshot" / "manifest.json"
    outputs = [first.curated, first.quarantine, root / "reports" / "etl.json", manifest]
    before = {p: p.read_bytes() for p in outputs}
    (root / "data" / "lake" / "0009-x").mkdir()
    (root / "data" / "lake" / "0009-x" / name).write_bytes(content)
    with pytest.raises(EtlError, match=match) as e:  # snapshot or etl, whichever sees it first
        snapshot.run(params, root)
        before[manifest] = manifest.read_bytes()  # the snapshot may legitimately change
        etl.run(params, root)
    assert f"0009-x/{name}" in e.value.message and ".tmp" not in e.value.message
    assert {p: p.read_bytes() for p in before} == before  # nothing half-written
    leftovers = [p.name for d in ("data", "data/curated") for p in (root / d).iterdir()
                 if p.name.startswith(".")]
    assert leftovers == []


def test_json_lines_and_parquet_batches(lake_project):
    _, root = lake_project
    params = write_params(root, {"etl.dedup": "global"})
    lake = root / "data" / "lake"
    src = pd.read_csv(pd.io.common.StringIO(adult_csv("train", 900, 20)), skipinitialspace=True,
                      dtype=str)
    (lake / "0004-json").mkdir()
    src.to_json(lake / "0004-json" / "a.jsonl", orient="records", lines=True)
    (lake / "0005-pq").mkdir()
    src.iloc[:10].to_parquet(lake / "0005-pq" / "a.parquet")
    snapshot.run(params, root)
    rep = etl.run(params, root).report
    assert rep["batches"]["0004-json"]["written"] == 20
    assert rep["batches"]["0005-pq"]["duplicates"] == 10  # same rows as the JSON batch


@pytest.mark.parametrize(("name", "content", "match"), [
    ("header_only.csv", b"name, city, zip\n", "missing column"),
    ("notes.txt", b"Remember to call the bank about the March figures.\n", "missing column"),
    ("latin1.csv", adult_csv("train", 0, 3).encode() + "caf\u00e9, x\n".encode("latin-1"),
     ":5: not UTF-8"),
])
def test_headers_and_encodings_are_checked_rows_or_not(lake_project, name, content, match):
    params, root = lake_project
    (root / "data" / "lake" / "0009-x").mkdir()
    (root / "data" / "lake" / "0009-x" / name).write_bytes(content)
    with pytest.raises(EtlError, match=match) as e:  # snapshot or etl, whichever sees it first
        snapshot.run(params, root)
        etl.run(params, root)
    assert f"0009-x/{name}" in e.value.message
    if "missing" in match:
        assert "'age'" in e.value.message


def test_a_byte_order_mark_is_not_part_of_the_first_column(lake_project):
    params, root = lake_project
    (root / "data" / "lake" / "0009-bom").mkdir()
    (root / "data" / "lake" / "0009-bom" / "excel.csv").write_bytes(
        b"\xef\xbb\xbf" + adult_csv("train", 3000, 5).encode())
    snapshot.run(params, root)
    assert etl.run(params, root).report["batches"]["0009-bom"]["written"] == 5


def test_an_unsupported_file_found_in_a_snapshot_is_named(lake_project):
    params, root = lake_project
    snapshot.run(params, root)
    manifest = root / "data" / "snapshot" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["files"][0]["path"] = "files/0001-adult-train/adult.xlsx"
    manifest.write_text(json.dumps(m))
    with pytest.raises(EtlError) as e:
        etl.run(params, root)
    assert "adult.xlsx: unsupported file format" in e.value.message
    assert ".parquet" in e.value.message
