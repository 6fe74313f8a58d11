"""Chunked readers for the lake's file formats: CSV, JSON Lines and Parquet (optionally gzipped).

Each reader yields :class:`RawChunk` objects holding raw values as an Arrow table of strings
(null = absent), the source line (text) or row (Parquet) of every record, and the records that
could not be parsed at all. Memory is bounded by ``chunk_rows`` whatever the file size. A file
with a header and no rows still yields one (empty) chunk, so its header is checked too.

CSV is parsed by Arrow's multi-threaded reader. Lines are found and counted in NumPy first, so
every record keeps its physical line number, blank lines are skipped and a line with the wrong
number of fields is reported (with its line and text) instead of parsed. A file with quotes or
bare carriage returns (where a record may span lines) goes through Python's csv module instead:
same results, slower. Either way values keep their bytes; the contract trims them.

Both CSV paths build the table by column position and refuse a header that names a column
twice (as Parquet does for its schema and JSON Lines for a key repeated in one object): two
columns of one name would otherwise be merged, the last one silently winning.
``tests/unit/test_reader_paths.py`` reads the same bytes through every path and checks they
give identical tables or identical refusals.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tarn.errors import EtlError

FORMATS: dict[str, str] = {
    ".csv": "csv", ".csv.gz": "csv", ".txt": "csv",
    ".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
}  # fmt: skip
BOM = codecs.BOM_UTF8


def file_format(path: str) -> str | None:
    """The reader for ``path`` by its extension, or None if unsupported."""
    low = path.lower()
    for ext in sorted(FORMATS, key=len, reverse=True):
        if low.endswith(ext):
            return FORMATS[ext]
    return None


def supported_help() -> str:
    return ", ".join(sorted(FORMATS))


def unsupported(path: str) -> EtlError:
    return EtlError(f"{path}: unsupported file format (supported: {supported_help()})",
                    "convert it to one of those formats, or remove the file from the batch")


@dataclass
class Malformed:
    line: int
    reason: str
    detail: str
    raw: str


@dataclass
class RawChunk:
    table: pa.Table  # raw string values, columns as named in the file
    lines: np.ndarray  # source line (text formats) or 1-based row (Parquet) per table row
    malformed: list[Malformed] = field(default_factory=list)
    # CSV values may still carry the spaces after a comma (the csv module's skipinitialspace
    # drops them): the contract trims values anyway; :meth:`raw` drops them for display
    initial_space: bool = False

    def raw(self, positions: np.ndarray | None = None) -> pa.Table:
        """The raw values (of the rows at ``positions``), as the csv module reads them."""
        t = self.table if positions is None else self.table.take(pa.array(positions,
                                                                          pa.int64()))
        if self.initial_space:
            t = pa.table([pc.ascii_ltrim(c, " ") for c in t.columns], names=t.column_names)
        return t

    @property
    def n_records(self) -> int:
        return self.table.num_rows + len(self.malformed)

    @property
    def columns(self) -> list[str]:
        return self.table.column_names

    @cached_property
    def frame(self) -> pd.DataFrame:
        """The raw values as a pandas frame of ``str`` / ``None`` (object columns)."""
        t = self.raw()
        return pd.DataFrame({c: pd.Series(t.column(c).to_pylist(), dtype=object)
                             for c in t.column_names})


def iter_chunks(fs: fsspec.AbstractFileSystem, path: str, chunk_rows: int) -> Iterator[RawChunk]:
    """Yield the records of one lake file in chunks of at most ``chunk_rows``."""
    fmt = file_format(path)
    if fmt is None:
        raise unsupported(path)
    if fs.size(path) == 0:
        raise EtlError(f"{path}: empty file (0 bytes)",
                       "remove it from the lake or re-upload it; a batch file must hold rows")
    reader = {"csv": _csv_chunks, "jsonl": _jsonl_chunks, "parquet": _parquet_chunks}[fmt]
    yield from reader(fs, path, max(1, int(chunk_rows)))


def read_header(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """The column names of a file (CSV header, JSON Lines keys of the first rows, Parquet
    schema), reading no more than the first chunk."""
    for chunk in iter_chunks(fs, path, 1000):
        return chunk.columns
    return []


def count_records(fs: fsspec.AbstractFileSystem, path: str, chunk_rows: int = 100_000) -> int:
    """Records in a file, malformed ones included: the 'read' count the ETL must account for."""
    return sum(c.n_records for c in iter_chunks(fs, path, chunk_rows))


def _strings(columns: list[str], values: list[list[str | None]] | None = None) -> pa.Table:
    """A table of string columns by position (never through a dict: a name must not merge)."""
    values = values if values is not None else [[] for _ in columns]
    return pa.table([pa.array(v, type=pa.string()) for v in values], names=list(columns))


def check_names(path: str, names: list[str], what: str = "header") -> None:
    """Refuse a file whose header names a column twice: readers would merge the two columns
    (a dict keeps the last), so every reader path refuses it the same way."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names, start=1):
        if name in seen:
            raise EtlError(f"{path}: the {what} names column {name!r} twice (columns "
                           f"{seen[name]} and {i})",
                           "rename or remove one of the two columns; tarn never merges them")
        seen[name] = i


