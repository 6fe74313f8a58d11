"""The ``tarn`` command line: one command per stage and per lifecycle action, kept thin.

Every command reads params.yaml once (``--params``), calls a stage's ``run`` and prints a
summary. Errors a user can fix print as one line with what to do, and exit with status 1.

Imports are lazy here on purpose, unlike the rest of tarn: each command imports its
implementation (stages, lifecycle, serve, edge) inside its function, and the configuration
(pydantic, ~0.3 s) is loaded when a command first reads it, so `tarn --help` starts with
typer and rich only (<= 0.5 s, bench/bench_cli.py) and a command pays only for what it runs.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from typer.exceptions import TyperException

from tarn.core.progress import bars, console, steps
from tarn.errors import TarnError, first_line

if TYPE_CHECKING:
    from tarn.config import Params

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# An unreachable tracking server should fail in seconds, not after MLflow's 2-minute backoff.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
# tarn loads models with skops and its own allow-list only (tarn.core.model.load_trusted);
# should anything reach MLflow's loader, it must not unpickle
os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # tarn shows its own

app = typer.Typer(
    rich_markup_mode=None,  # plain click help: paragraphs reflowed to the terminal width
    help="tarn: from a data lake to a deployed, monitored, retrained model.\n\n"
    "Stages (run them all with `dvc repro`): snapshot -> etl -> prepare -> tune -> train -> "
    "evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _table(title: str, columns: list[str], right: tuple[str, ...] = ()) -> Table:
    """A table that wraps long values instead of cutting them (``unknown_categ...``)."""
    t = Table(title=title)
    for col in columns:
        t.add_column(col, justify="right" if col in right else "left", overflow="fold")
    return t


def _group(help_text: str) -> typer.Typer:
    return typer.Typer(rich_markup_mode=None, help=help_text, no_args_is_help=True)


lake_app = _group("Inspect and feed the data lake (raw batches).")
app.add_typer(lake_app, name="lake")

ParamsOpt = Annotated[
    Path, typer.Option("--params", "-p", help="params.yaml to use; its folder is the project root.")
]


class _Ctx:
    def __init__(self, params_path: Path) -> None:
        self.params_path = params_path.resolve()
        self.root = self.params_path.parent
        self._params: Params | None = None

    @property
    def params(self) -> Params:
        if self._params is None:
            from tarn.config import load_params  # pydantic: not needed by --help

            self._params = load_params(self.params_path)
        return self._params


_state: dict[str, _Ctx] = {}


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"tarn {version('tarn')}")
        raise typer.Exit()


@app.callback()
def _main(
    params: ParamsOpt = Path("params.yaml"),
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Print tarn's version and exit.")] = False,
) -> None:
    _state["ctx"] = _Ctx(params)


def ctx() -> _Ctx:
    return _state.get("ctx") or _Ctx(Path("params.yaml"))


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn TarnError into a one-line message and exit status 1 (no traceback); any other
    exception into one line plus the file its full traceback was written to."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TarnError as e:
            console.print(f"[bold red]error:[/] {e.message}", markup=True, highlight=False)
            if e.hint:
                console.print(f"[yellow]fix:[/] {e.hint}", highlight=False)
            raise typer.Exit(1) from None
        except (typer.Exit, typer.Abort, TyperException, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - the last line of defence: no raw traceback
            where = _write_trace(e)
            console.print(f"[bold red]unexpected error:[/] {type(e).__name__}: "
                          f"{first_line(e)}", highlight=False)
            console.print(f"[yellow]full traceback:[/] {where} (please attach it to a bug "
                          "report)", highlight=False)
            raise typer.Exit(1) from None

    return wrapper


def _write_trace(e: BaseException) -> Path:
    import tempfile
    import time
    import traceback

    text = "".join(traceback.format_exception(e))
    name = f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    for folder in (ctx().root / ".tarn" / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text, encoding="utf-8")
            return folder / name
        except OSError:
            continue
    return Path("<not written>")


# ------------------------------------------------------------------------------------ init
@app.command()
@friendly
def init(
    files: Annotated[list[Path], typer.Argument(help="CSV, JSON Lines or Parquet files.")],
    target: Annotated[str, typer.Option(help="The column to predict.")],
    task: Annotated[str, typer.Option(help=(
        "auto (from the target: 2 values binary; labels or at most 20 distinct integers "
        "multiclass; other numbers regression), binary, multiclass or regression."))] = "auto",
    sensitive: Annotated[list[str] | None, typer.Option(
        help="A column to measure bias on (repeatable).")] = None,
    time: Annotated[str | None, typer.Option(
        help="A time column: batches (and the held-out test rows) follow its order.")] = None,
    key: Annotated[list[str] | None, typer.Option(
        help="A column that identifies a row, for de-duplication (repeatable).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing contract.")]
    = False,
    exclude: Annotated[list[str] | None, typer.Option(
        help="A column the model must not see (repeatable); it stays in the contract.")]
    = None,
    include: Annotated[list[str] | None, typer.Option(
        help="A column the checks would exclude, kept as a feature (repeatable).")] = None,
) -> None:
    """Start a project on your own data: read a sample of the files, propose the schema
    contract (types, missing markers, categories, ranges with a margin, snake_case names
    with the raw headers as aliases), write it into params.yaml, and add the files to the
    lake as its first batches (the latest one held out for testing). Prints every decision,
    then the checks before training: likely leakage (a column that alone predicts the target,
    with its score), identifiers, constant and near-constant columns, timestamps, integer
    codes, rows without a target. Flagged columns are excluded from the features
    (prepare.exclude_features) unless --include names them. Then `make run` trains on it."""
    from tarn.lifecycle.init import init as start

    c = ctx()
    res = start(c.params_path, files, target, task, sensitive, time, key, force, exclude,
                include)
    for note in res.proposal.notes:
        console.print(f"  {note}", highlight=False)
    if res.proposal.warnings:
        console.print("checks before training:", highlight=False)
    for w in res.proposal.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    excluded = res.proposal.excluded
    if excluded:
        console.print(f"excluded from the features (prepare.exclude_features; kept in the "
                      f"contract): {', '.join(f'{c} ({why})' for c, why in excluded.items())}"
                      "; `--include COL` keeps one", highlight=False)
    console.print(f"wrote the contract to {res.params_path}; lake batches: "
                  f"{', '.join(res.batches)}. Next: review params.yaml, then `make run`.",
                  highlight=False)


# ------------------------------------------------------------------------------------ lake
@lake_app.command("seed")
@friendly
def lake_seed(
    if_empty: Annotated[bool, typer.Option(
        "--if-empty", help="Do nothing if the lake already has batches.")]
    = False,
) -> None:
    """Seed the lake with the bundled demo dataset (raw UCI Adult) as ordered batches.

    Seeded batches: adult.data first, adult.test the latest ones, raw (`?`, stray spaces,
    `>50K.` labels), so the default `prepare.test_batches` reproduces the seed's official split.
    """
    from tarn.core.lake import Lake
    from tarn.datasets import seed_adult

    c = ctx()
    lake = Lake.from_config(c.params.lake, c.root)
    seed = c.params.lake.seed
    names = seed_adult(lake, seed.train_batches, seed.test_batches, if_empty)
    if names is None:
        console.print(f"lake {lake.url} already has batches; left as is")
    else:
        console.print(f"seeded {len(names)} batches into {lake.url}: {', '.join(names)}")


@lake_app.command("add")
@friendly
def lake_add(
    files: Annotated[list[Path], typer.Argument(help="CSV, JSON Lines or Parquet files.")],
    batch: Annotated[str, typer.Option(help="Batch name; a sequence number is prefixed.")],
) -> None:
    """Add files to the lake as a new (immutable) batch.

    Each file's header is checked against the schema contract (params.yaml `schema`) first;
    the batch appears whole or not at all."""
    from tarn.core.ingest import check_header
    from tarn.core.lake import Lake

    c = ctx()
    schema = c.params.schema
    name = Lake.from_config(c.params.lake, c.root).add(
        files, batch, check_file=lambda f: check_header(f, schema))
    console.print(f"added batch {name} ({len(files)} file(s)); `tarn monitor` shows its drift, "
                  "`tarn retrain` trains on it")
    if schema.time_key:
        for line in _time_overlaps(c.params, c.root, name):
            console.print(f"[yellow]warning:[/] {line}: batches should follow time (a moving "
                          "test window on this batch is not forward in time)")


def _time_overlaps(params, root: Path, batch: str) -> list[str]:
    """The earlier batches whose times overlap ``batch``'s (the curated table's times for
    them when the ETL has run, else the lake read through the contract)."""
    import pandas as pd

    from tarn.core import windows
    from tarn.core.catalog import CURATED
    from tarn.core.ingest import read_batches
    from tarn.core.lake import Lake

    key = params.schema.time_key
    new, _ = read_batches(params, root, [batch])
    curated = root / params.paths.curated / CURATED
    if curated.is_file():
        old = pd.read_parquet(curated, columns=["batch", key])
    else:
        names = [b.name for b in Lake.from_config(params.lake, root).batches(params.lake.include)
                 if b.name != batch]
        old = read_batches(params, root, names)[0] if names else pd.DataFrame()
    frame = pd.concat([old, new[["batch", key]]], ignore_index=True) if len(old) else new
    times = pd.to_datetime(frame[key], errors="coerce", format="mixed", utc=True)
    ranges = {str(b): (t.min().isoformat(), t.max().isoformat())
              for b, t in times.groupby(frame["batch"].astype(str)) if t.notna().any()}
    return windows.overlaps(batch, ranges)


@lake_app.command("retire")
@friendly
def lake_retire(
    batch: Annotated[str, typer.Argument(help="The batch to take out (as `tarn lake list` "
                                              "names it).")],
    reason: Annotated[str, typer.Option(help="Why: recorded with the retirement.")],
) -> None:
    """Take a bad batch out of every later snapshot, monitoring and retraining.

    The lake stays append-only: the batch's files are kept, and `_retired/<batch>.json` records
    the reason, when and by whom. `dvc repro` then rebuilds without it."""
    from tarn.core.lake import Lake

    c = ctx()
    rec = Lake.from_config(c.params.lake, c.root).retire(batch, reason)
    console.print(f"retired batch {batch} ({rec['reason']}); run `dvc repro` to rebuild "
                  "without it")


@lake_app.command("list")
@friendly
def lake_list() -> None:
    """Show the lake's batches in order, with files, rows and bytes."""
    from tarn.core.lake import Lake

    c = ctx()
    lake = Lake.from_config(c.params.lake, c.root)
    t = _table(f"lake {lake.url}", ["batch", "files", "rows", "bytes"],
               right=("files", "rows", "bytes"))
    rows = lake.inventory()
    for name, files, records, size in rows:
        t.add_row(name, str(files), f"{records:,}", f"{size:,}")
    t.add_row("[bold]total", "", f"[bold]{sum(r[2] for r in rows):,}",
              f"[bold]{sum(r[3] for r in rows):,}")
    console.print(t)
    for name, rec in lake.retired().items():
        console.print(f"retired (not read): {name}: {rec.get('reason', '')} "
                      f"({rec.get('retired_at', '')})")


