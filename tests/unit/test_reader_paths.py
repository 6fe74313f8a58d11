"""One CSV truth: the same bytes through every reader path give the same table or the same
refusal.

The lake reads a CSV with Arrow when it has no quote and no bare carriage return, else with
Python's csv module; a quote anywhere sends the whole file down the other path. Each case below
(the bad-lake cases of the suite plus generated header shapes) is written in every variant that
means the same records: quoting (none, one field, every field), line endings (LF, CRLF, bare CR),
a UTF-8 byte-order mark, a final newline or not, in UTF-8 and (where it matters) Latin-1 and
UTF-16. Every variant is read by each path that can read it ("auto", "python", "arrow" when the
bytes are line-per-record) at two chunk sizes, and must give what the plain variant gives under
"auto": the same raw table, record lines and malformed lines, or the same refusal message.
"""

from __future__ import annotations

import itertools
import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tarn.core.readers import csv_chunks, iter_chunks
from tarn.errors import EtlError

FS = fsspec.filesystem("file")

ADULT_HEAD = ["age", "workclass", "fnlwgt", "education", "sex", "income"]
ADULT_ROW = ["39", "State-gov", "77516", "Bachelors", "Male", "<=50K"]

# (name, lines): each line a list of cells, None for a blank line, a str for a raw line
CASES: list[tuple[str, list]] = [
    ("duplicated header (issue 21: ages became 99)",
     [["age", "x", "age"], ["39", "a", "99"], ["40", "b", "99"]]),
    ("duplicated header after trimming", [["age", " x", "age "], ["39", "a", "99"]]),
    ("duplicated header, header only", [["a", "b", "a"]]),
    ("three copies", [["a", "a", "a"], ["1", "2", "3"]]),
    ("case differs (the contract decides)", [["age", "Age"], ["1", "2"]]),
    ("adult rows", [ADULT_HEAD, ADULT_ROW, ["50", "Private", "83311", "HS-grad", "Female",
                                            ">50K"]]),
    ("missing column (nohead.csv)", [ADULT_HEAD[1:], ADULT_ROW[1:]]),
    ("extra column (extra.csv)", [[*ADULT_HEAD, "zip"], [*ADULT_ROW, "123"]]),
    ("header only (header_only.csv)", [["name", "city", "zip"]]),
    ("prose (notes.txt)", ["Remember to call the bank about the March figures."]),
    ("one column", [["age"], ["1"], None, ["2"]]),
    ("short and long lines", [["x", "y", "z"], ["1", "a", "b"], ["2", "c"],
                              ["3", "d", "e", "f"], ["4", "e", "f"]]),
    ("blank and whitespace lines", [["x", "y"], None, ["1", "2"], "   ", None, ["3", "4"]]),
    ("leading blank lines", [None, None, ["x", "y"], ["1", "2"]]),
    ("empty header name", [["a", "", "b"], ["1", "2", "3"]]),
    ("trailing comma in the header", [["a", "b", ""], ["1", "2", ""]]),
    ("two empty header names", [["a", "", ""], ["1", "2", "3"]]),
    ("empty values", [["a", "b"], ["", ""], ["1", ""]]),
    ("trailing spaces kept", [["a", "b"], ["x ", "y  "]]),
    ("non-ASCII values", [["name", "city"], ["Zoë", "Zürich"], ["Jürgen", "Köln"]]),
    ("non-ASCII header", [["âge", "ville"], ["1", "Paris"]]),
    ("a value that is a quote", [["a", "b"], ['say "hi"', "2"]]),
]
QUOTINGS = ("none", "one", "all")
NEWLINES = {"LF": "\n", "CRLF": "\r\n", "CR": "\r"}


def _cell(value: str, quote: bool) -> str:
    return '"' + value.replace('"', '""') + '"' if quote or '"' in value else value


def render(lines: list, quoting: str, newline: str, final_newline: bool) -> str:
    """The CSV text of ``lines``; "one" quotes the first value of the last row with cells."""
    last = max((i for i, ln in enumerate(lines) if isinstance(ln, list)), default=-1)
    out = []
    for i, ln in enumerate(lines):
        if ln is None:
            out.append("")
        elif isinstance(ln, str):
            out.append(_cell(ln, quoting == "all"))
        else:
            out.append(", ".join(_cell(v, quoting == "all" or (quoting == "one" and i == last
                                                                and j == 0))
                                 for j, v in enumerate(ln)))
    return newline.join(out) + (newline if final_newline else "")


def encodings_for(lines: list) -> list[str]:
    text = json.dumps(lines, ensure_ascii=False)
    return ["utf-8", "utf-16"] + (["latin-1"] if not text.isascii() else [])


