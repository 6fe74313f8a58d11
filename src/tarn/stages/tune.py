"""The tune stage: hyperopt TPE over the search space in params, every trial an MLflow child run.

The normalization is fitted once on the training split (it does not depend on the
hyperparameters), so a trial only fits XGBoost on ready matrices, with early stopping on the
validation split. ``tune.parallelism: 1`` runs plain sequential ``fmin`` (unless
``compute.scheduler`` names a cluster); ``N > 1`` asks TPE for one suggestion at a time until N
trials are in flight on the Dask cluster, feeding results back as they finish. The data is
scattered to the workers once, not shipped with every trial.

A trial whose validation curve falls behind stops before early stopping would end it
(``tune.stop_rule``, :func:`stop_reason`): every ``stop_interval`` rounds after
``stop_warmup_rounds``, its best validation loss so far (the task's: logloss, multiclass
logloss or RMSE, :class:`tarn.core.task.Task`) is compared with the finished trials' best at
the same round, and it stops when worse than their ``stop_quantile`` (0.5: the median rule).
The reason is kept with the trial (an MLflow tag), its loss so far goes to TPE, and a stopped
trial is never the chosen one.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, hp, space_eval, tpe
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_ERROR, Domain

from tarn.config import INTEGER_PARAMS, Params, TuneConfig, stage_view
from tarn.core.catalog import BEST, TUNE_REPORT, TUNE_TRIALS, load_split
from tarn.core.features import FEATURES, build_preprocessor
from tarn.core.files import staged
from tarn.core.progress import Progress, silent
from tarn.core.tags import RunTag
from tarn.core.task import Task

# params keys this stage reads (each is in its dvc.yaml params; tests check both)
READS = ("schema", "tune", "bias.mitigation", *FEATURES)
# keys that only say where work runs or lands: read, but not DVC params
AMBIENT = ("paths", "compute", "mlflow")



def build_space(cfg: TuneConfig) -> dict:
    """The hyperopt space declared in params.yaml."""
    space = {}
    for name, d in cfg.space.items():
        if d.dist == "choice":
            space[name] = hp.choice(name, d.options)
        elif d.dist == "uniform":
            space[name] = hp.uniform(name, d.low, d.high)
        elif d.dist == "loguniform":
            space[name] = hp.loguniform(name, math.log(d.low), math.log(d.high))
        elif d.dist == "quniform":
            space[name] = hp.quniform(name, d.low, d.high, d.q)
        else:
            space[name] = hp.qloguniform(name, math.log(d.low), math.log(d.high), d.q)
    return space


def clean_hparams(raw: dict) -> dict:
    """hyperopt gives floats for q-distributions: make integer parameters integers."""
    return {k: int(round(v)) if k in INTEGER_PARAMS else v for k, v in raw.items()}


@dataclass(frozen=True)
class StopRule:
    """When a trial stops early (see the module docstring); built from ``tune.stop_*``."""

    quantile: float = 0.75
    warmup_rounds: int = 50
    interval: int = 10
    min_trials: int = 5
    align: str = "rounds"  # "rounds" | "learning_rate": compare at the same rounds x rate

    @classmethod
    def from_config(cls, cfg: TuneConfig) -> StopRule | None:
        if cfg.stop_rule == "none":
            return None
        return cls(cfg.stop_quantile, cfg.stop_warmup_rounds, cfg.stop_interval,
                   cfg.stop_min_trials, cfg.stop_align)


DEFAULT_LEARNING_RATE = 0.3  # XGBoost's, for a space that does not tune it


@dataclass(frozen=True)
class Reference:
    """A finished trial's best validation loss so far after each round."""

    best: np.ndarray
    learning_rate: float = DEFAULT_LEARNING_RATE


def best_so_far(curve: Sequence[float]) -> np.ndarray:
    """A validation curve as its running minimum (what early stopping would keep)."""
    return np.minimum.accumulate(np.asarray(curve, dtype=np.float64))


