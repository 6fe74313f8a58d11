"""The tune stage: hyperopt TPE over the search space in params, every fit an MLflow child run.

How the budget is spent (:mod:`tarn.core.search_plan`): the search starts from known-good
configurations (XGBoost's defaults first), then asks TPE for one configuration at a time. On a
large table a new configuration is fitted on a row sample first, and only the best third of
each rung is refitted on three times as many rows, up to every row (asynchronous successive
halving); TPE learns from the first rung, where every configuration is measured alike. Every
fit stops early on the validation split, with a round cap tied to its learning rate. The
search ends when ``max_evals`` configurations were tried and promoted, or when the time budget
(``tune.timeout_s``, by default from rows x columns and cores) runs out: fits in flight are
stopped at the deadline, and the report says which ended it.

The normalization is fitted once on the training split (it does not depend on the
hyperparameters), so a fit only runs XGBoost on ready float32 matrices. ``tune.parallelism:
1`` runs fits in this process (each on ``n_jobs`` threads); ``N > 1`` keeps N fits in flight
on the Dask cluster, the data scattered to the workers once.

A fit whose validation curve falls behind stops before early stopping would end it
(``tune.stop_rule``, :func:`stop_reason`): every ``stop_interval`` rounds after
``stop_warmup_rounds``, its best validation loss so far is compared with the finished fits'
of the same rung at the same round, and it stops when worse than their ``stop_quantile``.

Default reference models (:mod:`tarn.core.reference`) are fitted on the same training rows and
scored on the same validation rows, so the report says plainly whether the search paid.
"""

from __future__ import annotations

import json
import math
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, hp, space_eval, tpe
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_ERROR, Domain
from xgboost.callback import TrainingCallback

from tarn.config import DEFAULT_LEARNING_RATE, INTEGER_PARAMS, Params, TuneConfig, stage_view
from tarn.core import memory, reference
from tarn.core.catalog import (
    BEST,
    STAGE_READS,
    TUNE_REPORT,
    TUNE_TRIALS,
    VALIDATION_SCORES,
    ScoresOnValidation,
    TuneSummary,
    lineage_keys,
    load_split,
    splits_digest,
)
from tarn.core.features import build_preprocessor, design_width, encode
from tarn.core.files import staged
from tarn.core.progress import Progress, silent
from tarn.core.search_plan import (
    Ladder,
    default_budget,
    fidelity_rungs,
    learning_rate_of,
    round_cap,
    warm_starts,
)
from tarn.core.tags import RunTag
from tarn.core.task import Task
from tarn.errors import TarnError

# params keys this stage reads (each is in its dvc.yaml params; tests check both)
# (declared in core/catalog.py's STAGE_READS, from which lineage hashes are derived)
READS = STAGE_READS["tune"]
# keys that only say where work runs or lands: read, but not DVC params
AMBIENT = ("paths", "compute", "mlflow")
REPORT_EVERY_S = 5.0  # a line of progress at least this often while a fit runs


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


class Watch(TrainingCallback):
    """An XGBoost callback: the stop rule, the search's deadline (wall clock, so a Dask worker
    honours it too) and a progress report every few seconds. ``.reason`` says why it ended
    the fit ("" if it did not); ``.cut`` is set when the deadline did."""

    def __init__(self, rule: StopRule | None, references: Sequence[Reference],
                 learning_rate: float, task: Task, deadline: float = 0.0,
                 on_round: Callable[[int, float], None] | None = None) -> None:
        super().__init__()
        self.rule, self.references = rule, references
        self.learning_rate, self.task = learning_rate, task
        self.deadline, self.on_round = deadline, on_round
        self.reason, self.cut = "", False
        self.last = time.monotonic()

    def after_iteration(self, model, epoch, evals_log) -> bool:
        curve = evals_log["validation_0"][self.task.eval_metric]
        if self.on_round is not None and time.monotonic() - self.last >= REPORT_EVERY_S:
            self.last = time.monotonic()
            self.on_round(len(curve), float(np.min(curve)))
        if self.deadline and time.time() >= self.deadline:
            self.reason, self.cut = f"round {len(curve)}: the time budget ran out", True
            return True
        self.reason = stop_reason(self.rule, curve, self.references, self.learning_rate,
                                  self.task.loss)
        return bool(self.reason)


