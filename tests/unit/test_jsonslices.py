"""A large body parsed in slices equals the whole parse, and bad JSON is still refused."""

from __future__ import annotations

import json

import orjson
import pytest

from tarn.serve import jsonslices
from tarn.serve.inputs import InputError, parse_json
from tarn.serve.jsonslices import parse_sliced

# strings that look like separators and brackets, escapes, nested containers
RECORD = {"age": 39, "workclass": "State-gov", "x": [1, 2, {"a": "b]},{\\\"[,"}],
          "s": "q\\\\", "n": None, "t": "},{", "u": "é\u2028"}
SHAPES = {
    "records": [RECORD] * 3000,
    "dataframe_records": {"dataframe_records": [RECORD] * 3000, "params": {"a": [1, 2]}},
    "dataframe_split": {"dataframe_split": {"columns": ["a", "b"],
                                            "data": [[1, "x,]"], [2.5, None]] * 20000}},
    "columnar inputs": {"inputs": {"age": list(range(40000))}},
    "nested instances": {"instances": [[{"a": 1}], [{"b": [2]}]] * 8000},
}


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("dump", [orjson.dumps, lambda v: json.dumps(v).encode(),
                                  lambda v: json.dumps(v, indent=1).encode()],
                         ids=["compact", "spaced", "indented"])
def test_sliced_parse_equals_the_whole_parse(name, dump):
    body = dump(SHAPES[name])
    assert len(body) > 3 * 20_000  # large enough to be cut
    assert parse_sliced(body, 20_000) == orjson.loads(body)


def test_a_records_body_is_really_cut(monkeypatch):
    """(A separator inside a string makes its slice invalid: the body is then parsed whole,
    which is right but not sliced; plain records are cut.)"""
    calls: list[int] = []
    real = orjson.loads

    def counting(b):
        calls.append(len(b))
        return real(b)

    monkeypatch.setattr(jsonslices.orjson, "loads", counting)
    body = orjson.dumps([{"age": i, "workclass": "State-gov", "n": None} for i in range(9000)])
    assert parse_sliced(body, 20_000) == real(body)
    assert len(calls) >= len(body) // 20_000 - 2 and max(calls) < 3 * 20_000


@pytest.mark.parametrize("bad", [
    b"[" + b"{}," * 30000 + b"]",  # trailing comma
    b"[" + b"{}," * 30000 + b"{}] x",  # content after the document
    b'{"a": [' + b"{}," * 30000 + b"{}",  # unterminated
    b"[" + b"{}," * 10000 + b"{}},{}" + b",{}" * 10000 + b"]",  # a stray bracket mid-array
    b'["' + b"},{" * 30000 + b'"',  # separators inside an unterminated string
])
def test_invalid_json_is_still_refused(bad):
    with pytest.raises(orjson.JSONDecodeError):
        parse_sliced(bad, 20_000)
    with pytest.raises(InputError):
        parse_json(bad)


def test_the_caller_cannot_plant_the_placeholder():
    body = orjson.dumps([{"v": "\u0000tarn-0"}] * 4000 + [[1]] * 4000)
    assert parse_sliced(body, 10_000) == orjson.loads(body)
