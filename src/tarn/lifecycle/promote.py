"""Promotion and rollback: measure the candidate, let the gates judge, have the registry apply
the verdict, then nudge the server so the deployment happens at once (it also polls)."""

from __future__ import annotations

from pathlib import Path

from tarn.config import Params
from tarn.core import windows
from tarn.core.catalog import SplitData, load_split
from tarn.core.progress import Step, no_steps
from tarn.core.registry import Promotion, Registry
from tarn.core.signing import DeployKey, project_key
from tarn.lifecycle.gates import Figures, Gates, gate_metric, judge


def registry(params: Params, root: Path) -> Registry:
    return Registry(params.mlflow, root, params.promote.alias)


def measure(reg: Registry, params: Params, root: Path, candidate: str,
            champion: str | None, step: Step = no_steps,
            test: SplitData | None = None, window: str = "") -> Figures:
    """Score candidate and champion on the same held-out rows (``test``, else the prepared
    test split), each with its own task and threshold (from its card); the gate metric and
    the fairness gap are the candidate's task's. Both are re-measured here, never read from
    an earlier run: after the test window moved, the champion's old figure is on other rows.
    ``step`` hears of each measurement."""
    cfg = params.promote
    if test is None:
        step("reading the test split")
        test = load_split(params, root, "test")
    tested = sorted(test.frame["batch"].astype(str).unique()) if "batch" in test.frame else []
    window = window or windows.gate_label(
        tested, len(test.y), reg.lineage(candidate).batches,
        reg.lineage(champion).batches if champion else None)
    step(f"measuring on {window}")
    if champion:
        step(f"schema gate: version {candidate}'s inputs and task against champion {champion}'s")
    problems = reg.schema_problems(candidate, champion) if champion else []
    step(f"loading candidate version {candidate} and scoring {len(test.X):,} test rows")
    task, cand_scores = reg.scores(candidate, test.X)
    metric = gate_metric(cfg, task.kind)
    champ_metric = None  # no champion, or one no metric compares (the problems say why)
    if champion and not problems:
        step(f"loading champion version {champion} and scoring the same rows")
        champ_task, champ_scores = reg.scores(champion, test.X)
        champ_metric = champ_task.metric(metric, test.y, champ_scores)
    # every sensitive feature is measured, and any other gated one; none declared: the gate is
    # skipped, and the verdict says so
    features = list(dict.fromkeys([*params.schema.sensitive,
                                   *cfg.gated(params.schema.sensitive)]))
    gaps: dict[str, float | None] = {}
    unmeasured: dict[str, str] = {}
    if features:
        step(f"fairness gate: gap over the groups of {', '.join(features)}")
        fair = task.fairness(test.y, cand_scores, test.frame, features,
                             params.bias.min_group_rows)
        for feat in features:
            gaps[feat] = fair[feat]["gap"]
            if gaps[feat] is None:
                sizes = ", ".join(f"{g} {int(v['count'])}"
                                  for g, v in fair[feat]["groups"].items())
                unmeasured[feat] = (f"fewer than two groups with bias.min_group_rows "
                                    f"({params.bias.min_group_rows}) test rows ({sizes}); "
                                    "lower it or hold out more rows")
    return Figures(candidate, champion, task.metric(metric, test.y, cand_scores), champ_metric,
                   gaps, problems, task.kind, metric, unmeasured, window)


def promote(params: Params, root: Path, version: str | None = None, *, latest: bool = False,
            force: bool = False, reason: str = "", actor: str | None = None,
            step: Step = no_steps, test: SplitData | None = None,
            window: str = "", key: DeployKey | None = None) -> Promotion:
    """Gate ``version`` (or the newest) against the champion and make it production; ``test``
    replaces the prepared test split as the rows both are measured on, and ``window`` says
    what they are (an incremental version: the test split and the newest rows of its new
    data, which batch labels alone would call in-sample). The verdict is signed with the
    deployment ``key`` (default: the project's, ``serve.deploy_key``) before the alias moves:
    servers deploy only signed versions."""
    key = key or project_key(params, root)
    step("opening the model registry")
    reg = registry(params, root)
    target = reg.latest() if latest else str(version)

    def gates(candidate: str, champion: str | None) -> Gates:
        verdict = judge(measure(reg, params, root, candidate, champion, step, test, window),
                        params.promote, params.schema.sensitive)
        step(f"gates {'passed' if verdict.passed else 'refused'}: "
             + ("moving the alias" if verdict.passed else "recording the verdict"))
        return verdict

    step(f"version {target}: " + ("forced, gates skipped; moving the alias" if force else
                                  "measuring the gates (champion: the production version)"))
    return reg.promote(target, None if force else gates, reason=reason, actor=actor, key=key)


def rollback(params: Params, root: Path, reason: str = "", actor: str | None = None,
             step: Step = no_steps) -> Promotion:
    """Put back the version that was production before the current one (a forced promotion,
    recorded as such). Nothing is signed: the version keeps the signature it got when it
    was promoted, which servers check as for any deployment."""
    step("opening the model registry")
    reg = registry(params, root)
    step("moving the alias back to the previous production version")
    return reg.rollback(reason, actor)


def notify_server(url: str, secret: str) -> str:
    """Nudge the backend at ``url`` to deploy now (best effort: it also polls).

    The admin secret travels only over https, or over http to a loopback address (it never
    leaves the machine), straight to ``url``: proxy settings (``http_proxy``, ``https_proxy``)
    are ignored, since a proxy would receive the ``Authorization`` header, and no redirect is
    followed: a redirect could hand the secret to another host."""
    import ipaddress
    import urllib.error
    import urllib.parse
    import urllib.request

    from tarn.core.tracking import redact

    if not url or not secret:
        return "server not notified (set serve.notify_url and TARN_ADMIN_SECRET); it polls"
    shown = redact(url)
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        return (f"server at {shown} not notified: the admin secret is sent only over https or "
                "to a loopback address; it will pick the change up when it polls")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            return None  # urllib then raises HTTPError for the 3xx

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)
    base = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
    req = urllib.request.Request(f"{base.rstrip('/')}/admin/reconcile", data=b"{}",
                                 method="POST", headers={"Authorization": f"Bearer {secret}",
                                                         "Content-Type": "application/json"})
    try:
        with opener.open(req, timeout=30) as r:
            body = r.read(10_000).decode("utf-8", "replace")
        return redact(f"server at {shown} reconciled: {body}")
    except urllib.error.HTTPError as e:
        what = "redirected (not followed)" if 300 <= e.code < 400 else f"answered {e.code}"
        return f"server at {shown} {what}; it will pick the change up when it polls"
    except OSError as e:
        return redact(f"server at {shown} not reachable ({e}); it will pick the change up "
                      "when it polls")
