"""What every part of the registry shares: the connection to the registered model, the
errors, the results of registering and promoting, and the small pure helpers.

MLflow itself is imported only when a :class:`Connection` is opened, so the read-only view
(:mod:`tarn.core.registry.view`) and the commands that only read stay free of it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tarn.config import MlflowConfig
from tarn.core.tags import VersionTag
from tarn.core.tracking import connect
from tarn.errors import TarnError

DEFAULT_ALIAS = "production"
CARD_MARKDOWN = "model_card.md"  # on the version's run: the card, for a person


def headline(metrics: dict[str, float]) -> str:
    """The readable test figure ("roc_auc 0.9121") from ``test_*`` metrics ("" if none)."""
    for name in VersionTag.HEADLINE:
        v = metrics.get(f"test_{name}")
        if isinstance(v, int | float) and not isinstance(v, bool):
            return f"{name} {float(v):.4f}"
    return ""


def logged_model_id(model_uri: str) -> str | None:
    """The MLflow 3 logged model id in a ``models:/m-...`` URI (None for another URI)."""
    return model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None


class RegistryError(TarnError):
    """The registry refuses, or a version does not exist."""


class Verdict(Protocol):
    """What the gates decided about a candidate (see ``tarn.lifecycle.gates``)."""

    @property
    def passed(self) -> bool: ...

    def failures(self) -> list[str]: ...

    def as_dict(self) -> dict: ...


class PromotionRefused(TarnError):
    """A candidate failed its gates; ``gates`` holds the verdict and its figures."""

    def __init__(self, message: str, hint: str, gates: Verdict) -> None:
        super().__init__(message, hint)
        self.gates = gates


@dataclass(frozen=True)
class Promotion:
    version: str
    previous: str | None
    gates: Verdict | None
    forced: bool


@dataclass(frozen=True)
class Registered:
    run_id: str
    model_uri: str
    registered_model: str
    version: str

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, "model_uri": self.model_uri,
                "registered_model": self.registered_model, "version": self.version}


class Connection:
    """The registered model named in ``mlflow.registered_model``, in the configured store:
    the MLflow client every part of :class:`tarn.core.registry.Registry` calls through."""

    def __init__(self, cfg: MlflowConfig, root: Path, alias: str = DEFAULT_ALIAS) -> None:
        import mlflow  # heavy (seconds): only when the registry is really opened

        self.cfg = cfg
        self.root = root
        self.tracking = connect(cfg, root)
        self.name = cfg.registered_model
        self.alias = alias
        self.client = mlflow.MlflowClient(self.tracking.uri)

    def uri(self, version: str) -> str:
        return f"models:/{self.name}/{version}"

    def _tag(self, version: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_model_version_tag(self.name, version, k, v)

    def _forget_agreed(self, version: str) -> None:
        """A refused version is never the agreed production: implemented by the alias/stage
        sync (:class:`tarn.core.registry.sync.Sync`), called by loading when it refuses."""
        raise NotImplementedError