@dataclass
class Matrices:
    """Normalized training and validation data, shared by every fit. Training rows are in a
    seeded random order, so the first ``n`` rows are a random sample (a rung's rows)."""

    z_train: np.ndarray
    y_train: np.ndarray
    w_train: np.ndarray | None
    z_valid: np.ndarray
    y_valid: np.ndarray
    task: Task = Task("binary", ("0", "1"))
    # small tables: k-fold cross-validation over train + valid (the *_train arrays hold every
    # row; each fit is k fits, scored on the pooled out-of-fold predictions)
    folds: tuple[tuple[np.ndarray, np.ndarray], ...] = ()
    # per validation score, its row: in the valid split (holdout), or in train + valid
    # concatenated (cross-validation, out-of-fold scores): the train stage reads the groups
    valid_rows: np.ndarray | None = None

    @property
    def validation(self) -> str:
        """How a fit is judged, in words (printed beside the figures)."""
        if self.folds:
            return f"{len(self.folds)}-fold cross-validation on {self.rows:,} rows"
        return f"the validation split ({len(self.y_valid):,} rows)"

    @property
    def rows(self) -> int:
        return len(self.y_train)

    @property
    def width(self) -> int:
        return int(self.z_train.shape[1])


@dataclass
class TrialResult:
    tid: int  # the configuration (a promoted configuration keeps its id)
    params: dict
    status: str  # "ok" | "fail"
    loss: float = float("nan")  # the task's validation loss (logloss or RMSE)
    figures: dict = field(default_factory=dict)  # other val figures: auc | accuracy | mae, r2
    best_iteration: int = -1
    duration_s: float = 0.0
    error: str = ""
    rounds: int = 0  # boosting rounds fitted
    stopped: str = ""  # why the stop rule or the deadline ended it ("" = early stopping)
    reference: Reference | None = None  # a finished fit's curve, for the stop rule
    rung: int = 0
    rows: int = 0  # training rows the fit saw
    cap: int = 0  # its round cap
    cut: bool = False  # the deadline ended it
    # validation (or out-of-fold) scores, kept only when asked (the mitigation comparison)
    scores: np.ndarray | None = None

    @property
    def capped(self) -> bool:
        """It ran into its round cap: early stopping never ended it."""
        return self.status == "ok" and not self.stopped and self.rounds >= self.cap

    @property
    def clean(self) -> bool:
        """Finished by early stopping (or its cap): comparable, and may be chosen."""
        return self.status == "ok" and not self.stopped


@dataclass(frozen=True)
class Fit:
    """One fit to run: a configuration at a rung."""

    tid: int
    hparams: dict
    rung: int
    rows: int
    cap: int