@lake_app.command("simulate")
@friendly
def lake_simulate(
    drift: Annotated[str, typer.Option(help="none, covariate, prior or new-category.")],
    rows: Annotated[int, typer.Option(help="Rows in the new batch.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 42,
    columns: Annotated[str, typer.Option(
        help="Comma-separated columns to shift (covariate: default the first two numeric "
             "features; new-category: one column, default the first with a category "
             "list).")] = "",
    strength: Annotated[float, typer.Option(
        help="Covariate (and regression prior) tilt; negative shifts the other way, 0 is "
             "none.")] = 1.0,
    positive_rate: Annotated[float, typer.Option(
        help="Prior (classification): share of class index 1, the positive class of a "
             "binary task.")] = 0.5,
    share: Annotated[float, typer.Option(
        help="New-category: share of the column's values replaced.")] = 0.3,
    batch: Annotated[str, typer.Option(
        help="Batch name (default sim-<drift>); a sequence number is prefixed.")] = "",
    source: Annotated[str, typer.Option(
        help="Curated rows to draw from: train (default) or test batches.")] = "train",
) -> None:
    """Write a realistic new batch, drawn from the project's curated rows, with a chosen drift.

    none: a plain random sample. covariate: rows resampled with weights that tilt the chosen
    columns (numeric: towards higher values; categorical: towards the rarest half of values),
    labels kept, so P(y|x) is unchanged. prior: the share of class index 1 becomes
    --positive-rate (regression: rows tilted towards higher targets by --strength).
    new-category: --share of one column's values become a category the schema does not know
    (the ETL quarantines those rows). The batch is a raw CSV with the contract's column names
    and raw labels. Rows come from the training batches by default (the held-out test batches,
    prepare.test_batches, would leak into retraining); with schema.key each row gets a new key,
    so rows are new, not duplicates.
    """
    from tarn.lifecycle.simulate import simulate

    c = ctx()
    cols = [x.strip() for x in columns.split(",") if x.strip()] or None
    name, b = simulate(c.params, c.root, drift, rows, seed, cols, strength, positive_rate,
                       share, batch or None, source)
    console.print(f"wrote batch {name}: {b.summary()}")


# ------------------------------------------------------------------------------------ stages
@app.command()
@friendly
def snapshot() -> None:
    """Freeze the lake's batches into data/snapshot with a sha256 manifest (DVC output)."""
    from tarn.stages import snapshot as stage

    c = ctx()
    res = stage.run(c.params, c.root)
    console.print(f"snapshot {res.manifest_hash[:12]}: {res.n_files} files, {res.n_rows:,} rows "
                  f"-> {res.path.relative_to(c.root)}")


@app.command()
@friendly
def etl() -> None:
    """Apply the schema contract: curated table, quarantine (with reasons), ETL report."""
    from tarn.stages import etl as stage

    c = ctx()
    with bars() as progress:
        res = stage.run(c.params, c.root, progress)
    from tarn.core.reports import EtlCounts, EtlReport

    report = EtlReport.from_json(res.report)
    counts = EtlCounts.COLUMNS  # read, written, rejected, duplicates
    t = _table("ETL report (read = written + rejected + duplicates)",
               ["batch", *counts, "rejected by reason"], right=counts)
    for name, b in [*report.batches.items(), ("total", report.total)]:
        reasons = ", ".join(f"{k}: {v}" for k, v in b.rejected_by_reason.items())
        t.add_row(name, *(f"{getattr(b, k):,}" for k in counts), reasons)
    console.print(t)
    console.print(f"curated: {res.curated}; quarantine (reason, file, line, raw record): "
                  f"{res.quarantine}", highlight=False)


@app.command()
@friendly
def prepare() -> None:
    """Split train/valid/test, write the data bias report and reweighing weights."""
    from tarn.stages import prepare as stage

    c = ctx()
    res = stage.run(c.params, c.root)
    console.print("rows: " + ", ".join(f"{k} {v:,}" for k, v in res.rows.items()))
    from tarn.core.reports import BIAS_HTML, BiasReport

    figures = BiasReport.from_detail(res.bias)
    for feat, f in figures.train.items():
        after = figures.train_reweighed[feat].disparate_impact_min
        if f.disparate_impact_min is None or after is None:
            if f.mean_gap is not None:  # regression: the gap between group means
                console.print(f"{feat}: gap between group target means {f.mean_gap:.3f}")
            continue
        console.print(f"{feat}: disparate impact (min/max) {f.disparate_impact_min:.3f}, "
                      f"after reweighing {after:.3f}")
    console.print(f"report: {c.params.paths.reports}/{BIAS_HTML}")


@app.command()
@friendly
def tune() -> None:
    """Hyperopt TPE search; one MLflow parent run, a child run per trial; best params out."""
    from tarn.stages import tune as stage

    c = ctx()
    with bars() as progress:
        res = stage.run(c.params, c.root, progress)
    b = res.best
    loss = b.loss  # the figure the search minimized (val_logloss|val_rmse)
    auc = f"AUC {b.figures['val_auc']:.4f}, " if "val_auc" in b.figures else ""
    rungs = " + ".join(f"{r['fits']} at {r['rows']:,} rows" for r in b.fits_per_rung
                       if r["fits"])
    why = ("the time budget ran out" if b.stop_reason == "time budget"
           else f"all {b.n_trials} configurations (tune.max_evals) were tried")
    console.print(f"{b.n_trials} configurations, {b.n_fits} fits ({rungs}; "
                  f"{b.n_failed} failed, {b.n_stopped_early} stopped behind the others) "
                  f"in {b.duration_s:.1f} s of a {b.budget_s:g} s budget; stopped because "
                  f"{why}", highlight=False)
    console.print(f"best: trial {b.trial} on {b.rows:,} rows: {loss.replace('_', ' ')} "
                  f"{b.best_loss:.4f}, {auc}{b.rounds} rounds", highlight=False)
    if b.n_capped:
        console.print(f"warning: {b.n_capped} fit(s) ended at their round cap "
                      "(tune.n_estimators), not by early stopping", highlight=False)
    if b.reference_verdict:
        console.print(b.reference_verdict, highlight=False)
    console.print(f"MLflow parent run {res.parent_run_id}")


@app.command()
@friendly
def train() -> None:
    """Refit the best configuration on train+valid, log the Pipeline, register a version."""
    from tarn.stages import train as stage

    c = ctx()
    with bars() as progress, steps("training") as step:
        res = stage.run(c.params, c.root, progress, step)
    from tarn.core.tags import Lineage

    lineage = Lineage.from_tags(res.tags)
    console.print(f"registered {c.params.mlflow.registered_model} version {res.version} "
                  f"(run {res.run_id}, {lineage.train_rows} rows, "
                  f"mitigation {lineage.mitigation})")
    if res.mitigation_reason:  # reweighing kept or not, from the check on validation
        console.print(res.mitigation_reason, highlight=False)


@app.command()
@friendly
def evaluate() -> None:
    """Test metrics, fairness with vs without mitigation, plots, Evidently reports."""
    c = ctx()
    with steps("evaluating on the test split") as step:
        step("loading the evaluation code (sklearn, matplotlib)")
        from tarn.stages import evaluate as stage

        res = stage.run(c.params, c.root, step)
    from tarn.core.reports import EVALUATION_HTML

    m = res.metrics
    if "roc_auc" not in m:  # multiclass, regression: the task's own figures
        from tarn.config import METRICS_BY_TASK

        names = dict.fromkeys(k for ks in METRICS_BY_TASK.values() for k in ks)
        console.print("test: " + ", ".join(f"{k} {m[k]:.4g}" for k in names if k in m))
        console.print(f"report: {c.root / c.params.paths.reports / EVALUATION_HTML}")
        return
    console.print(f"test: logloss {m['logloss']:.4f}, AUC {m['roc_auc']:.4f}, accuracy "
                  f"{m['accuracy']:.4f}, F1 {m['f1']:.4f}, Brier {m['brier']:.4f}")
    from tarn.core.bias import signed_change

    changes = res.comparison.get("fairness_changes", {})
    for f in c.params.schema.sensitive:
        dpd = m[f"{f}_demographic_parity_difference"]
        console.print(f"{f}: demographic parity difference {dpd:.4f}"
                      + (f"; DPD without -> with reweighing: {changes[f]}"
                         if changes.get(f) else ""), highlight=False)
    w, wo = (res.comparison[k]["quality"]["roc_auc"] for k in ("with_mitigation",
                                                                "without_mitigation"))
    if not c.params.bias.reweighing_features:
        console.print("no bias mitigation (no bias.reweighing_features declared)")
    else:
        console.print("test AUC without -> with reweighing: "
                      + signed_change(wo, w, lower_is_better=False), highlight=False)
    decision = res.comparison.get("mitigation_decision")
    if decision:
        console.print(f"registered: the {'reweighed' if decision['applied'] else 'unmitigated'}"
                      f" model ({decision['reason']})", highlight=False)
    console.print(f"report: {c.root / c.params.paths.reports / EVALUATION_HTML}")


@app.command()
@friendly
def report() -> None:
    """The key figures of the last pipeline run (ETL accounting, splits, data bias, tuning,
    test quality and fairness) as small tables; `dvc metrics diff` compares runs."""
    from tarn.lifecycle.report import report as gather

    c = ctx()
    sections, missing = gather(c.params, c.root)
    for s in sections:
        t = _table(s.title, s.columns)
        for row in s.rows:
            t.add_row(*row)
        console.print(t)
    if missing:
        console.print(f"not found in {c.params.paths.reports}: {', '.join(missing)} (run "
                      "`dvc repro`)", highlight=False)


# ------------------------------------------------------------------------------ lifecycle
def _site(c: _Ctx, server: str = "", key: bool = True):
    """Where the deployment targets live, read here at the edge: the admin secret (from the
    environment, to nudge the server) and the deployment key (``serve.deploy_key``, created
    0600 on first use; ``key=False`` for commands that only read)."""
    from tarn.core.signing import project_key
    from tarn.core.targets import Site

    return Site(c.params, c.root, server, os.environ.get("TARN_ADMIN_SECRET", ""),
                project_key(c.params, c.root) if key else None)


def _follow(c: _Ctx, version: str) -> None:
    """Production moved to ``version``: every deployment target follows it (the server is
    nudged and deploys at once; see tarn.lifecycle.targets), one line each."""
    from tarn.lifecycle.targets import follow

    with steps("deploying") as step:
        step(f"telling the deployment targets that version {version} is production")
        lines = follow(_site(c, key=False), version)
    for line in lines:
        console.print(line)


@app.command()
@friendly
def promote(
    version: Annotated[str | None, typer.Option(help="Version to promote.")] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Promote the newest version.")]
    = False,
    force: Annotated[bool, typer.Option("--force", help="Skip the gates (needs --reason).")]
    = False,
    reason: Annotated[str, typer.Option(help="Why; recorded on the version.")] = "",
) -> None:
    """Move a registered version to production if it passes its gates; that deploys it.

    Gates (params `promote`): the primary metric on the held-out test split is not worse than
    the champion's by more than the tolerance, the fairness gap on each gated feature
    (`promote.fairness_features`, by default every sensitive feature) is under its ceiling, and
    the input schema is compatible. On pass, the alias `production` moves (the
    stage Production follows) and the running server and the client bundle follow it.
    """
    c = ctx()
    if (version is None) == (not latest):
        raise typer.BadParameter("give exactly one of --version N or --latest")
    with steps("promoting") as step:
        step("loading MLflow")  # the imports take seconds: a line first
        from tarn.core.registry import PromotionRefused
        from tarn.lifecycle import promote as lifecycle

        try:
            p = lifecycle.promote(c.params, c.root, version, latest=latest, force=force,
                                  reason=reason, step=step, key=_site(c).key)
        except PromotionRefused as e:
            refused: PromotionRefused | None = e
        else:
            refused = None
    if refused is not None:
        console.print(f"[bold red]refused:[/] {refused.message}")
        console.print(f"[yellow]fix:[/] {refused.hint}")
        raise typer.Exit(2)
    g = p.gates
    figures = (f"{g.metric} {g.candidate_metric:.4f} (champion "
               f"{'none' if g.champion_metric is None else f'{g.champion_metric:.4f}'}), "
               + (g.fairness_summary() if g.fairness_features else
                  "no fairness gate (no schema.sensitive feature, or "
                  "promote.fairness_features: [])")
               if g else "gates skipped (--force)")
    console.print(f"version {p.version} is production (was {p.previous or 'none'}): {figures}")
    if g and g.window:
        console.print(f"  measured on {g.window}")
    console.print(f"  signed the {'forced' if p.forced else 'passed'} verdict with the "
                  f"deployment key ({c.params.serve.deploy_key}): servers deploy it")
    _follow(c, p.version)


@app.command()
@friendly
def rollback(reason: Annotated[str, typer.Option(help="Why; recorded.")] = "") -> None:
    """Put the previous production version back (recorded like a forced promotion)."""
    c = ctx()
    with steps("rolling back") as step:
        step("loading MLflow")
        from tarn.lifecycle import promote as lifecycle

        p = lifecycle.rollback(c.params, c.root, reason, step=step)
    console.print(f"version {p.version} is production again (was {p.previous}; its "
                  "signature from when it was promoted is what servers check)")
    _follow(c, p.version)


@app.command()
@friendly
def status(
    server: Annotated[str, typer.Option(help=(
        "Backend URL to ask what it serves (default: serve.notify_url if set, else the "
        "address the running `tarn serve` recorded, else serve.host/serve.port)."))] = "",
) -> None:
    """Show the production version, its figures, and what is deployed where."""
    from tarn.lifecycle.status import status as gather

    c = ctx()
    s = gather(c.params, c.root, server)

    def fig(x: float | None) -> str:
        return "nan" if x is None else f"{x:.4f}"

    t = _table(f"{s.model}: versions", ["version", "stage", "aliases", "test figures",
                                         "promoted", "note"])
    for v in s.versions:
        t.add_row(v.version, v.stage, ",".join(v.aliases),
                  ", ".join(f"{m} {fig(x)}" for m, x in v.figures.items()) or "nan",
                  v.promoted_at, v.note)
    console.print(t)
    console.print(f"production: version {s.production or 'none'} (alias {s.alias!r})")
    for h in s.targets:  # every deployment target: what it holds
        if not h.reachable:
            console.print(f"{h.target} {h.where}: not reachable ({h.problem})", highlight=False)
            continue
        console.print(f"{h.target} {h.where}: version {h.version or 'none'}"
                      + (f" ({h.detail})" if h.detail else "")
                      + (f", last error: {h.error or 'none'}" if h.target == "backend" else ""),
                      highlight=False)
    for w in s.warnings:
        console.print(f"[yellow]warning:[/] {w}")


@app.command()
@friendly
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default serve.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default serve.port).")] = None,
    workers: Annotated[int | None, typer.Option(
        min=1, max=64, help="Server processes (default serve.workers).")] = None,
) -> None:
    """Run the REST backend; it serves whatever version holds the production alias.

    With several workers, each process follows the alias and swaps on its own; worker 0
    publishes the client bundle. Secrets come from the environment: TARN_ADMIN_SECRET enables
    POST /admin/reconcile, TARN_WEBHOOK_SECRET enables the MLflow registry webhook at POST
    /webhooks/mlflow. Where it listens is recorded in .tarn/server.json while it runs, so
    `tarn promote`, `retrain`, `rollback` and `status` find it even with --port.
    """
    from tarn.core import address
    from tarn.serve.server import run

    c = ctx()
    h, p = host or c.params.serve.host, port or c.params.serve.port
    n = workers or c.params.serve.workers
    console.print(f"serving {c.params.mlflow.registered_model}@{c.params.promote.alias} on "
                  f"http://{h}:{p} with {n} worker(s) (client page: /client)")
    address.record(c.root, h, p)
    try:
        run(c.params, c.root, h, p, os.environ.get("TARN_ADMIN_SECRET", ""),
            os.environ.get("TARN_WEBHOOK_SECRET", ""), workers=n)
    finally:
        address.clear(c.root)