def stop_reason(rule: StopRule | None, curve: Sequence[float], references: Sequence[Reference],
                learning_rate: float = DEFAULT_LEARNING_RATE, loss: str = "logloss") -> str:
    """Why a trial should stop now, or "" to go on. Pure: no fits.

    ``curve`` is the trial's validation loss after each round so far (round r = len(curve));
    ``references`` are the finished (not stopped) trials. Each is read at the same round r
    (``align: rounds``) or at the round where it had come as far, rounds x learning rate, as
    this trial (``align: learning_rate``: a slow rate is not stopped for being slow); a
    reference shorter than that counts with its final value. The trial stops at a checked round
    when its best so far is worse than the ``quantile`` of the references' values there.
    """
    r = len(curve)
    if (rule is None or r < rule.warmup_rounds or r % rule.interval
            or len(references) < max(1, rule.min_trials)):
        return ""
    own = float(np.min(curve))
    at = []
    for ref in references:
        if not len(ref.best):
            continue
        rr = r if rule.align == "rounds" else round(r * learning_rate / ref.learning_rate)
        at.append(ref.best[min(max(rr, 1), len(ref.best)) - 1])
    if not at:
        return ""
    bar = float(np.quantile(at, rule.quantile))
    if own <= bar:
        return ""
    where = "that round" if rule.align == "rounds" else "the same rounds x learning rate"
    return (f"round {r}: best val {loss} {own:.5f} > {rule.quantile:g} quantile of "
            f"{len(at)} finished trials at {where} ({bar:.5f})")


def _stop_callback(rule: StopRule | None, references: Sequence[Reference],
                   learning_rate: float, task: Task):
    """An XGBoost callback applying :func:`stop_reason` after each round; ``.reason`` says why
    it stopped the fit ("" if it did not)."""
    from xgboost.callback import TrainingCallback

    class StopBehind(TrainingCallback):
        reason = ""

        def after_iteration(self, model, epoch, evals_log) -> bool:
            curve = evals_log["validation_0"][task.eval_metric]
            self.reason = stop_reason(rule, curve, references, learning_rate, task.loss)
            return bool(self.reason)

    return StopBehind()


@dataclass
class Matrices:
    """Normalized training and validation data, shared by every trial."""

    z_train: np.ndarray
    y_train: np.ndarray
    w_train: np.ndarray | None
    z_valid: np.ndarray
    y_valid: np.ndarray
    task: Task = Task("binary", ("0", "1"))


@dataclass
class TrialResult:
    tid: int
    params: dict
    status: str  # "ok" | "fail"
    loss: float = float("nan")  # the task's validation loss (logloss or RMSE)
    figures: dict = field(default_factory=dict)  # other val figures: auc | accuracy | mae, r2
    best_iteration: int = -1
    duration_s: float = 0.0
    error: str = ""
    rounds: int = 0  # boosting rounds fitted
    stopped: str = ""  # why the stop rule ended it early ("" = it ran to early stopping or cap)
    reference: Reference | None = None  # a finished trial's curve, for the stop rule