def outcome(path: str, engine: str, chunk_rows: int):
    """What a path makes of a file: ("table", columns, rows, lines, malformed) or
    ("refused", message) with the file's path taken out."""
    try:
        chunks = list(csv_chunks(FS, path, chunk_rows, engine))
    except EtlError as e:
        return ("refused", e.message.replace(path, "<file>"))
    assert all(c.n_records <= chunk_rows for c in chunks), "a chunk beyond chunk_rows"
    columns = chunks[0].columns
    assert all(c.columns == columns for c in chunks)
    rows = [r for c in chunks for r in zip(*c.raw().to_pydict().values(), strict=True)]
    assert len(rows) == sum(c.table.num_rows for c in chunks)  # no column merged away
    return ("table", columns, rows, [n for c in chunks for n in c.lines.tolist()],
            [(m.line, m.reason, m.detail) for c in chunks for m in c.malformed])


def variants():
    for (name, lines) in CASES:
        for enc in encodings_for(lines):
            for quoting, (nl_name, nl), bom, final in itertools.product(
                    QUOTINGS, NEWLINES.items(), (False, True), (True, False)):
                if bom and enc != "utf-8":
                    continue  # UTF-16 writes its own; a UTF-8 mark on Latin-1 is nonsense
                yield name, lines, enc, quoting, nl_name, nl, bom, final


def test_every_reader_path_gives_the_same_table_or_the_same_refusal(tmp_path):
    expected: dict[tuple[str, str], tuple] = {}
    compared = 0
    disagreements = []
    for i, (name, lines, enc, quoting, nl_name, nl, bom, final) in enumerate(variants()):
        text = render(lines, quoting, nl, final)
        data = (b"\xef\xbb\xbf" if bom else b"") + text.encode(enc)
        path = tmp_path / f"v{i}" / "batch.csv"
        path.parent.mkdir()
        path.write_bytes(data)
        key = (name, enc)
        if key not in expected:  # the first variant is the plain one: no quote, LF, no BOM
            assert (quoting, nl_name, bom, final) == ("none", "LF", False, True)
            expected[key] = outcome(str(path), "auto", 1000)
        engines = ["auto", "python"]
        if quoting == "none" and nl_name != "CR" and '"' not in json.dumps(lines):
            engines.append("arrow")  # line-per-record bytes: Arrow can read them alone
        for engine in engines:
            for chunk_rows in (2, 1000):
                got = outcome(str(path), engine, chunk_rows)
                compared += 1
                if got != expected[key]:
                    disagreements.append((name, enc, quoting, nl_name, bom, final, engine,
                                          chunk_rows, got, expected[key]))
    print(f"\n{compared} reads of {i + 1} generated files from {len(CASES)} cases agreed"
          if not disagreements else "")
    assert not disagreements, "\n".join(map(repr, disagreements[:10]))
    assert compared >= 2000


def test_the_issue_21_file_is_refused_on_both_paths_and_at_lake_add(tmp_path):
    from tarn.config import SchemaConfig
    from tarn.core.ingest import check_header
    from tarn.errors import LakeError

    schema = SchemaConfig(columns=[{"name": "age", "dtype": "int"},
                                   {"name": "workclass", "dtype": "category"}],
                          target={"name": "income", "mapping": {"<=50K": 0, ">50K": 1}})
    plain = "age, workclass, age\n39, State-gov, 99\n"
    for name, body in [("plain.csv", plain), ("quoted.csv", plain + '40, "Private", 99\n')]:
        p = tmp_path / name
        p.write_text(body)
        with pytest.raises(EtlError, match=r"names column 'age' twice \(columns 1 and 3\)"):
            list(iter_chunks(FS, str(p), 100))
        with pytest.raises(LakeError, match="names column 'age' twice"):
            check_header(p, schema)


def test_json_lines_and_parquet_never_merge_a_repeated_name(tmp_path):
    jl = tmp_path / "a.jsonl"
    jl.write_text('{"age": "39", "x": "a"}\n{"age": "40", "age": "99"}\n')
    [c] = list(iter_chunks(FS, str(jl), 10))
    assert c.frame.to_dict("records") == [{"age": "39", "x": "a"}]
    assert [(m.line, m.detail) for m in c.malformed] == [(2, "key 'age' appears twice in one "
                                                            "object")]
    pqf = tmp_path / "a.parquet"
    pq.write_table(pa.table([pa.array(["39"]), pa.array(["99"])], names=["age", "age"]), pqf)
    with pytest.raises(EtlError, match=r"schema names column 'age' twice"):
        list(iter_chunks(FS, str(pqf), 10))
