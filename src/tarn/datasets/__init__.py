"""The bundled raw UCI Adult census-income files (CC BY 4.0, Becker & Kohavi 1996).

They are shipped byte-for-byte as published (gzipped), so that cleaning stays the ETL's job.
"""

from __future__ import annotations

import gzip
from importlib import resources

# Column names as in adult.names; the schema contract maps them to snake_case by alias.
ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country", "income",
]  # fmt: skip


def adult_lines(part: str) -> list[str]:
    """Raw data lines of ``adult.data`` (part="train") or ``adult.test`` (part="test").

    Blank lines and adult.test's leading ``|1x3 Cross validator`` comment are not records and
    are left out; every other byte of a line (stray spaces, ``?``, ``>50K.``) is kept.
    """
    name = {"train": "adult.data.gz", "test": "adult.test.gz"}[part]
    with resources.files(__package__).joinpath(name).open("rb") as fh:
        text = gzip.decompress(fh.read()).decode("utf-8")
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("|")]


def adult_batches(train_batches: int, test_batches: int):
    """The raw files as ordered lake batches (name, file name, bytes): adult.data first,
    adult.test last. Lines are kept byte-for-byte (stray spaces, ``?``, ``>50K.``); a header
    naming the columns as in adult.names is added so the contract can map them by alias."""
    header = ", ".join(ADULT_COLUMNS)
    seq = 0
    for part, n in (("train", train_batches), ("test", test_batches)):
        lines = adult_lines(part)
        size = -(-len(lines) // n)
        for i in range(n):
            seq += 1
            body = "\n".join([header, *lines[i * size:(i + 1) * size]]) + "\n"
            yield f"{seq:04d}-adult-{part}", "adult.csv", body.encode("utf-8")


def seed_adult(lake, train_batches: int, test_batches: int, if_empty: bool = False):
    """Seed ``lake`` (a :class:`tarn.core.lake.Lake`) with the bundled data."""
    return lake.seed(adult_batches(train_batches, test_batches), if_empty)