@app.command()
@friendly
def webhook(
    url: Annotated[str, typer.Argument(help="The server's webhook URL, e.g. "
                                            "http://host:8000/webhooks/mlflow")],
) -> None:
    """Register an MLflow registry webhook (alias set -> deploy) signed with
    TARN_WEBHOOK_SECRET. Needs a remote tracking server (MLFLOW_TRACKING_URI)."""
    from tarn.lifecycle.promote import registry

    c = ctx()
    hook_id = registry(c.params, c.root).register_webhook(
        url, os.environ.get("TARN_WEBHOOK_SECRET", ""))
    console.print(f"webhook {hook_id}: model_version_alias.created -> {url}")


@app.command()
@friendly
def monitor(
    source: Annotated[list[str], typer.Option(help="lake and/or log (repeatable).")] = [  # noqa: B006
        "lake", "log"],
) -> None:
    """Evidently drift reports on new lake batches and the prediction log vs the training
    reference, logged to MLflow; prints the decision: none, incremental or full."""
    c = ctx()
    bad = set(source) - {"lake", "log"}
    if bad:
        raise typer.BadParameter(f"unknown source(s) {sorted(bad)}: use lake and/or log")
    with steps("monitoring") as step:
        step("loading the monitoring code (Evidently, MLflow)")
        from tarn.lifecycle import monitor as stage

        res = stage.run(c.params, c.root, tuple(source), step)
    _print_monitor(res)


