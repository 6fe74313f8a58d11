"""``tarn init``: start a project on the user's own files. Reads a sample, proposes the
contract (``tarn.core.infer``), writes it into params.yaml, and adds the files to the lake as
its first batches, the latest one held out as the test split."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from tarn.core.infer import InitError, Proposal, contract_name, propose
from tarn.core.lake import Lake
from tarn.core.readers import file_format, supported_help

SAMPLE_ROWS = 100_000  # rows read per file to infer the contract


@dataclass
class InitResult:
    proposal: Proposal
    batches: list[str]
    params_path: Path


def read_text(path: Path, nrows: int | None = SAMPLE_ROWS) -> pd.DataFrame:
    """A file's rows as text, as the ETL sees them (missing stays a marker or "")."""
    fmt = file_format(path.name)
    if fmt is None:
        raise InitError(f"{path}: unsupported format (supported: {supported_help()})",
                        "convert it to one of those formats")
    if not path.is_file() or path.stat().st_size == 0:
        raise InitError(f"{path}: no such file, or empty", "give files that hold rows")
    head = path.read_bytes()[:4]
    if (head == b"PAR1") != (fmt == "parquet"):
        raise InitError(f"{path}: the content is {'Parquet' if head == b'PAR1' else 'text'}, "
                        f"the extension says {fmt}", "rename the file to match its format")
    try:
        if fmt == "csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True,
                             nrows=nrows, encoding="utf-8-sig")
        elif fmt == "jsonl":
            df = pd.read_json(path, lines=True, dtype=False, nrows=nrows, encoding="utf-8-sig")
        else:
            df = pd.read_parquet(path)
            df = df.head(nrows) if nrows else df
    except Exception as e:  # noqa: BLE001 - any parser error: the file cannot be read as told
        raise InitError(f"{path}: not readable as {fmt} ({str(e).splitlines()[0][:200]})",
                        "check the file's format and encoding (UTF-8)") from None
    if df.empty or not len(df.columns):
        raise InitError(f"{path}: no data rows", "give files that hold rows")
    return df.astype(object).where(df.notna(), "").astype(str)


def dataset_name(files: list[Path]) -> str:
    """The files' common stem (``penguins-2007.csv``, ``penguins-2008.csv`` -> ``penguins``):
    names the contract and the registered model, instead of the demo's."""
    stems = [f.name.split(".")[0] for f in files]
    common = os.path.commonprefix(stems).rstrip("-_ .0123456789") or stems[0]
    return contract_name(common)


def _replace_block(text: str, key: str, body: str) -> str:
    """``text`` with the top-level ``key:`` block replaced by ``body`` (comments elsewhere
    kept), or ``body`` appended."""
    block = re.compile(rf"(?ms)^{key}:.*?(?=^\S|\Z)")
    return block.sub(lambda _: body, text, count=1) if block.search(text) else \
        text.rstrip() + "\n\n" + body


def _dump(key: str, value, comment: str) -> str:
    body = yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=None, width=96)
    return f"# {comment}\n{body}\n"


