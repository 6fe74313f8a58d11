"""The ``tarn`` command line: one command per stage and per lifecycle action, kept thin.

Every command reads params.yaml once (``--params``), calls a stage's ``run`` and prints a
summary. Errors a user can fix print as one line with what to do, and exit with status 1.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tarn.config import Params, load_params
from tarn.errors import TarnError
from tarn.ui import bars, console

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# An unreachable tracking server should fail in seconds, not after MLflow's 2-minute backoff.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

app = typer.Typer(
    help="tarn: from a data lake to a deployed, monitored, retrained model.\n\n"
    "Stages (run them all with `dvc repro`): snapshot -> etl -> prepare -> tune -> train -> "
    "evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
lake_app = typer.Typer(help="Inspect and feed the data lake (raw batches).", no_args_is_help=True)
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
            self._params = load_params(self.params_path)
        return self._params


_state: dict[str, _Ctx] = {}


@app.callback()
def _main(params: ParamsOpt = Path("params.yaml")) -> None:
    _state["ctx"] = _Ctx(params)


def ctx() -> _Ctx:
    return _state.get("ctx") or _Ctx(Path("params.yaml"))


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn TarnError into a one-line message and exit status 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TarnError as e:
            console.print(f"[bold red]error:[/] {e.message}")
            if e.hint:
                console.print(f"[yellow]fix:[/] {e.hint}")
            raise typer.Exit(1) from None

    return wrapper


# ------------------------------------------------------------------------------------ lake
@lake_app.command("seed")
@friendly
def lake_seed(
    if_empty: Annotated[bool, typer.Option(help="Do nothing if the lake already has batches.")]
    = False,
) -> None:
    """Write the bundled raw UCI Adult data into the lake as ordered batches.

    adult.data becomes the first batches and adult.test the latest ones, raw (`?`, stray spaces,
    `>50K.` labels), so the default `prepare.test_batches` reproduces the official split.
    """
    from tarn.lake import Lake

    c = ctx()
    lake = Lake.from_config(c.params.lake, c.root)
    if if_empty and lake.exists() and lake.batches():
        console.print(f"lake {lake.url} already has batches; left as is")
        return
    seed = c.params.lake.seed
    names = lake.seed_adult(seed.train_batches, seed.test_batches)
    console.print(f"seeded {len(names)} batches into {lake.url}: {', '.join(names)}")


@lake_app.command("add")
@friendly
def lake_add(
    files: Annotated[list[Path], typer.Argument(help="CSV, JSON Lines or Parquet files.")],
    batch: Annotated[str, typer.Option(help="Batch name; a sequence number is prefixed.")],
) -> None:
    """Add files to the lake as a new (immutable) batch."""
    from tarn.lake import Lake

    c = ctx()
    name = Lake.from_config(c.params.lake, c.root).add(files, batch)
    console.print(f"added batch {name} ({len(files)} file(s)); run `dvc repro` to use it")


@lake_app.command("list")
@friendly
def lake_list() -> None:
    """Show the lake's batches in order, with files, rows and bytes."""
    from tarn.lake import Lake
    from tarn.readers import count_records

    c = ctx()
    lake = Lake.from_config(c.params.lake, c.root)
    t = Table(title=f"lake {lake.url}")
    for col in ("batch", "files", "rows", "bytes"):
        t.add_column(col, justify="left" if col == "batch" else "right")
    total_rows = total_bytes = 0
    for b in lake.batches():
        rows = sum(count_records(lake.fs, f.path) for f in b.files)
        total_rows += rows
        total_bytes += b.bytes
        t.add_row(b.name, str(len(b.files)), f"{rows:,}", f"{b.bytes:,}")
    t.add_row("[bold]total", "", f"[bold]{total_rows:,}", f"[bold]{total_bytes:,}")
    console.print(t)