def _print_monitor(res) -> None:
    """The drift table (a row per source, then one per lake batch when several were read),
    the decision, and where the pages are. A sample under monitor.min_rows shows its verdict
    ("not enough data ...") instead of figures."""
    t = _table(f"drift vs the training reference (production version {res.production})",
               ["source", "rows", "drifted features", "share", "prediction drift", "loss",
                "notes"])

    def measured(verdict: str) -> bool:
        return bool(verdict) and not verdict.startswith("not enough data")

    for s in res.sources:
        ok = measured(s.verdict)
        t.add_row(s.name, f"{s.rows:,}",
                  (", ".join(s.drifted) or "-") if ok or not s.verdict else s.verdict,
                  f"{s.drift_share:.0%}" if ok else "-",
                  ("yes" if s.prediction_drift else "no") if ok else "-",
                  f"{s.loss} {s.quality[s.loss]:.4g}" if s.quality else "-",
                  "; ".join([s.schema_change, *s.problems, *(
                      [f"within sampling noise at {s.rows:,} rows: " + ", ".join(
                          f"{c} (noise {f:.3g})" for c, f in s.within_noise.items())]
                      if s.within_noise else [])]).strip("; "))
        for b in s.batches:
            ok = measured(b.verdict)
            t.add_row(f"  {s.name} {b.name}", f"{b.rows:,}",
                      (", ".join(b.drifted) or "-") if ok else b.verdict,
                      f"{b.drift_share:.0%}" if ok else "-",
                      ("yes" if b.prediction_drifted else "no") if ok else "-", "",
                      (f"within sampling noise: {', '.join(b.within_noise)}"
                       if b.within_noise else ""))
    console.print(t)
    console.print(f"decision: [bold]{res.decision.mode}[/] - " + "; ".join(res.decision.reasons))
    from tarn.lifecycle.monitor import attribution_summary

    for s in res.sources:
        if line := attribution_summary(s):
            console.print(line, highlight=False)
        if s.html:
            console.print(f"{s.name} drift report: {s.html}", highlight=False)
        elif s.verdict and not measured(s.verdict):
            console.print(f"{s.name}: {s.verdict}: no drift report written", highlight=False)


