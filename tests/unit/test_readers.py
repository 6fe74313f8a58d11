import gzip
import json

import fsspec
import pandas as pd
import pytest

from tarn.core.readers import count_records, file_format, iter_chunks
from tarn.errors import EtlError

FS = fsspec.filesystem("file")


def test_formats():
    assert file_format("a/b.CSV") == "csv"
    assert file_format("a/b.csv.gz") == "csv"
    assert file_format("b.jsonl") == "jsonl"
    assert file_format("b.parquet") == "parquet"
    assert file_format("b.xlsx") is None


def test_csv_chunks_are_bounded_and_keep_line_numbers(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("x, y\n" + "".join(f"{i}, v{i}\n" for i in range(25)) + "\n")
    chunks = list(iter_chunks(FS, str(p), chunk_rows=10))
    assert [len(c.frame) for c in chunks] == [10, 10, 5]
    assert chunks[0].lines[0] == 2 and chunks[-1].lines[-1] == 26
    assert chunks[0].frame.columns.tolist() == ["x", "y"]
    assert chunks[0].frame.iloc[0].tolist() == ["0", "v0"]


def test_malformed_csv_line_is_reported_with_its_line(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("x,y\n1,2\n3\n4,5,6\n7,8\n")
    [c] = list(iter_chunks(FS, str(p), 100))
    assert len(c.frame) == 2
    assert [(m.line, m.reason) for m in c.malformed] == [(3, "malformed_line"),
                                                         (4, "malformed_line")]
    assert "expected 2 fields, got 1" in c.malformed[0].detail
    assert count_records(FS, str(p)) == 4


def test_gzip_csv(tmp_path):
    p = tmp_path / "a.csv.gz"
    p.write_bytes(gzip.compress(b"x,y\n1,2\n"))
    assert count_records(FS, str(p)) == 1


def test_jsonl_with_a_bad_line(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps({"x": 1, "y": None}) + "\n{oops\n[1]\n")
    [c] = list(iter_chunks(FS, str(p), 100))
    assert c.frame.to_dict("records") == [{"x": "1", "y": None}]
    assert [m.line for m in c.malformed] == [2, 3]


def test_parquet_rows_numbered_from_one(tmp_path):
    p = tmp_path / "a.parquet"
    pd.DataFrame({"x": [1, 2, 3], "y": ["a", None, "c"]}).to_parquet(p)
    chunks = list(iter_chunks(FS, str(p), 2))
    assert [c.lines.tolist() for c in chunks] == [[1, 2], [3]]
    assert chunks[0].frame.iloc[1].tolist() == ["2", None]


def test_corrupted_parquet_names_the_file(tmp_path):
    p = tmp_path / "bad.parquet"
    p.write_bytes(b"PAR1 this is not parquet at all PAR1")
    with pytest.raises(EtlError) as e:
        list(iter_chunks(FS, str(p), 10))
    assert "bad.parquet" in e.value.message and "Parquet" in e.value.message


def test_empty_file_is_an_error_naming_it(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_bytes(b"")
    with pytest.raises(EtlError, match="empty.csv: empty file"):
        list(iter_chunks(FS, str(p), 10))


def test_header_only_csv_has_no_records(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("x,y\n")
    assert count_records(FS, str(p)) == 0