# ------------------------------------------------------------------------------------ stages
@app.command()
@friendly
def snapshot() -> None:
    """Freeze the lake's batches into data/snapshot with a sha256 manifest (DVC output)."""
    from tarn import snapshot as stage

    c = ctx()
    res = stage.run(c.params, c.root)
    console.print(f"snapshot {res.manifest_hash[:12]}: {res.n_files} files, {res.n_rows:,} rows "
                  f"-> {res.path.relative_to(c.root)}")


@app.command()
@friendly
def etl() -> None:
    """Apply the schema contract: curated table, quarantine (with reasons), ETL report."""
    from tarn import etl as stage

    c = ctx()
    with bars() as progress:
        res = stage.run(c.params, c.root, progress)
    t = Table(title="ETL report (read = written + rejected + duplicates)")
    for col in ("batch", "read", "written", "rejected", "duplicates", "rejected by reason"):
        t.add_column(col, justify="left" if col in ("batch", "rejected by reason") else "right",
                     no_wrap=col == "batch")
    for name, b in [*res.report["batches"].items(), ("total", res.report["total"])]:
        reasons = ", ".join(f"{k}: {v}" for k, v in b["rejected_by_reason"].items())
        t.add_row(name, f"{b['read']:,}", f"{b['written']:,}", f"{b['rejected']:,}",
                  f"{b['duplicates']:,}", reasons)
    console.print(t)


@app.command()
@friendly
def prepare() -> None:
    """Split train/valid/test, write the data bias report and reweighing weights."""
    from tarn import prepare as stage

    c = ctx()
    res = stage.run(c.params, c.root)
    console.print("rows: " + ", ".join(f"{k} {v:,}" for k, v in res.rows.items()))
    for feat, f in res.bias["splits"]["train"]["features"].items():
        after = res.bias["train_reweighed"]["features"][feat]["disparate_impact_min"]
        console.print(f"{feat}: disparate impact (min/max) {f['disparate_impact_min']:.3f}, "
                      f"after reweighing {after:.3f}")
    console.print(f"report: {c.params.paths.reports}/bias.html")


@app.command()
@friendly
def tune() -> None:
    """Hyperopt TPE search; one MLflow parent run, a child run per trial; best params out."""
    from tarn import tune as stage

    c = ctx()
    with bars() as progress:
        res = stage.run(c.params, c.root, progress)
    b = res.best
    console.print(f"{b['n_trials']} trials ({b['n_failed']} failed) in {b['duration_s']:.1f} s; "
                  f"best trial {b['trial']}: val logloss {b['val_logloss']:.4f}, "
                  f"AUC {b['val_auc']:.4f}, {b['best_iteration'] + 1} rounds")
    console.print(f"MLflow parent run {res.parent_run_id}")


@app.command()
@friendly
def train() -> None:
    """Refit the best configuration on train+valid, log the Pipeline, register a version."""
    from tarn import train as stage

    c = ctx()
    res = stage.run(c.params, c.root)
    console.print(f"registered {c.params.mlflow.registered_model} version {res.version} "
                  f"(run {res.run_id}, {res.tags['tarn.train_rows']} rows, "
                  f"mitigation {res.tags['tarn.mitigation']})")


@app.command()
@friendly
def evaluate() -> None:
    """Test metrics, fairness with vs without mitigation, plots, Evidently reports."""
    from tarn import evaluate as stage

    c = ctx()
    res = stage.run(c.params, c.root)
    m = res.metrics
    console.print(f"test: logloss {m['logloss']:.4f}, AUC {m['roc_auc']:.4f}, accuracy "
                  f"{m['accuracy']:.4f}, F1 {m['f1']:.4f}, Brier {m['brier']:.4f}")
    e = res.comparison["effect"]
    for f in c.params.schema.sensitive:
        dpd = m[f"{f}_demographic_parity_difference"]
        console.print(f"{f}: demographic parity difference {dpd:.4f} "
                      f"(mitigation reduces it by {100 * e['dpd_reduction_' + f]:.0f} %)")
    console.print(f"mitigation AUC cost {e['auc_cost']:+.4f}; report: "
                  f"{c.params.paths.reports}/evaluation.html")


def main() -> None:  # pragma: no cover
    app()