def _print_comparison(res) -> None:
    """The old-vs-new table, the same for both retraining modes: the task's figures on the
    test split and on the new data, and what each was measured on."""
    from tarn.config import METRICS_BY_TASK

    if not res.metrics:
        console.print(f"no old-vs-new figures: versions {res.parent or 'none'} and "
                      f"{res.version} predict different tasks (or there is no old version)",
                      highlight=False)
        return
    windows = getattr(res, "windows", None) or {}
    default = {"test": "the test split",
               "new_data": ("the new batches, which it trained on (in-sample for the new "
                            "model)" if res.mode == "full" else
                            "the new data's held-out rows")}
    t = _table(f"old vs new model (version {res.parent} vs {res.version})",
               ["data", "metric", "old", "new", "change"], right=("old", "new", "change"))
    names = dict.fromkeys(m for ms in METRICS_BY_TASK.values() for m in ms)
    for data in ("test", "new_data"):
        if data not in res.metrics["old"]:
            continue
        old, new = res.metrics["old"][data], res.metrics["new"][data]
        label = f"{data.replace('_', ' ')}: {windows.get(data) or default[data]}"
        for m in (m for m in names if m in old and m in new):  # the task's own
            t.add_row(label, m, f"{old[m]:.4g}", f"{new[m]:.4g}", f"{new[m] - old[m]:+.4g}")
            label = ""
    console.print(t)