def fit_trial(tid: int, hparams: dict, data: Matrices, n_estimators: int,
              early_stopping_rounds: int, n_jobs: int, seed: int,
              rule: StopRule | None = None,
              references: Sequence[Reference] = ()) -> TrialResult:
    """Fit one configuration with early stopping (and the stop rule against ``references``);
    never raises (a failure is a result)."""
    task = data.task
    start = time.perf_counter()
    try:
        lr = float(hparams.get("learning_rate", DEFAULT_LEARNING_RATE))
        stopper = _stop_callback(rule, references, lr, task)
        model = task.estimator(
            n_estimators=n_estimators, early_stopping_rounds=early_stopping_rounds,
            tree_method="hist", n_jobs=n_jobs, random_state=seed, callbacks=[stopper],
            **hparams,
        )
        model.fit(data.z_train, data.y_train, sample_weight=data.w_train,
                  eval_set=[(data.z_valid, data.y_valid)], verbose=False)
        scores = task.scores(model, data.z_valid)
        curve = model.evals_result()["validation_0"][task.eval_metric]
        return TrialResult(tid, hparams, "ok", task.metric(task.loss, data.y_valid, scores),
                           trial_figures(task, data.y_valid, scores),
                           int(model.best_iteration), time.perf_counter() - start,
                           rounds=len(curve), stopped=stopper.reason,
                           reference=None if stopper.reason else Reference(
                               best_so_far(curve).astype(np.float32), lr))
    except Exception as e:  # noqa: BLE001 - a failed trial is recorded, the search goes on
        return TrialResult(tid, hparams, "fail", duration_s=time.perf_counter() - start,
                           error=f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")


# the validation figures a trial reports besides its loss (MLflow `val_<name>`), per task
TRIAL_FIGURES = {"binary": {"auc": "roc_auc"}, "multiclass": {"accuracy": "accuracy"},
                 "regression": {"mae": "mae", "r2": "r2"}}


def trial_figures(task: Task, y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Pure: a trial's validation figures besides the loss (binary: AUC; multiclass: accuracy;
    regression: MAE and R2)."""
    return {k: task.metric(m, y, scores) for k, m in TRIAL_FIGURES[task.kind].items()}


def matrices(params: Params, root: Path) -> Matrices:
    train, valid = load_split(params, root, "train"), load_split(params, root, "valid")
    pre = build_preprocessor(params.schema, params.prepare).fit(train.X)
    weighted = params.bias.mitigation == "reweighing"
    # the threshold does not change a loss: tuning does not read train.threshold
    return Matrices(pre.transform(train.X), train.y, train.weight if weighted else None,
                    pre.transform(valid.X), valid.y, Task.of(params.schema))


class _TrialLogger:
    """Writes each finished trial as an MLflow child run of the tuning run (from this process,
    so workers need no access to the tracking store)."""

    def __init__(self, parent_run_id: str, experiment_id: str, loss: str = "logloss") -> None:
        import mlflow

        self.loss = loss
        self.client = mlflow.MlflowClient()
        self.parent = parent_run_id
        self.exp = experiment_id

    def log(self, r: TrialResult, started_ms: int) -> str:
        from mlflow.entities import Metric, Param
        from mlflow.entities import RunTag as Tag

        run = self.client.create_run(self.exp, start_time=started_ms, run_name=f"trial-{r.tid:03d}",
                                     tags={"mlflow.parentRunId": self.parent,
                                           RunTag.TRIAL: str(r.tid)})
        now = int(time.time() * 1000)
        metrics = [Metric("duration_s", r.duration_s, now, 0)]
        if r.status == "ok":
            metrics += [Metric(f"val_{self.loss}", r.loss, now, 0),
                        *(Metric(f"val_{k}", v, now, 0) for k, v in r.figures.items()),
                        Metric("best_iteration", r.best_iteration, now, 0),
                        Metric("rounds", r.rounds, now, 0)]
        tags = [Tag(RunTag.STATUS, r.status)]
        if r.error:
            tags.append(Tag(RunTag.ERROR, r.error[:5000]))
        if r.stopped:
            tags.append(Tag(RunTag.STOPPED_EARLY, r.stopped))
        self.client.log_batch(run.info.run_id, metrics=metrics,
                              params=[Param(k, str(v)) for k, v in r.params.items()], tags=tags)
        self.client.set_terminated(run.info.run_id, "FINISHED" if r.status == "ok" else "FAILED",
                                   end_time=started_ms + int(r.duration_s * 1000))
        return run.info.run_id


@dataclass
class TuneResult:
    best: dict
    trials: list[TrialResult]
    parent_run_id: str


def _describe_rule(cfg: TuneConfig) -> str:
    if cfg.stop_rule == "none":
        return "none"
    at = "round" if cfg.stop_align == "rounds" else "rounds x learning rate"
    return (f"behind the {cfg.stop_quantile:g} quantile of finished trials at the same {at} "
            f"(every {cfg.stop_interval} rounds from round {cfg.stop_warmup_rounds}, once "
            f"{cfg.stop_min_trials} trials finished)")


def _describe(best: float, loss: str = "logloss") -> str:
    return "tuning" if math.isinf(best) else f"tuning (best val {loss} {best:.4f})"


def search(params: Params, data: Matrices, on_trial, progress: Progress = silent,
           client=None) -> list[TrialResult]:
    """Run the TPE search; ``on_trial(result, started_ms)`` is called as each trial finishes."""
    cfg = params.tune
    space = build_space(cfg)
    results: list[TrialResult] = []
    references: list[Reference] = []  # finished trials' curves, for the stop rule
    rule = StopRule.from_config(cfg)
    best = [math.inf]
    deadline = time.monotonic() + cfg.timeout_s

    def finished(r: TrialResult, started_ms: int) -> None:
        results.append(r)
        if r.status == "ok":
            best[0] = min(best[0], r.loss)
        if r.reference is not None:
            references.append(r.reference)
        on_trial(r, started_ms)
        progress("tune", _describe(best[0], data.task.loss), 1, cfg.max_evals)

    progress("tune", _describe(math.inf), 0, cfg.max_evals)
    if client is None:
        def objective(raw: dict) -> dict:
            started = int(time.time() * 1000)
            r = fit_trial(len(results), clean_hparams(raw), data, cfg.n_estimators,
                          cfg.early_stopping_rounds, cfg.n_jobs, cfg.seed, rule,
                          tuple(references))
            finished(r, started)
            if r.status != "ok":
                return {"status": STATUS_FAIL, "error": r.error}
            return {"status": STATUS_OK, "loss": r.loss}

        fmin(objective, space, algo=tpe.suggest, max_evals=cfg.max_evals, trials=Trials(),
             rstate=np.random.default_rng(cfg.seed), timeout=cfg.timeout_s,
             show_progressbar=False)
        return results
    _search_parallel(params, space, data, client, finished, deadline, rule, references)
    return sorted(results, key=lambda r: r.tid)


def _search_parallel(params: Params, space: dict, data: Matrices, client, finished,
                     deadline: float, rule: StopRule | None,
                     references: list[Reference]) -> None:
    """Ask/tell: keep ``parallelism`` trials in flight, one TPE suggestion at a time."""
    from distributed import wait

    from tarn.core.compute import WorkerWatch

    cfg = params.tune
    watch = WorkerWatch(client, params.compute)
    trials = Trials()
    domain = Domain(lambda _: 0.0, space)
    rng = np.random.default_rng(cfg.seed)
    shared = watch.scatter(data)
    in_flight: dict = {}
    started = 0
    threads = params.compute.threads_per_worker
    while started < cfg.max_evals or in_flight:
        while (len(in_flight) < cfg.parallelism and started < cfg.max_evals
               and time.monotonic() < deadline):
            ids = trials.new_trial_ids(1)
            docs = tpe.suggest(ids, domain, trials, int(rng.integers(2**31 - 1)))
            trials.insert_trial_docs(docs)
            trials.refresh()
            doc = docs[0]
            vals = {k: v[0] for k, v in doc["misc"]["vals"].items() if v}
            hparams = clean_hparams(space_eval(space, vals))
            if shared.status != "finished":  # every worker holding the data died: send again
                shared = watch.scatter(data)
            # the stop rule compares with the trials finished so far (a snapshot)
            fut = client.submit(fit_trial, started, hparams, shared, cfg.n_estimators,
                                cfg.early_stopping_rounds, threads, cfg.seed, rule,
                                tuple(references), pure=False)
            in_flight[fut] = (doc, int(time.time() * 1000))
            started += 1
        if not in_flight:
            break
        try:  # a killed worker's trial is rerun elsewhere by Dask (up to 3 times)
            done, _ = wait(list(in_flight), timeout=2, return_when="FIRST_COMPLETED")
        except TimeoutError:
            watch.check()
            continue
        for fut in done:
            doc, started_ms = in_flight.pop(fut)
            try:
                r: TrialResult = fut.result()
            except Exception as e:  # noqa: BLE001 - e.g. a worker died: record, go on
                r = TrialResult(doc["tid"], {}, "fail", error=f"{type(e).__name__}: {e}")
            if r.status == "ok":
                doc["result"] = {"status": STATUS_OK, "loss": r.loss}
                doc["state"] = JOB_STATE_DONE
            else:
                doc["result"] = {"status": STATUS_FAIL}
                doc["state"] = JOB_STATE_ERROR
            trials.refresh()
            finished(r, started_ms)


def run(params: Params, root: Path, progress: Progress = silent) -> TuneResult:
    """Search, log every trial under one parent run, write the best configuration."""
    params = stage_view(params, "tune", READS, AMBIENT)
    import mlflow

    from tarn.core.compute import dask_client
    from tarn.core.tracking import connect, params_hash, quiet_mlflow

    cfg = params.tune
    if cfg is None:
        from tarn.errors import ConfigError
        raise ConfigError("params.yaml has no `tune` section", "add one (see the README)")
    data = matrices(params, root)
    tracking = connect(params.mlflow, root)
    with quiet_mlflow(), mlflow.start_run(run_name="tune") as parent:
        mlflow.set_tags({RunTag.STAGE: "tune", RunTag.PARAMS_HASH: params_hash(params, (
            "schema", "etl", "prepare", "bias", "tune"))})
        mlflow.log_params({"max_evals": cfg.max_evals, "parallelism": cfg.parallelism,
                           "timeout_s": cfg.timeout_s, "seed": cfg.seed,
                           "n_estimators": cfg.n_estimators,
                           "early_stopping_rounds": cfg.early_stopping_rounds,
                           "stop_rule": _describe_rule(cfg),
                           "mitigation": params.bias.mitigation,
                           "space": json.dumps({k: v.model_dump(exclude_none=True)
                                                for k, v in cfg.space.items()})[:6000]})
        task = data.task
        mlflow.log_params({"task": task.kind, "loss": f"val_{task.loss}"})
        logger = _TrialLogger(parent.info.run_id, tracking.experiment_id, task.loss)
        start = time.perf_counter()
        if cfg.parallelism > 1 or params.compute.scheduler:  # a named cluster is always used
            with dask_client(params.compute, n_workers=cfg.parallelism) as client:
                results = search(params, data, logger.log, progress, client)
        else:
            results = search(params, data, logger.log, progress)
        elapsed = time.perf_counter() - start
        ok = [r for r in results if r.status == "ok"]
        if not ok:
            from tarn.errors import TarnError
            raise TarnError(f"all {len(results)} trials failed; first error: "
                            f"{results[0].error.splitlines()[0] if results else 'none run'}",
                            "check the search space and the prepared data")
        stopped = [r for r in ok if r.stopped]
        # a stopped trial's best_iteration is cut short: the choice is among finished ones
        best = min([r for r in ok if not r.stopped] or ok, key=lambda r: (r.loss, r.tid))
        mlflow.log_metrics({f"best_val_{task.loss}": best.loss,
                            **{f"best_val_{k}": v for k, v in best.figures.items()},
                            "n_trials": len(results), "n_failed": len(results) - len(ok),
                            "n_stopped_early": len(stopped), "duration_s": elapsed})
        mlflow.set_tag(RunTag.BEST_TRIAL, str(best.tid))
    summary = {
        "params": best.params,
        "best_iteration": best.best_iteration,
        "task": task.kind,
        "loss": f"val_{task.loss}",  # the key below that the search minimized
        f"val_{task.loss}": best.loss,
        **{f"val_{k}": v for k, v in best.figures.items()},
        "trial": best.tid,
        "n_trials": len(results),
        "n_failed": len(results) - len(ok),
        "n_stopped_early": len(stopped),
        "parent_run_id": parent.info.run_id,
        "duration_s": elapsed,
    }
    models = root / params.paths.models
    reports = root / params.paths.reports
    with staged() as st:
        st.json(models / BEST, summary)
        st.json(reports / TUNE_REPORT, {k: summary[k] for k in (
            "task", "loss", f"val_{task.loss}", *(f"val_{k}" for k in best.figures),
            "best_iteration", "n_trials", "n_failed", "n_stopped_early", "duration_s")})
        st.text(reports / TUNE_TRIALS, f"trial,val_{task.loss},best_so_far\n" + "".join(
            f"{r.tid},{r.loss},{b}\n" for r, b in _running_best(results)))
    return TuneResult(summary, results, parent.info.run_id)


def _running_best(results: list[TrialResult]):
    best = math.inf
    for r in sorted(results, key=lambda r: r.tid):
        if r.status == "ok":
            best = min(best, r.loss)
            yield r, best
