"""A read-only view of the registered model that does not import MLflow.

``tarn status`` and ``tarn report`` only read: the versions, their stage, aliases and tags,
the production alias, and the metrics of a version's run. Importing MLflow alone takes
seconds, so those reads go to the store directly when tarn knows how to read it:

- a remote tracking server (``http(s)://``): MLflow's public REST API, over urllib
  (``registered-models/get``, ``model-versions/search``, ``registered-models/alias``,
  ``runs/get``);
- the local SQLite store (``sqlite:///``): MLflow's tables, opened read-only
  (``mode=ro``), but only at a schema revision (``alembic_version``) tarn has checked
  (:data:`KNOWN_SCHEMAS`); a store migrated by a newer MLflow is read through the client.

Anything else (PostgreSQL, MySQL, Databricks, a server that needs MLflow's authentication or
TLS settings, workspaces) is read through :class:`tarn.core.registry.Registry`: the same
answers, at MLflow's import cost. ``tests/integration/test_registry_view.py`` checks that
every view answers as the MLflow client does, on a SQLite store and on a ``mlflow server``.

Nothing here writes. When alias and stage disagree, making them agree is a write under the
promotion lock: :func:`settle_production` opens the full registry for that case only.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tarn.config import MlflowConfig
from tarn.core.registry import Registry  # the facade: importing it does not import MLflow
from tarn.core.registry.common import DEFAULT_ALIAS, RegistryError
from tarn.core.tracking import TrackingError, probe, redact
from tarn.errors import first_line

# MLflow SQLite schema revisions (alembic heads) whose registry tables this module reads;
# add a revision once tests/integration/test_registry_view.py passes against it
KNOWN_SCHEMAS = frozenset({"dc11669786a5"})
DELETED_STAGE = "Deleted_Internal"  # MLflow's soft-deleted versions: never shown
WORKSPACE = "default"  # MLflow's workspace column, when workspaces are off
# MLflow client settings the REST view does not apply: with any of them set, the MLflow
# client reads the server (it knows how to authenticate, verify TLS, pick a workspace)
CLIENT_SETTINGS = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
                   "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_AUTH",
                   "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_CLIENT_CERT_PATH",
                   "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_ENABLE_WORKSPACES",
                   "MLFLOW_WORKSPACE")


@dataclass(frozen=True)
class VersionInfo:
    """A model version as a reader needs it (the attribute names of MLflow's
    ``ModelVersion``, so code written for either reads both)."""

    version: str
    current_stage: str
    run_id: str
    tags: dict[str, str] = field(default_factory=dict)
    last_updated_timestamp: int | None = None


class RegistryView(Protocol):
    """What a reader may ask; :class:`tarn.core.registry.Registry` answers the same."""

    name: str
    alias: str

    def versions(self) -> list[VersionInfo]: ...

    def version(self, version: str) -> VersionInfo: ...

    def aliases(self) -> dict[str, str]: ...

    def production(self) -> str | None: ...

    def stage_versions(self, stage: str = "Production") -> list[str]: ...

    def run_metrics(self, version: str, mv: VersionInfo | None = None) -> dict[str, float]: ...


def _missing(name: str, version: str) -> RegistryError:
    return RegistryError(f"{name} version {version} not found",
                         "see the versions with `tarn status`")


class _Reads:
    """The answers every view derives the same way from ``versions`` and ``aliases``."""

    name: str
    alias: str

    def versions(self) -> list[VersionInfo]:
        raise NotImplementedError

    def aliases(self) -> dict[str, str]:
        raise NotImplementedError

    def version(self, version: str) -> VersionInfo:
        found = [v for v in self.versions() if v.version == str(version)]
        if not found:
            raise _missing(self.name, version)
        return found[0]

    def production(self) -> str | None:
        if self.alias.lower() == "latest":  # MLflow's reserved alias: the newest version
            return max((v.version for v in self.versions()), key=int, default=None)
        return self.aliases().get(self.alias)

    def stage_versions(self, stage: str = "Production") -> list[str]:
        return sorted(v.version for v in self.versions() if v.current_stage == stage)


class EmptyView(_Reads):
    """No store yet (a fresh project): nothing registered, and nothing is created."""

    def __init__(self, name: str, alias: str) -> None:
        self.name, self.alias = name, alias

    def versions(self) -> list[VersionInfo]:
        return []

    def aliases(self) -> dict[str, str]:
        return {}

    def run_metrics(self, version: str, mv: VersionInfo | None = None) -> dict[str, float]:
        return {}


class SqliteView(_Reads):
    """MLflow's registry tables in a SQLite file, opened read-only."""

    def __init__(self, db: Path, name: str, alias: str) -> None:
        self.db, self.name, self.alias = db, name, alias

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            con = sqlite3.connect(f"{self.db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        except sqlite3.Error as e:
            raise TrackingError(f"MLflow store {self.db} cannot be opened ({first_line(e)})",
                                "check the file's permissions, or fix mlflow.store_dir") from e
        try:
            return con.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise TrackingError(f"MLflow store {self.db} cannot be read ({first_line(e)})",
                                "free the SQLite file (another process may hold it), then "
                                "retry") from e
        finally:
            con.close()

    def schema(self) -> str:
        rows = self._rows("SELECT version_num FROM alembic_version")
        return rows[0][0] if rows else ""

    def versions(self) -> list[VersionInfo]:
        tags: dict[int, dict[str, str]] = {}
        for key, value, version in self._rows(
                "SELECT key, value, version FROM model_version_tags WHERE name = ? AND "
                "workspace = ?", (self.name, WORKSPACE)):
            tags.setdefault(int(version), {})[key] = value
        rows = self._rows(
            "SELECT version, current_stage, run_id, last_updated_time FROM model_versions "
            "WHERE name = ? AND workspace = ? AND current_stage != ? ORDER BY version",
            (self.name, WORKSPACE, DELETED_STAGE))
        return [VersionInfo(str(v), stage, run_id or "", tags.get(int(v), {}), updated)
                for v, stage, run_id, updated in rows]

    def aliases(self) -> dict[str, str]:
        return {a: str(v) for a, v in self._rows(
            "SELECT alias, version FROM registered_model_aliases WHERE name = ? AND "
            "workspace = ?", (self.name, WORKSPACE))}

    def run_metrics(self, version: str, mv: VersionInfo | None = None) -> dict[str, float]:
        mv = mv or self.version(version)
        if not mv.run_id:
            return {}
        return {k: math.nan if nan else float(v) for k, v, nan in self._rows(
            "SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ?", (mv.run_id,))}


class RestView(_Reads):
    """A remote tracking server, through MLflow's REST API (``/api/2.0/mlflow``)."""

    def __init__(self, uri: str, name: str, alias: str, timeout_s: float = 30) -> None:
        self.uri, self.name, self.alias, self.timeout_s = uri.rstrip("/"), name, alias, timeout_s
        # proxies from the environment apply, as they do to MLflow's client (requests)
        self._open = urllib.request.build_opener().open

    def _get(self, endpoint: str, **query: str) -> dict | None:
        """The JSON answer, or None for "does not exist" (404, or MLflow's
        RESOURCE_DOES_NOT_EXIST / INVALID_PARAMETER_VALUE for a missing alias or model)."""
        url = f"{self.uri}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
        try:
            with self._open(url, timeout=self.timeout_s) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            try:
                code = json.loads(e.read() or b"{}").get("error_code", "")
            except ValueError:
                code = ""
            if e.code == 404 or code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise TrackingError(redact(f"MLflow tracking server {self.uri} refused {endpoint} "
                                       f"(HTTP {e.code} {code})".strip()),
                                "check the server's log, or fix mlflow.tracking_uri / "
                                "MLFLOW_TRACKING_URI") from e
        except (OSError, ValueError) as e:
            raise TrackingError(redact(f"MLflow tracking server {self.uri} does not answer "
                                       f"{endpoint} ({first_line(getattr(e, 'reason', e))})"),
                                "start it (README, \"Scaling out\"), or fix "
                                "mlflow.tracking_uri / MLFLOW_TRACKING_URI") from e

    def versions(self) -> list[VersionInfo]:
        out: list[VersionInfo] = []
        token = ""
        while True:
            query = {"filter": f"name = '{self.name}'", "max_results": "1000"}
            if token:
                query["page_token"] = token
            page = self._get("model-versions/search", **query) or {}
            for v in page.get("model_versions", []):
                if v.get("current_stage") == DELETED_STAGE:
                    continue
                out.append(VersionInfo(
                    str(v["version"]), v.get("current_stage", "None"), v.get("run_id") or "",
                    {t["key"]: t.get("value", "") for t in v.get("tags", [])},
                    int(v["last_updated_timestamp"]) if v.get("last_updated_timestamp")
                    else None))
            token = page.get("next_page_token", "")
            if not token:
                return sorted(out, key=lambda v: int(v.version))

    def aliases(self) -> dict[str, str]:
        model = (self._get("registered-models/get", name=self.name) or {}).get(
            "registered_model", {})
        return {a["alias"]: str(a["version"]) for a in model.get("aliases", [])}

    def production(self) -> str | None:
        if self.alias.lower() == "latest":
            return super().production()
        found = self._get("registered-models/alias", name=self.name, alias=self.alias)
        return str(found["model_version"]["version"]) if found else None

    def run_metrics(self, version: str, mv: VersionInfo | None = None) -> dict[str, float]:
        mv = mv or self.version(version)
        if not mv.run_id:
            return {}
        run = (self._get("runs/get", run_id=mv.run_id) or {}).get("run", {})
        return {m["key"]: float(m["value"]) for m in run.get("data", {}).get("metrics", [])}


class ClientView(_Reads):
    """The full :class:`tarn.core.registry.Registry` (MLflow's client) behind the same
    answers: the fallback for every store the light views do not read."""

    def __init__(self, registry) -> None:
        self.registry = registry
        self.name, self.alias = registry.name, registry.alias

    def versions(self) -> list[VersionInfo]:
        return [VersionInfo(str(v.version), v.current_stage, v.run_id or "", dict(v.tags),
                            v.last_updated_timestamp) for v in self.registry.versions()]

    def aliases(self) -> dict[str, str]:
        return self.registry.aliases()

    def production(self) -> str | None:
        return self.registry.production()

    def run_metrics(self, version: str, mv: VersionInfo | None = None) -> dict[str, float]:
        return self.registry.run_metrics(version, mv)


def store_uri(cfg: MlflowConfig, root: Path) -> str:
    """The tracking URI :func:`tarn.core.tracking.tracking_uri` would use, without creating
    the store's folder (a read creates nothing)."""
    if cfg.tracking_uri:
        return cfg.tracking_uri
    return f"sqlite:///{(root / cfg.store_dir).resolve() / 'mlflow.db'}"


def open_view(cfg: MlflowConfig, root: Path, alias: str = DEFAULT_ALIAS,
              env: Mapping[str, str] | None = None) -> RegistryView:
    """The lightest view that reads this store (see the module's docstring). ``env`` (the
    process environment by default) is only checked for MLflow client settings that the REST
    view would not apply."""
    env = os.environ if env is None else env
    uri, name = store_uri(cfg, root), cfg.registered_model
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            return EmptyView(name, alias)
        view = SqliteView(db, name, alias)
        try:
            known = view.schema() in KNOWN_SCHEMAS
        except TrackingError:  # not a store tarn can read (no alembic_version): MLflow says why
            known = False
        if known and not env.get("MLFLOW_ENABLE_WORKSPACES"):
            return view
    elif uri.startswith(("http://", "https://")) and not any(env.get(k)
                                                             for k in CLIENT_SETTINGS):
        probe(uri)  # fail in seconds, with the message every command gives
        return RestView(uri, name, alias)
    return ClientView(Registry(cfg, root, alias))  # MLflow's client: seconds of imports


def settle_production(view: RegistryView, cfg: MlflowConfig,
                      root: Path) -> tuple[tuple[str | None, list[str]], str | None]:
    """((alias target, versions in stage Production) as read, the production version once
    they agree). When they already agree nothing is written; otherwise the full registry
    resolves the disagreement under the promotion lock
    (:meth:`tarn.core.registry.Registry.production_intent`)."""
    before = (view.production(), view.stage_versions())
    alias, staged = before
    if (alias is not None and staged == [alias]) or (alias is None and not staged):
        return before, alias
    registry = (view.registry if isinstance(view, ClientView)
                else Registry(cfg, root, view.alias))  # MLflow's client: only to write
    return before, registry.production_intent()