CSV_ENGINES = ("auto", "arrow", "python")


def _transpose(rows: list[list[str]], width: int) -> list[list[str]]:
    return [[r[i] for r in rows] for i in range(width)]


# ---------------------------------------------------------------------------------------- text
def _open_binary(fs, path: str):
    return fs.open(path, "rb", compression="infer")


def _decode_error(fs, path: str) -> EtlError:
    """Locate the first byte that is not UTF-8: its line (1-based) and the reason."""
    dec = codecs.getincrementaldecoder("utf-8")()
    line, cr = 1, False

    def breaks(part: bytes, after_cr: bool) -> int:  # LF, CRLF and a bare CR end a line
        return (part.count(b"\n") + part.count(b"\r") - part.count(b"\r\n")
                - (after_cr and part.startswith(b"\n")))

    with _open_binary(fs, path) as fh:
        while block := fh.read(1 << 20):
            try:
                dec.decode(block)
            except UnicodeDecodeError as e:
                line += breaks(block[:max(e.start, 0)], cr)
                return EtlError(f"{path}:{line}: not UTF-8 text ({e.reason}, byte "
                                f"{block[e.start:e.start + 1]!r})", "re-encode the file as UTF-8")
            line += breaks(block, cr)
            cr = block.endswith(b"\r")
        try:
            dec.decode(b"", final=True)
        except UnicodeDecodeError as e:
            return EtlError(f"{path}:{line}: not UTF-8 text ({e.reason}, at the end)",
                            "re-encode the file as UTF-8")
    return EtlError(f"{path}: not UTF-8 text", "re-encode the file as UTF-8")


