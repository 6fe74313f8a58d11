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