@app.command()
@friendly
def retrain(
    mode: Annotated[str, typer.Option(help="auto (monitor decides), incremental or full.")]
    = "auto",
) -> None:
    """Monitor, decide, retrain (incremental: continue boosting the production model on the
    new batches; full: dvc repro on a fresh snapshot), then promote through the gates."""
    c = ctx()
    if mode not in ("auto", "incremental", "full"):
        raise typer.BadParameter("mode must be auto, incremental or full")
    with bars(transient=True) as progress, steps("retraining") as step:
        step("loading the retraining code (XGBoost, Evidently, MLflow)")
        from tarn.lifecycle import retrain as stage

        mon, res = stage.run(c.params, c.root, mode, step, progress)
    _print_monitor(mon)
    if res is None:
        console.print("nothing to retrain")
        return
    console.print(f"{res.mode} retraining from version {res.parent or 'none'} -> version "
                  f"{res.version} in {res.duration_s:.1f} s ({res.reason})", highlight=False)
    _print_comparison(res)
    if res.promoted:
        console.print(f"version {res.version} is production")
        _follow(c, res.version)
    else:
        console.print(f"[bold red]not promoted:[/] {res.refused}")
        raise typer.Exit(2)


@app.command()
@friendly
def reset(yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False) -> None:
    """Delete the project's generated state: DVC outputs, reports, published bundles, the
    prediction log and a local MLflow store. The lake and git-tracked files stay; a remote
    tracking server is not touched. Lists everything first and asks, unless --yes."""
    from tarn.lifecycle.reset import generated_state, remove

    c = ctx()
    targets = generated_state(c.params, c.root)
    if not targets:
        console.print("nothing to delete: no generated state here")
        return
    for tg in targets:
        console.print(f"  {tg.path.relative_to(c.root)}  ({tg.what})", highlight=False)
    if not yes and not typer.confirm(f"delete these {len(targets)} paths?", err=True):
        raise typer.Exit(1)
    remove(targets)
    console.print(f"deleted {len(targets)} paths; `make run` rebuilds the pipeline")