def _text(fs, path: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _decode_error(fs, path) from None


READ_BYTES = 1 << 24  # upper bound of one read


def csv_chunks(fs, path: str, chunk_rows: int, engine: str = "auto") -> Iterator[RawChunk]:
    """The CSV reader, by path: "auto" (what the lake uses: Arrow for a file with no quote and
    no bare CR, else the csv module), or one path forced ("arrow" raises ValueError for a file
    it cannot read line by line). The differential test compares them on the same bytes."""
    if engine not in CSV_ENGINES:
        raise ValueError(f"engine must be one of {CSV_ENGINES}, not {engine!r}")
    if engine == "python":
        yield from _csv_chunks_python(fs, path, max(1, int(chunk_rows)))
        return
    with _open_binary(fs, path) as fh:
        simple = _simple_csv(fs, path, fh.read(1 << 16), fh)
    if engine == "arrow" and not simple:
        raise ValueError(f"{path}: quotes or bare carriage returns: not a line-per-record CSV")
    yield from _csv_chunks(fs, path, max(1, int(chunk_rows)), simple)


def _csv_chunks(fs, path: str, chunk_rows: int, simple: bool | None = None) -> Iterator[RawChunk]:
    if simple is None:
        with _open_binary(fs, path) as fh:
            head = fh.read(1 << 16)
            simple = _simple_csv(fs, path, head, fh)
    if not simple:
        yield from _csv_chunks_python(fs, path, chunk_rows)
        return
    with _open_binary(fs, path) as fh:
        yield from _csv_chunks_arrow(fs, path, fh, chunk_rows)


def _simple_csv(fs, path: str, head: bytes, fh) -> bool:
    """No quote and no bare CR anywhere: every line is one record, fields split at commas."""
    block, prev_cr = head, False
    while block:
        if b'"' in block:
            return False
        if b"\r" in block:
            if prev_cr and not block.startswith(b"\n"):
                return False
            if block.count(b"\r") != block.count(b"\r\n") + block.endswith(b"\r"):
                return False
        prev_cr = block.endswith(b"\r")
        block = fh.read(READ_BYTES)
    return not prev_cr


def _csv_chunks_arrow(fs, path: str, fh, chunk_rows: int) -> Iterator[RawChunk]:
    import pyarrow.csv as pacsv

    # header: the first non-blank line (a UTF-8 byte-order mark is dropped)
    buf = fh.read(1 << 16)
    if buf.startswith(BOM):
        buf = buf[len(BOM):]
    line_no = 1
    while True:
        nl = buf.find(b"\n")
        while nl < 0:
            more = fh.read(1 << 16)
            if not more:
                nl = len(buf)
                break
            buf += more
            nl = buf.find(b"\n")
        first = buf[:nl]
        if first.strip() or nl >= len(buf):
            break
        buf = buf[nl + 1:]
        line_no += 1
    if not first.strip():
        raise EtlError(f"{path}: no header line", "the first line must name the columns")
    header = [h.strip() for h in next(csv.reader([_text(fs, path, first).rstrip("\r")],
                                                 skipinitialspace=True))]
    check_names(path, header)
    buf = buf[nl + 1:]
    line_no += 1  # physical line of buf[0]
    width = len(header)
    read_opts = pacsv.ReadOptions(column_names=header, use_threads=True,
                                  block_size=1 << 20)
    parse_opts = pacsv.ParseOptions(ignore_empty_lines=True, newlines_in_values=False)
    conv_opts = pacsv.ConvertOptions(column_types={h: pa.string() for h in header},
                                     strings_can_be_null=False)
    if width == 1:  # a whitespace-only line would be a record: leave it to the csv module
        yield from _csv_chunks_python(fs, path, chunk_rows)
        return
    n_head = buf.count(b"\n")
    est = max(16, len(buf) // n_head) if n_head else 256  # bytes a line, to size the reads
    invalid: list[int] = []  # lines Arrow set aside (wrong field count, whitespace only)

    def skip(row) -> str:
        invalid.append(1)  # (not row.text: it may not decode; the line is found below)
        return "skip"

    parse_opts.invalid_row_handler = skip
    yielded = eof = False
    while True:
        ends = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10)  # each '\n'
        while not eof and len(ends) < chunk_rows and len(buf) < READ_BYTES or \
                (not eof and len(ends) == 0):
            more = fh.read(max(1 << 16, (chunk_rows - len(ends)) * est))
            eof = not more
            if more:
                extra = np.flatnonzero(np.frombuffer(more, dtype=np.uint8) == 10) + len(buf)
                ends = np.concatenate([ends, extra])
                buf += more
        if eof and len(buf) and (len(ends) == 0 or ends[-1] != len(buf) - 1):
            ends = np.append(ends, len(buf))  # the last line has no newline
        if len(ends) > chunk_rows:
            ends = ends[:chunk_rows]  # at most chunk_rows lines, so at most that many records
        cut = int(min(ends[-1] + 1, len(buf))) if len(ends) else len(buf)
        starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
        view = memoryview(buf)[:cut]
        invalid.clear()
        if (np.frombuffer(buf, dtype=np.uint8, count=cut) >= 0x80).any():
            _text(fs, path, bytes(view))  # not ASCII: valid UTF-8, or the line that is not
        table = _arrow_parse(fs, path, view, read_opts, parse_opts, conv_opts) \
            if cut else None
        n_rows = table.num_rows if table is not None else 0
        width_of = ends - starts
        empty = (width_of == 0) | ((width_of == 1) & (np.frombuffer(
            buf, dtype=np.uint8, count=cut)[np.maximum(ends - 1, 0)] == 13))
        malformed: list[Malformed] = []
        if not invalid and n_rows == int((~empty).sum()):
            ok = ~empty  # every line that is not empty is a record with the right width
        else:  # count the fields of every line (rare: a chunk with a bad line)
            arr = np.frombuffer(buf, dtype=np.uint8, count=cut)
            commas = np.flatnonzero(arr == 44)
            fields = np.searchsorted(commas, ends) - np.searchsorted(commas, starts) + 1
            record = ~empty
            for i in np.flatnonzero(record & (fields == 1)).tolist():  # blank, or one field
                record[i] = bool(_text(fs, path, bytes(buf[starts[i]:ends[i]])).strip())
            ok = record & (fields == width)
            for i in np.flatnonzero(record & (fields != width)).tolist():
                text = _text(fs, path, bytes(buf[starts[i]:ends[i]])).rstrip("\r")
                malformed.append(Malformed(line_no + i, "malformed_line",
                                           f"expected {width} fields, got {int(fields[i])}",
                                           text))
        lines = (line_no + np.flatnonzero(ok)).astype(np.int64)
        if n_rows != len(lines):  # never expected: Arrow and the line count disagree
            raise EtlError(f"{path}: CSV rows could not be matched to lines near line "
                           f"{line_no}", "quote the file's fields consistently")
        table = table.rename_columns(header) if n_rows else _strings(header)
        if len(lines) or malformed or not yielded:
            yield RawChunk(table, lines, malformed, initial_space=True)
            yielded = True
        line_no += len(ends)
        buf = buf[cut:]
        if eof and not buf:
            break


def _arrow_parse(fs, path, data, read_opts, parse_opts, conv_opts) -> pa.Table:
    import pyarrow.csv as pacsv

    try:
        return pacsv.read_csv(pa.py_buffer(data), read_opts, parse_opts, conv_opts)
    except pa.ArrowInvalid as e:
        try:  # Arrow reports bad UTF-8 without a line (or as a parse error): find it
            codecs.decode(data, "utf-8")
        except UnicodeDecodeError:
            raise _decode_error(fs, path) from None
        raise EtlError(f"{path}: unreadable CSV ({e})", "fix or remove that line") from e


def _csv_chunks_python(fs, path: str, chunk_rows: int) -> Iterator[RawChunk]:
    """Python's csv module: quoted fields, records spanning lines, bare CRs."""
    raw = _open_binary(fs, path)
    with io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, skipinitialspace=True)
        try:
            header = next(reader, None)
            while header is not None and not any(h.strip() for h in header):
                header = next(reader, None)  # leading blank lines
            if header is None:
                raise EtlError(f"{path}: no header line", "the first line must name the columns")
            header = [h.strip() for h in header]
            check_names(path, header)
            rows: list[list[str]] = []
            lines: list[int] = []
            bad: list[Malformed] = []
            yielded = False
            for rec in reader:
                if not rec or (len(rec) == 1 and not rec[0].strip()):
                    continue  # blank line: not a record
                if len(rec) != len(header):
                    bad.append(Malformed(reader.line_num, "malformed_line",
                                         f"expected {len(header)} fields, got {len(rec)}",
                                         ",".join(rec)))
                else:
                    rows.append(rec)
                    lines.append(reader.line_num)
                if len(rows) + len(bad) >= chunk_rows:
                    yield RawChunk(_strings(header, _transpose(rows, len(header))),
                                   np.array(lines, dtype=np.int64), bad)
                    rows, lines, bad, yielded = [], [], [], True
            if rows or bad or not yielded:
                yield RawChunk(_strings(header, _transpose(rows, len(header))),
                               np.array(lines, dtype=np.int64), bad)
        except csv.Error as e:
            raise EtlError(f"{path}:{reader.line_num}: unreadable CSV ({e})",
                           "fix or remove that line (often an unclosed quote)") from e
        except UnicodeDecodeError:
            raise _decode_error(fs, path) from None


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are distinct (``json.loads`` would keep the last of two)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return out


