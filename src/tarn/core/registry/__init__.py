"""Every call to the MLflow model registry, split by concern; no other module calls it.

- :mod:`~tarn.core.registry.common`: the connection, errors, results, pure helpers
- :mod:`~tarn.core.registry.reads`: versions, aliases, production, stage, records, metrics
- :mod:`~tarn.core.registry.loading`: download, check and load a version; its card, schema
- :mod:`~tarn.core.registry.register`: register a version; write its records (tags)
- :mod:`~tarn.core.registry.lock`: the two-level promotion lock
- :mod:`~tarn.core.registry.sync`: promote, roll back, keep alias and stage in agreement
- :mod:`~tarn.core.registry.webhooks`: the tracking server's webhook on the alias
- :mod:`~tarn.core.registry.view`: a read-only view without MLflow, for commands that only
  read (``tarn status``, ``tarn report``)

:class:`Registry` composes the parts (each a mixin over one :class:`Connection`), so the
callers keep one object and one import (``from tarn.core.registry import Registry``): the
promotion, training, serving and retraining code, and the tests, use it unchanged.
Importing this package does not import MLflow; opening a :class:`Registry` does.
"""

from __future__ import annotations

from tarn.core.registry.common import (
    CARD_MARKDOWN,
    DEFAULT_ALIAS,
    Connection,
    Promotion,
    PromotionRefused,
    Registered,
    RegistryError,
    Verdict,
    headline,
    logged_model_id,
)
from tarn.core.registry.loading import Loading
from tarn.core.registry.lock import LOCK_SETTLE_S, LOCK_TTL_S, LOCK_WAIT_S, PromotionLock
from tarn.core.registry.reads import Reads
from tarn.core.registry.register import Registration
from tarn.core.registry.sync import Sync
from tarn.core.registry.webhooks import Webhooks

__all__ = [
    "CARD_MARKDOWN", "DEFAULT_ALIAS", "LOCK_SETTLE_S", "LOCK_TTL_S", "LOCK_WAIT_S",
    "Connection", "Loading", "Promotion", "PromotionLock", "PromotionRefused", "Reads",
    "Registered", "Registration", "Registry", "RegistryError", "Sync", "Verdict", "Webhooks",
    "headline", "logged_model_id",
]


class Registry(Sync, Loading, Webhooks):
    """The registered model named in ``mlflow.registered_model``, in the configured store:
    reads, loading, registration and records, the promotion lock, alias/stage sync and
    webhooks, each defined in its own module."""