def init(params_path: Path, files: list[Path], target: str, task: str = "auto",
         sensitive: list[str] | None = None, time_col: str | None = None,
         key: list[str] | None = None, force: bool = False,
         exclude: list[str] | None = None, include: list[str] | None = None) -> InitResult:
    """Infer, check, write params.yaml, fill the lake. Nothing is written if any check fails.
    Columns the checks flag (leakage, identifiers, constants, timestamps) and ``exclude`` go
    to ``prepare.exclude_features`` unless in ``include``; the contract keeps them."""
    raw = yaml.safe_load(params_path.read_text(encoding="utf-8")) if params_path.is_file() \
        else {}
    existing = (raw.get("schema") or {}).get("columns") or []
    if existing and not force:
        raise InitError(f"{params_path} already has a contract ({len(existing)} columns)",
                        "pass --force to replace it (the lake must be empty)")
    frames = [read_text(f, None) for f in files]
    headers = {tuple(f.columns) for f in frames}
    if len(headers) > 1:
        raise InitError("the files do not share one header", "give files of one dataset")
    name = dataset_name(files)
    sample = pd.concat([f.head(SAMPLE_ROWS) for f in frames], ignore_index=True)
    proposal = propose(sample, target, task, sensitive, key, name, exclude, include, time_col)
    markers = set(proposal.schema["missing_values"])
    unlabelled = sum(int(f[target].str.strip().isin(markers).sum()) for f in frames)
    if unlabelled:
        proposal.warnings.append(f"missing target: {unlabelled:,} rows have no target: the ETL "
                                 "will quarantine them (the model learns from labelled rows)")
    root = params_path.parent
    lake = Lake(str(root / ((raw.get("lake") or {}).get("url") or "data/lake")), root)
    if lake.exists() and lake.batches():
        raise InitError(f"the lake {lake.url} already has batches",
                        "init starts a project: use an empty lake (or `tarn lake add`)")
    parts = _batches(files, frames, time_col)
    text = params_path.read_text(encoding="utf-8") if params_path.is_file() else ""
    sens = proposal.schema["sensitive"]
    text = _replace_block(text, "schema", _dump("schema", proposal.schema,
                                                "proposed by `tarn init`; review it"))
    mitigate = bool(sens) and proposal.classification
    updates = {
        "prepare": ({**(raw.get("prepare") or {}), "test_split": "latest", "test_latest": 1,
                     "test_batches": [],  # not read with a moving window (dvc.yaml lists it)
                     "exclude_features": list(proposal.excluded)},
                    "set by `tarn init`; test_split latest: the newest batch is the test "
                    "split, and each new batch moves it forward; exclude_features: the "
                    "columns its checks flagged (they stay in the contract; `tarn init "
                    "--include COL` keeps one)"),
        "bias": ({**(raw.get("bias") or {}), "mitigation": "reweighing" if mitigate else "none",
                  "reweighing_features": sens[:1] if mitigate else [], "privileged": {}},
                 "set by `tarn init`" + ("" if mitigate or not sens else
                                         "; reweighing balances classes per group, a "
                                         "regression target has none")),
        # "": the task's own loss (logloss or rmse), the one metric valid for every task
        # fairness_features null: every sensitive feature is gated (the old single key goes)
        "promote": ({**{k: v for k, v in (raw.get("promote") or {}).items()
                        if k != "fairness_feature"}, "metric": "", "fairness_features": None},
                    "set by `tarn init`; metric \"\" = the task's loss; fairness_features "
                    "null = every sensitive feature"),
        "mlflow": ({**(raw.get("mlflow") or {}), "registered_model": f"tarn-{name}"},
                   "set by `tarn init`"),
    }
    if proposal.task != "binary":
        decides = "the most probable class" if proposal.classification else "a value"
        updates["train"] = ({**(raw.get("train") or {})},
                            f"set by `tarn init`; threshold applies to binary tasks only (a "
                            f"{proposal.task} model predicts {decides})")
    for section, (value, comment) in updates.items():
        text = _replace_block(text, section, _dump(section, value, comment))
    # the whole file must validate before anything is written
    from tarn.config import params_from_dict

    params_from_dict(yaml.safe_load(text), source=str(params_path))
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, frame in parts:
            out = Path(tmp) / f"{name.split('-', 1)[1]}.csv"  # 0002-2016/2016.csv
            frame.to_csv(out, index=False)
            written.append(lake.add([out], name))
    tmp_params = params_path.with_name(f".{params_path.name}.tmp")
    tmp_params.write_text(text, encoding="utf-8")
    tmp_params.replace(params_path)
    proposal.notes.append(f"lake: {len(written)} batches, the newest ({written[-1]}) is the "
                          "held-out test split until a newer batch arrives")
    return InitResult(proposal, written, params_path)


def _batches(files: list[Path], frames: list[pd.DataFrame],
             time_col: str | None) -> list[tuple[str, pd.DataFrame]]:
    """(name, rows) per lake batch: one per file (in time order when ``time_col``), the
    newest held out as the test split (``prepare.test_split: latest``); a single file is cut
    80/20 (by time when given). Names carry their sequence number (``0001-2015``,
    ``0002-2016``), so a file named by a year is never read as one (see
    :func:`tarn.core.windows.batch_order`)."""
    named = [(f.name.split(".")[0], df) for f, df in zip(files, frames, strict=True)]
    if time_col is not None:
        for _, df in named:
            if time_col not in df.columns:
                raise InitError(f"--time column {time_col!r} is not in the files",
                                f"use one of {list(df.columns)}")
        order = [pd.to_datetime(df[time_col], errors="coerce", format="mixed") for _, df in
                 named]
        named = [(n, df.iloc[o.argsort(kind="stable")]) for (n, df), o in
                 zip(named, order, strict=True)]
        named.sort(key=lambda x: pd.to_datetime(x[1][time_col], errors="coerce",
                                                format="mixed").min())
    if len(named) == 1:
        name, df = named[0]
        cut = int(round(len(df) * 0.8))
        if cut < 2 or cut >= len(df):
            raise InitError(f"{name}: {len(df)} rows are too few to hold out a test split",
                            "give more rows")
        named = [(name, df.iloc[:cut]), (name, df.iloc[cut:])]
    stems = [re.sub(r"[^A-Za-z0-9._-]+", "-", n).strip("-.") or "data" for n, _ in named]
    return [(f"{i:04d}-{stem}", df) for i, (stem, (_, df)) in
            enumerate(zip(stems, named, strict=True), start=1)]