log_app = _group("The server's prediction log (what monitoring reads).")
app.add_typer(log_app, name="log")


@log_app.command("retire")
@friendly
def log_retire(yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False) -> None:
    """Move the logged predictions aside (into a retired-<time> folder beside them) so
    monitoring judges only traffic from now on. Nothing is deleted."""
    from tarn.lifecycle.reset import retire_log

    c = ctx()
    where = c.root / c.params.serve.prediction_log
    if not yes and not typer.confirm(f"move the files of {where} aside?", err=True):
        raise typer.Exit(1)
    dest, n = retire_log(c.params, c.root)
    console.print(f"moved {n} files to {dest}" if dest else f"{where}: nothing to retire")


edge_app = _group("The client-side ONNX bundle.")
app.add_typer(edge_app, name="edge")
bundle_app = _group("Publish the client bundle (browser page, edge devices).")
app.add_typer(bundle_app, name="bundle")


@bundle_app.command("publish")
@friendly
def bundle_publish(
    version: Annotated[str | None, typer.Option(help="Version (default: production).")] = None,
) -> None:
    """Export the production version to ONNX, prove parity on the held-out test rows, and
    make it the bundle clients get. A running server does this itself when it deploys; this
    command is for when none runs."""
    c = ctx()
    with steps("publishing the client bundle") as step:
        step("loading the export code (ONNX, MLflow)")
        from tarn.lifecycle.publish import publish

        b = publish(c.params, c.root, version, step, key=_site(c).key)
    console.print(f"published {b.path} (parity: max |diff| {b.parity.max_abs_diff:.2g} on "
                  f"{b.parity.rows:,} rows)")