def fit_trial(fit: Fit, data: Matrices, early_stopping_rounds: int, n_jobs: int, seed: int,
              rule: StopRule | None = None, references: Sequence[Reference] = (),
              deadline: float = 0.0,
              on_round: Callable[[int, float], None] | None = None,
              keep_scores: bool = False) -> TrialResult:
    """Fit one configuration on the first ``fit.rows`` training rows with early stopping (and
    the stop rule against ``references``, and the wall-clock ``deadline``); never raises (a
    failure is a result). ``keep_scores``: the result carries its validation scores."""
    task = data.task
    start = time.perf_counter()
    base = {"tid": fit.tid, "params": fit.hparams, "rung": fit.rung, "rows": fit.rows,
            "cap": fit.cap}
    try:
        lr = learning_rate_of(fit.hparams)
        if data.folds:  # small table: no stop rule (fits are quick), the deadline holds
            return _fit_folds(fit, data, early_stopping_rounds, n_jobs, seed, deadline,
                              on_round, base, start, keep_scores)
        watch = Watch(rule, references, lr, task, deadline, on_round)
        w = None if data.w_train is None else data.w_train[:fit.rows]
        model, curve = _fit_one(fit, task, data.z_train[:fit.rows], data.y_train[:fit.rows], w,
                                data.z_valid, data.y_valid, early_stopping_rounds, n_jobs, seed,
                                watch)
        scores = task.scores(model, data.z_valid)
        return TrialResult(**base, status="ok",
                           loss=task.metric(task.loss, data.y_valid, scores),
                           figures=trial_figures(task, data.y_valid, scores),
                           best_iteration=_best_iteration(model, curve),
                           duration_s=time.perf_counter() - start, rounds=len(curve),
                           stopped=watch.reason, cut=watch.cut,
                           reference=None if watch.reason else Reference(
                               best_so_far(curve).astype(np.float32), lr),
                           scores=scores if keep_scores else None)
    except Exception as e:  # noqa: BLE001 - a failed fit is recorded, the search goes on
        return TrialResult(**base, status="fail", duration_s=time.perf_counter() - start,
                           error=f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")


def _fit_one(fit: Fit, task: Task, z, y, w, z_valid, y_valid, early_stopping_rounds: int,
             n_jobs: int, seed: int, watch: Watch):
    """One XGBoost fit with early stopping on (z_valid, y_valid): (model, validation curve)."""
    model = task.estimator(
        n_estimators=fit.cap, early_stopping_rounds=early_stopping_rounds, tree_method="hist",
        n_jobs=n_jobs, random_state=seed, callbacks=[watch], **fit.hparams)
    model.fit(z, y, sample_weight=w, eval_set=[(z_valid, y_valid)], verbose=False)
    return model, model.evals_result()["validation_0"][task.eval_metric]


def _fit_folds(fit: Fit, data: Matrices, early_stopping_rounds: int, n_jobs: int, seed: int,
               deadline: float, on_round, base: dict, start: float,
               keep_scores: bool = False) -> TrialResult:
    """k fits, each early-stopped on its held-out fold; judged on the pooled out-of-fold
    scores (one validation figure over every row: a 70-row validation split picks by luck)."""
    task, lr = data.task, learning_rate_of(fit.hparams)
    oof = None
    iterations, rounds, stopped, cut = [], 0, "", False
    for tr, va in data.folds:
        watch = Watch(None, (), lr, task, deadline, on_round)
        w = None if data.w_train is None else data.w_train[tr]
        model, curve = _fit_one(fit, task, data.z_train[tr], data.y_train[tr], w,
                                data.z_train[va], data.y_train[va], early_stopping_rounds,
                                n_jobs, seed, watch)
        scores = task.scores(model, data.z_train[va])
        if oof is None:
            oof = np.zeros((data.rows, *scores.shape[1:]), dtype=np.float64)
        oof[va] = scores
        iterations.append(_best_iteration(model, curve))
        rounds = max(rounds, len(curve))
        stopped, cut = stopped or watch.reason, cut or watch.cut
    y = data.y_train
    return TrialResult(**base, status="ok", loss=task.metric(task.loss, y, oof),
                       figures=trial_figures(task, y, oof),
                       best_iteration=int(round(float(np.mean(iterations)))),
                       duration_s=time.perf_counter() - start, rounds=rounds, stopped=stopped,
                       cut=cut, scores=oof if keep_scores else None)


def _best_iteration(model, curve: Sequence[float]) -> int:
    """XGBoost's, or (when our callback ended the fit before early stopping recorded one)
    the round of the lowest validation loss."""
    try:
        return int(model.best_iteration)
    except AttributeError:
        return int(np.argmin(curve))


def trial_figures(task: Task, y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Pure: a trial's validation figures besides the loss (``Task.TRIAL_FIGURES``, MLflow's
    ``val_<name>``; binary: AUC; multiclass: accuracy; regression: MAE and R2)."""
    return {k: task.metric(m, y, scores) for k, m in task.TRIAL_FIGURES.items()}


def matrices(params: Params, root: Path, progress: Progress = silent) -> tuple[Matrices, object]:
    """The training and validation design matrices (float32, training rows shuffled), and the
    fitted preprocessor. Memory is checked before the matrices are built. A table of at most
    ``tune.cv_max_rows`` rows (train + valid) is cross-validated instead (``folds``)."""
    cfg = params.tune
    train, valid = load_split(params, root, "train"), load_split(params, root, "valid")
    task = Task.of(params.schema)
    weighted = (params.bias.mitigation == "reweighing" and task.classification
                and train.weight is not None and valid.weight is not None)
    cv = cfg.cv_folds >= 2 and len(train.y) + len(valid.y) <= cfg.cv_max_rows
    if cv:
        X = pd.concat([train.X, valid.X], ignore_index=True)
        y = np.concatenate([train.y, valid.y])
        w = np.concatenate([train.weight, valid.weight]) if weighted else None
    else:
        X, y, w = train.X, train.y, train.weight if weighted else None
    pre = build_preprocessor(params.schema, params.prepare, X).fit(X, y)
    plan = memory.plan(len(y), 0 if cv else len(valid.y), design_width(pre), 1, False,
                       params.compute.memory_fraction)
    memory.refuse_if_over(plan, pre, len(y))
    order = np.random.default_rng(cfg.seed).permutation(len(y))
    z = encode(pre, X.iloc[order], progress)
    # the search tunes the model that is registered (reweighed when bias.mitigation says so);
    # the unmitigated model, compared with the default references, gets the best few
    # refitted without weights (unmitigated_choice). The threshold does not change a loss:
    # tuning does not read train.threshold.
    w = None if w is None else w[order]
    if cv:
        return Matrices(z, y[order], w, z[:0], y[:0], task,
                        _folds(y[order], task, cfg.cv_folds, cfg.seed), order), pre
    return Matrices(z, y[order], w, encode(pre, valid.X, progress), valid.y, task,
                    valid_rows=np.arange(len(valid.y))), pre


def _folds(y: np.ndarray, task: Task, k: int, seed: int) -> tuple:
    """Stratified by class when every class has k rows, else plain k-fold."""
    from sklearn.model_selection import KFold, StratifiedKFold

    counts = np.bincount(y.astype(int)) if task.classification else np.array([])
    strat = task.classification and len(counts) and counts[counts > 0].min() >= k
    cv = StratifiedKFold(k, shuffle=True, random_state=seed) if strat else KFold(
        k, shuffle=True, random_state=seed)
    return tuple((tr, va) for tr, va in cv.split(np.zeros(len(y)), y))


class _TrialLogger:
    """Writes each finished fit as an MLflow child run of the tuning run (from this process,
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

        name = f"trial-{r.tid:03d}" + (f"-rung{r.rung}" if r.rung else "")
        run = self.client.create_run(self.exp, start_time=started_ms, run_name=name,
                                     tags={"mlflow.parentRunId": self.parent,
                                           RunTag.TRIAL: str(r.tid)})
        now = int(time.time() * 1000)
        metrics = [Metric("duration_s", r.duration_s, now, 0), Metric("rows", r.rows, now, 0),
                   Metric("rung", r.rung, now, 0)]
        if r.status == "ok":
            metrics += [Metric(f"val_{self.loss}", r.loss, now, 0),
                        *(Metric(f"val_{k}", v, now, 0) for k, v in r.figures.items()),
                        Metric("best_iteration", r.best_iteration, now, 0),
                        Metric("rounds", r.rounds, now, 0), Metric("round_cap", r.cap, now, 0)]
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
class SearchOutcome:
    results: list[TrialResult]
    stop_reason: str  # "max_evals" | "time budget"
    budget_s: float
    rungs: list[int]
    duration_s: float
    configs: int  # configurations tried (rung 0 fits)


@dataclass
class TuneResult:
    best: TuneSummary
    trials: list[TrialResult]
    parent_run_id: str


def _describe_rule(cfg: TuneConfig) -> str:
    if cfg.stop_rule == "none":
        return "none"
    at = "round" if cfg.stop_align == "rounds" else "rounds x learning rate"
    return (f"behind the {cfg.stop_quantile:g} quantile of finished trials at the same {at} "
            f"(every {cfg.stop_interval} rounds from round {cfg.stop_warmup_rounds}, once "
            f"{cfg.stop_min_trials} trials finished)")


def budget_of(cfg: TuneConfig, data: Matrices, cores: int | None = None) -> float:
    if cfg.timeout_s != "auto":
        return float(cfg.timeout_s)
    return default_budget(data.rows, data.width, cores or os.cpu_count() or 1)


class _Planner:
    """Which fit runs next: a promotion (successive halving), else a new configuration (warm
    start, then TPE), else, when the budget is ending and nothing has seen every row yet, the
    best configuration on every row. Results come back through :meth:`done`."""

    def __init__(self, cfg: TuneConfig, data: Matrices, deadline: float) -> None:
        self.cfg, self.deadline = cfg, deadline
        self.space = build_space(cfg)
        # cross-validated small tables have one rung: every fit sees every row
        self.rungs = [data.rows] if data.folds else fidelity_rungs(
            data.rows, cfg.min_fidelity_rows, cfg.fidelity_factor)
        self.ladder = Ladder(self.rungs, cfg.fidelity_factor)
        self.trials, self.domain = Trials(), Domain(lambda _: 0.0, self.space)
        self.rng = np.random.default_rng(cfg.seed)
        self.warm = warm_starts(cfg)
        self.docs: dict[int, dict] = {}
        self.hparams: dict[int, dict] = {}
        self.configs = 0
        self.seconds_per_row_round: float = 0.0  # measured: for the top rung's reserve

    def _new_config(self) -> Fit:
        """The next configuration: a warm start (tried besides the search: TPE neither counts
        nor sees it, so its own exploration is what it would be without them), then TPE."""
        tid = self.configs
        if tid < len(self.warm):
            self.hparams[tid] = self.warm[tid].hparams
        else:
            doc = tpe.suggest([tid], self.domain, self.trials,
                              int(self.rng.integers(2**31 - 1)))[0]
            vals = {k: v[0] for k, v in doc["misc"]["vals"].items() if v}
            self.trials.insert_trial_docs([doc])
            self.trials.refresh()
            self.docs[tid] = self.trials.trials[-1]
            self.hparams[tid] = clean_hparams(space_eval(self.space, vals))
        self.configs += 1
        return self._fit(tid, 0)

    def _fit(self, tid: int, rung: int) -> Fit:
        hp_ = self.hparams[tid]
        return Fit(tid, hp_, rung, self.rungs[rung], round_cap(self.cfg, learning_rate_of(hp_)))

    def _reserve_s(self) -> float:
        """Time to keep for one fit on every row, while none has run yet (estimated from the
        fits so far: seconds per row per round x rows x the rounds a fit took)."""
        if self.ladder.top == 0 or self.ladder.losses[self.ladder.top]:
            return 0.0
        return 1.5 * self.seconds_per_row_round * self.rungs[-1] * self._typical_rounds

    _typical_rounds: float = 0.0

    def next_fit(self, in_flight: int) -> Fit | None:
        left = self.deadline - time.time()
        if left <= 0 and self.configs:  # one fit always starts: it tells what a fit costs
            return None
        promo = self.ladder.next_promotion()
        if promo is not None:
            self.ladder.mark(*promo)
            return self._fit(*promo)
        total = self.cfg.max_evals + len(self.warm)  # max_evals counts TPE's configurations
        if self.configs < total and (left > self._reserve_s() or not self.configs):
            return self._new_config()
        if in_flight == 0:
            forced = self.ladder.force_promotion()
            if forced is not None:
                self.ladder.mark(*forced)
                return self._fit(*forced)
        return None

    def done(self, r: TrialResult) -> None:
        if r.status == "ok" and r.rounds and r.duration_s > 0:
            rate = r.duration_s / (r.rows * r.rounds)
            self.seconds_per_row_round = max(self.seconds_per_row_round, rate)
            self._typical_rounds = max(self._typical_rounds, float(r.rounds))
        if r.clean:
            self.ladder.record(r.tid, r.rung, r.loss)
        if r.rung == 0 and r.tid in self.docs:  # TPE learns from the first rung only
            doc = self.docs[r.tid]
            if r.status == "ok":
                doc["result"] = {"status": STATUS_OK, "loss": r.loss}
                doc["state"] = JOB_STATE_DONE
            else:
                doc["result"] = {"status": STATUS_FAIL}
                doc["state"] = JOB_STATE_ERROR
            self.trials.refresh()


def _describe(results: list[TrialResult], loss: str, left: float, rungs: list[int]) -> str:
    ok = [r for r in results if r.clean]
    per = [sum(1 for r in results if r.rung == k) for k in range(len(rungs))]
    fits = f"{len(results)} fits"
    if len(rungs) > 1:
        fits += " (" + " + ".join(f"{n} at {rows:,} rows" for n, rows in zip(
            per, rungs, strict=True)) + ")"
    best = ""
    if ok:
        top = max(r.rung for r in ok)
        b = min((r for r in ok if r.rung == top), key=lambda r: r.loss)
        best = f", best val {loss} {b.loss:.4f} at {b.rows:,} rows"
    return f"tuning: {fits}{best}, {max(left, 0):.0f} s of budget left"


def search(params: Params, data: Matrices, on_trial, progress: Progress = silent,
           client=None, budget_s: float | None = None,
           started: float | None = None) -> SearchOutcome:
    """Run the search; ``on_trial(result, started_ms)`` is called as each fit finishes. The
    budget counts from ``started`` (wall clock; default: now)."""
    cfg = params.tune
    start = started if started is not None else time.time()
    budget = budget_s if budget_s is not None else budget_of(cfg, data)
    deadline = start + budget
    planner = _Planner(cfg, data, deadline)
    rule = StopRule.from_config(cfg)
    results: list[TrialResult] = []
    references: dict[int, list[Reference]] = {}  # per rung: finished fits' curves
    loss = data.task.loss
    last_line = [0.0]

    def report(force: bool = False, extra: str = "") -> None:
        if force or time.monotonic() - last_line[0] >= REPORT_EVERY_S:
            last_line[0] = time.monotonic()
            progress("tune", _describe(results, loss, deadline - time.time(),
                                       planner.rungs) + extra, 0, None)

    def finished(r: TrialResult, started_ms: int) -> None:
        results.append(r)
        # TPE's fits only: warm starts must not change which of TPE's fits the stop rule ends
        if r.reference is not None and r.tid >= len(planner.warm):
            references.setdefault(r.rung, []).append(r.reference)
        planner.done(r)
        on_trial(r, started_ms)
        report(force=True)

    report(force=True)
    if client is None:
        while (fit := planner.next_fit(0)) is not None:
            started = int(time.time() * 1000)

            def on_round(rnd: int, best: float, fit: Fit = fit) -> None:
                report(extra=f"; trial {fit.tid} at {fit.rows:,} rows: round {rnd}, "
                             f"val {loss} {best:.4f}")

            finished(fit_trial(fit, data, cfg.early_stopping_rounds, cfg.n_jobs, cfg.seed,
                               rule, tuple(references.get(fit.rung, ())), deadline, on_round),
                     started)
    else:
        _search_parallel(params, data, client, planner, finished, deadline, rule, references,
                         report)
    stop = "time budget" if time.time() >= deadline else "max_evals"
    return SearchOutcome(sorted(results, key=lambda r: (r.tid, r.rung)), stop, budget,
                         planner.rungs, time.time() - start, planner.configs)


def _search_parallel(params: Params, data: Matrices, client, planner: _Planner, finished,
                     deadline: float, rule: StopRule | None,
                     references: dict[int, list[Reference]], report) -> None:
    """Keep ``parallelism`` fits in flight on the cluster (fewer when memory says so)."""
    from distributed import wait

    from tarn.core.compute import WorkerWatch

    cfg = params.tune
    plan = memory.plan(data.rows, len(data.y_valid), data.width, cfg.parallelism, True,
                       params.compute.memory_fraction)
    slots = max(1, plan.parallel)
    watch = WorkerWatch(client, params.compute)
    shared = watch.scatter(data)
    in_flight: dict = {}
    threads = params.compute.threads_per_worker
    while True:
        while len(in_flight) < slots and (fit := planner.next_fit(len(in_flight))) is not None:
            if shared.status != "finished":  # every worker holding the data died: send again
                shared = watch.scatter(data)
            # the stop rule compares with the fits finished so far (a snapshot)
            fut = client.submit(fit_trial, fit, shared, cfg.early_stopping_rounds, threads,
                                cfg.seed, rule, tuple(references.get(fit.rung, ())),
                                deadline, pure=False)
            in_flight[fut] = (fit, int(time.time() * 1000), time.monotonic())
        if not in_flight:
            break
        try:  # a killed worker's fit is rerun elsewhere by Dask (up to 3 times)
            done, _ = wait(list(in_flight), timeout=2, return_when="FIRST_COMPLETED")
        except TimeoutError:
            watch.check()
            now = time.monotonic()
            report(extra="; in flight: " + ", ".join(
                f"trial {f.tid} at {f.rows:,} rows ({now - t0:.0f} s)"
                for f, _, t0 in in_flight.values()))
            continue
        except Exception:  # noqa: BLE001 - cancelled: the data they needed died with a worker
            watch.check()
            done = {f for f in in_flight if f.status in ("cancelled", "error", "finished")}
            if not done:
                continue
        for fut in done:
            fit, started_ms, _ = in_flight.pop(fut)
            try:
                r: TrialResult = fut.result()
            except Exception as e:  # noqa: BLE001 - e.g. a worker died: record, go on
                r = TrialResult(fit.tid, fit.hparams, "fail", error=f"{type(e).__name__}: {e}",
                                rung=fit.rung, rows=fit.rows, cap=fit.cap)
            finished(r, started_ms)


def choose(results: list[TrialResult]) -> TrialResult:
    """The chosen fit: the lowest validation loss among clean fits of the highest rung any
    clean fit reached (fits on fewer rows are not comparable); else any successful fit."""
    clean = [r for r in results if r.clean]
    pool = clean or [r for r in results if r.status == "ok"]
    top = max(r.rung for r in pool)
    return min((r for r in pool if r.rung == top), key=lambda r: (r.loss, r.tid))


OTHER_CANDIDATES = 5


def unmitigated_choice(results: list[TrialResult], data: Matrices, cfg: TuneConfig,
                       deadline: float, progress: Progress = silent) -> TrialResult | None:
    """When the search tuned the reweighed model: the configuration of the unmitigated one
    (compared like with like with the default references, and fitted beside the registered
    model): the best few configurations refitted without weights on every row, the lowest
    validation loss kept with its own early-stopped rounds. One candidate when the budget
    has run out; None when the search was unweighted. (Refits, not trials: the tuning run
    records the chosen one's figures, not a child run each.)"""
    if data.w_train is None:
        return None
    top = max(r.rung for r in results if r.clean)
    pool = sorted((r for r in results if r.clean and r.rung == top),
                  key=lambda r: (r.loss, r.tid))
    k = OTHER_CANDIDATES if time.time() < deadline else 1
    unweighted = replace(data, w_train=None)
    refits = []
    for r in pool[:k]:
        progress("tune", f"refitting trial {r.tid} without the reweighing weights", 0, None)
        fit = Fit(r.tid, r.params, r.rung, data.rows, r.cap)
        refits.append(fit_trial(fit, unweighted, cfg.early_stopping_rounds, cfg.n_jobs,
                                cfg.seed, keep_scores=True))
    ok = [r for r in refits if r.clean]
    return min(ok, key=lambda r: (r.loss, r.tid)) if ok else None


def mitigation_scores(best: TrialResult, unmitigated: TrialResult | None, data: Matrices,
                      cfg: TuneConfig, progress: Progress = silent) -> pd.DataFrame:
    """The validation scores of both models, for the train stage to compare mitigation with
    none (fairness and quality, :func:`tarn.core.bias.decide_mitigation`): the chosen
    (reweighed) configuration refitted as the search fitted it, keeping its scores, beside
    the unmitigated refit's. ``row`` names each score's row (see ``Matrices.valid_rows``).
    Empty when the search was unweighted (nothing to compare)."""
    if unmitigated is None or unmitigated.scores is None or data.valid_rows is None:
        return pd.DataFrame({"row": np.zeros(0, dtype=np.int64)})
    progress("tune", f"refitting trial {best.tid} with the reweighing weights for the "
             "comparison with no mitigation", 0, None)
    mitigated = fit_trial(Fit(best.tid, best.params, best.rung, data.rows, best.cap), data,
                          cfg.early_stopping_rounds, cfg.n_jobs, cfg.seed, keep_scores=True)
    if mitigated.scores is None:
        return pd.DataFrame({"row": np.zeros(0, dtype=np.int64)})
    out = {"row": np.asarray(data.valid_rows, dtype=np.int64)}
    for name, r in (("mitigated", mitigated), ("unmitigated", unmitigated)):
        sc = np.asarray(r.scores, dtype=np.float64)
        cols = sc.reshape(len(sc), -1)
        for j in range(cols.shape[1]):
            out[f"{name}_{j}"] = cols[:, j]
    return pd.DataFrame(out)


def too_small_budget(outcome: SearchOutcome, cfg: TuneConfig) -> str:
    """When no fit finished within the budget: why, and the smallest budget that would do
    (the first fit's seconds per round x its round cap, with headroom)."""
    if any(r.clean for r in outcome.results):
        return ""
    cut = [r for r in outcome.results if r.cut and r.rounds]
    if not cut:
        return ""
    r = cut[0]
    need = math.ceil(1.5 * r.duration_s / r.rounds * r.cap + 5)
    return (f"tune.timeout_s {outcome.budget_s:g} s is too small for one fit: a fit of "
            f"{r.rows:,} rows reached round {r.rounds} of up to {r.cap} in {r.duration_s:.1f} s "
            f"without early stopping; set tune.timeout_s to at least {need} (or 'auto')")


def run(params: Params, root: Path, progress: Progress = silent) -> TuneResult:
    """Search, log every fit under one parent run, write the best configuration."""
    params = stage_view(params, "tune", READS, AMBIENT)
    import mlflow

    from tarn.core.compute import dask_client
    from tarn.core.tracking import connect, log_inputs, params_hash, quiet_mlflow, split_inputs
    from tarn.core.tracking import start_run as open_run

    began = time.time()  # the run covers the reference fits and the search
    cfg = params.tune
    if cfg is None:
        from tarn.errors import ConfigError
        raise ConfigError("params.yaml has no `tune` section", "add one (see the README)")
    data, pre = matrices(params, root, progress)
    task = data.task
    budget = budget_of(cfg, data)
    # the default references first: the bar the search must clear, fitted on the same rows
    # (before the budget starts: a loaded machine must not leave the search no time at all)
    refs = reference.score_references(
        task, data.z_train, data.y_train, data.z_valid, data.y_valid, cfg.n_jobs, cfg.seed,
        on_fit=lambda name: progress("tune", f"default reference on {data.rows:,} rows: "
                                     f"{reference.REFERENCES[name]}", 0, None),
        folds=data.folds)
    tracking = connect(params.mlflow, root)
    with quiet_mlflow(), open_run("tune", tracking.experiment_id, began) as parent:
        log_inputs(parent.info.run_id, split_inputs(
            params, root, {"train": "training", "valid": "validation"}))
        mlflow.set_tags({RunTag.STAGE: "tune", RunTag.PARAMS_HASH: params_hash(params, lineage_keys(
            "tune"))})
        mlflow.log_params({"max_evals": cfg.max_evals, "parallelism": cfg.parallelism,
                           "timeout_s": cfg.timeout_s, "budget_s": round(budget, 1),
                           "seed": cfg.seed, "n_estimators": cfg.n_estimators,
                           "early_stopping_rounds": cfg.early_stopping_rounds,
                           "stop_rule": _describe_rule(cfg),
                           "train_rows": data.rows, "design_columns": data.width,
                           "warm_starts": len(cfg.warm_starts),
                           "space": json.dumps({k: v.model_dump(exclude_none=True)
                                                for k, v in cfg.space.items()})[:6000]})
        mlflow.log_params({"task": task.kind, "loss": f"val_{task.loss}"})
        logger = _TrialLogger(parent.info.run_id, tracking.experiment_id, task.loss)
        started = time.time()  # the search's budget: every fit, those in flight included
        if cfg.parallelism > 1 or params.compute.scheduler:  # a named cluster is always used
            with dask_client(params.compute, n_workers=cfg.parallelism) as client:
                outcome = search(params, data, logger.log, progress, client, budget, started)
        else:
            outcome = search(params, data, logger.log, progress, budget_s=budget,
                             started=started)
        results = outcome.results
        ok = [r for r in results if r.status == "ok"]
        if not ok:
            raise TarnError(f"all {len(results)} fits failed; first error: "
                            f"{results[0].error.splitlines()[0] if results else 'none run'}",
                            "check the search space and the prepared data")
        small = too_small_budget(outcome, cfg)
        if small:
            raise TarnError(small, "raise tune.timeout_s in params.yaml")
        best = choose(results)
        unmitigated = unmitigated_choice(results, data, cfg, started + budget, progress)
        compared_scores = mitigation_scores(best, unmitigated, data, cfg, progress)
        # like with like: the unmitigated model's validation loss against the references
        compared = unmitigated or best
        verdict = reference.verdict(task, compared.loss, refs, data.validation) if (
            best.rows == data.rows) else ""
        per_rung = [{"rows": rows, "fits": sum(1 for r in results if r.rung == k)}
                    for k, rows in enumerate(outcome.rungs)]
        stopped = [r for r in ok if r.stopped and not r.cut]
        summary = TuneSummary(
            params=best.params, best_iteration=best.best_iteration,
            rows=best.rows,  # the training rows the chosen fit saw
            validation=data.validation, task=task.kind,
            loss=f"val_{task.loss}",  # the figure the search minimized
            figures={f"val_{task.loss}": best.loss,
                     **{f"val_{k}": v for k, v in best.figures.items()}},
            trial=best.tid, n_trials=outcome.configs, n_fits=len(results),
            n_failed=len(results) - len(ok), n_stopped_early=len(stopped),
            n_capped=sum(r.capped for r in results), fits_per_rung=per_rung,
            budget_s=round(outcome.budget_s, 1), stop_reason=outcome.stop_reason,
            reference_val=reference.as_dict(refs, task),
            # the search tuned the reweighed model: the unmitigated one's configuration and
            # rounds (unweighted refits of the best few); None when the search was unweighted
            unmitigated=None if unmitigated is None else TuneSummary.unmitigated_entry(
                unmitigated.params, unmitigated.best_iteration, unmitigated.tid,
                f"val_{task.loss}", unmitigated.loss),
            reference_verdict=verdict,
            # validation scores of both models (models/validation_scores.parquet): the train
            # stage decides whether reweighing is kept; None when nothing was compared
            mitigation_check=None if compared_scores.empty else ScoresOnValidation(
                "train+valid" if data.folds else "valid", data.validation, VALIDATION_SCORES,
                splits_digest(params, root, ("train", "valid") if data.folds else ("valid",))),
            parent_run_id=parent.info.run_id, duration_s=outcome.duration_s)
        mlflow.log_metrics({f"best_val_{task.loss}": best.loss,
                            **{f"best_val_{k}": v for k, v in best.figures.items()},
                            **{f"reference_{r.name}_val_{task.loss}": r.loss for r in refs},
                            **summary.search_counts(),
                            **({f"unmitigated_val_{task.loss}": unmitigated.loss,
                                "unmitigated_trial": unmitigated.tid} if unmitigated else {}),
                            "duration_s": outcome.duration_s})
        mlflow.set_tags({RunTag.BEST_TRIAL: str(best.tid), RunTag.STOP_REASON:
                         outcome.stop_reason, **({RunTag.REFERENCE_VERDICT: verdict}
                                                 if verdict else {})})
    models = root / params.paths.models
    reports = root / params.paths.reports
    with staged() as st:
        st.json(models / BEST, summary.to_json())
        st.parquet(models / VALIDATION_SCORES, compared_scores)
        st.json(reports / TUNE_REPORT, summary.report_json())
        st.text(reports / TUNE_TRIALS, f"trial,rung,rows,val_{task.loss},best_so_far\n" + "".join(
            f"{r.tid},{r.rung},{r.rows},{r.loss},{b}\n" for r, b in _running_best(results)))
    return TuneResult(summary, results, parent.info.run_id)


def _running_best(results: list[TrialResult]):
    best = math.inf
    for r in results:
        if r.status == "ok":
            best = min(best, r.loss) if r.rung == 0 else best
            yield r, best