def _jsonl_chunks(fs, path: str, chunk_rows: int) -> Iterator[RawChunk]:
    records: list[dict] = []
    lines: list[int] = []
    bad: list[Malformed] = []
    keys: dict[str, None] = {}

    def chunk() -> RawChunk:
        cols = {k: [r.get(k) for r in records] for k in keys}
        return RawChunk(_strings(list(cols), list(cols.values())),
                        np.array(lines, dtype=np.int64), bad)

    yielded = False
    with io.TextIOWrapper(_open_binary(fs, path), encoding="utf-8-sig", newline="") as fh:
        try:
            for no, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                try:
                    rec = json.loads(text, object_pairs_hook=_unique_keys)
                except json.JSONDecodeError as e:
                    bad.append(Malformed(no, "malformed_line", f"invalid JSON ({e.msg})",
                                         text.strip()))
                except _DuplicateKey as e:
                    bad.append(Malformed(no, "malformed_line", f"key {e.key!r} appears twice "
                                         "in one object", text.strip()))
                else:
                    if isinstance(rec, dict):
                        records.append({k: None if v is None else str(v) for k, v in rec.items()})
                        keys.update(dict.fromkeys(rec))
                        lines.append(no)
                    else:
                        bad.append(Malformed(no, "malformed_line", "not a JSON object",
                                             text.strip()))
                if len(records) + len(bad) >= chunk_rows:
                    yield chunk()
                    records, lines, bad, keys, yielded = [], [], [], {}, True
        except UnicodeDecodeError:
            raise _decode_error(fs, path) from None
    if records or bad or not yielded:
        yield chunk()


def _as_strings(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Values as text, as Python's ``str`` writes them."""
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return col.cast(pa.string())
    if pa.types.is_integer(t):
        return col.cast(pa.string())
    if pa.types.is_dictionary(t):
        return _as_strings(col.cast(t.value_type))
    return pa.chunked_array([pa.array([None if v is None else str(v) for v in col.to_pylist()],
                                      type=pa.string())])


def _parquet_chunks(fs, path: str, chunk_rows: int) -> Iterator[RawChunk]:
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            names = pf.schema_arrow.names
            check_names(path, names, "schema")
            start = 1
            yielded = False
            for batch in pf.iter_batches(batch_size=chunk_rows):
                t = pa.Table.from_batches([batch])
                t = pa.table([_as_strings(c) for c in t.columns], names=t.column_names)
                n = t.num_rows
                yield RawChunk(t, np.arange(start, start + n, dtype=np.int64))
                start += n
                yielded = True
            if not yielded:
                yield RawChunk(_strings(names), np.zeros(0, dtype=np.int64))
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        raise EtlError(f"{path}: not a readable Parquet file ({e})",
                       "re-export the file or remove it from the lake") from e