@edge_app.command("predict")
@friendly
def edge_predict(
    bundle: Annotated[Path, typer.Argument(help="A published bundle folder.")],
    file: Annotated[Path, typer.Argument(help="CSV with a header row of input columns (the "
                                              "contract's names or aliases, as in the lake).")],
    unknown_values: Annotated[str, typer.Option(
        help="A value the contract does not allow (unknown category, number out of range): "
             "refuse (the file, naming line and column) or flag (score it, list it in a "
             "violations column).")] = "refuse",
) -> None:
    """Score a CSV with a bundle, using only onnxruntime (no MLflow, no XGBoost)."""
    from tarn.edge.runner import main as edge_main

    if unknown_values not in ("refuse", "flag"):
        raise typer.BadParameter("use refuse or flag", param_hint="--unknown-values")
    raise typer.Exit(edge_main([str(bundle), str(file), "--unknown-values", unknown_values]))


def main() -> None:
    """The ``tarn`` command. A command that has finished leaves through ``os._exit``, after
    the exit steps that matter (non-daemon threads joined, with concurrent.futures' pools;
    atexit hooks: logging, MLflow, Dask, multiprocessing; streams flushed) but before the
    interpreter's teardown: there Arrow's native thread pool can abort a process whose work
    is done ("terminate called without an active exception", exit -6: apache/arrow#34314),
    which fails `dvc repro`. Seen once in six suite runs, on `tarn snapshot` under load.
    An exception that escapes the CLI keeps Python's own exit, traceback and all."""
    import atexit
    import sys
    import threading

    try:
        app(prog_name="tarn")
        code: object = 0  # typer's standalone mode always ends in SystemExit
    except SystemExit as done:
        code = done.code
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, status 1, as Python does
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # what Py_FinalizeEx does first: wait for non-daemon threads
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be written anyway
            pass
    os._exit(code)
