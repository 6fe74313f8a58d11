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


def test_byte_order_mark_is_stripped(tmp_path):
    for name, body in [("a.csv", b"age, x\n1, 2\n"), ("q.csv", b'age, x\n"1", 2\n'),
                       ("a.jsonl", b'{"age": "1"}\n')]:
        p = tmp_path / name
        p.write_bytes(b"\xef\xbb\xbf" + body)
        [c] = list(iter_chunks(FS, str(p), 10))
        assert c.columns[0] == "age" and c.frame.iloc[0, 0] == "1", name


@pytest.mark.parametrize("quoted", [False, True])
def test_a_decoding_error_names_its_line(tmp_path, quoted):
    p = tmp_path / "latin1.csv"
    q = '"' if quoted else ""
    p.write_bytes(b"x,y\n" + b"".join(f"{q}{i}{q},v\n".encode() for i in range(40))
                  + "caf\u00e9,v\n".encode("latin-1") + b"1,2\n")
    with pytest.raises(EtlError) as e:
        list(iter_chunks(FS, str(p), 10))
    assert "latin1.csv:42: not UTF-8" in e.value.message


def test_header_only_file_still_yields_its_header(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("name, city\n")
    [c] = list(iter_chunks(FS, str(p), 10))
    assert c.columns == ["name", "city"] and c.n_records == 0


def test_fast_and_csv_module_paths_agree(tmp_path):
    """Arrow for plain files, the csv module for quoted ones: same records, lines, errors."""
    body = ["x, y, z", "", "1, a, b", "   ", "2, c", "3, d, e, f", "4,e,f", "", "5, g , h"]
    plain = tmp_path / "plain.csv"
    plain.write_text("\r\n".join(body) + "\r\n")
    quoted = tmp_path / "quoted.csv"
    quoted.write_text("\n".join(body) + '\n6, "i", j\n')
    for chunk_rows in (1, 2, 100):
        a = list(iter_chunks(FS, str(plain), chunk_rows))
        b = list(iter_chunks(FS, str(quoted), chunk_rows))
        rows_a = [r for c in a for r in c.frame.itertuples(index=False, name=None)]
        rows_b = [r for c in b for r in c.frame.itertuples(index=False, name=None)]
        assert rows_b[:-1] == rows_a and rows_b[-1] == ("6", "i", "j")
        assert [n for c in a for n in c.lines.tolist()] == [3, 7, 9]
        assert [n for c in b for n in c.lines.tolist()] == [3, 7, 9, 10]
        assert [(m.line, m.detail) for c in a for m in c.malformed] == \
            [(c_m.line, c_m.detail) for c in b for c_m in c.malformed] == \
            [(5, "expected 3 fields, got 2"), (6, "expected 3 fields, got 4")]
        assert all(c.n_records <= chunk_rows for c in a + b)


def test_lines_longer_than_a_read_and_no_final_newline(tmp_path):
    p = tmp_path / "long.csv"
    big = "v" * 300_000
    p.write_text(f"x,y\n1,{big}\n2,b")
    chunks = list(iter_chunks(FS, str(p), 1))
    assert [c.lines.tolist() for c in chunks] == [[2], [3]]
    assert chunks[0].frame.iloc[0, 1] == big and chunks[1].frame.iloc[0, 1] == "b"
