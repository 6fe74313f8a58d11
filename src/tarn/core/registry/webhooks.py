"""Registry webhooks: the tracking server calls tarn's server when the alias moves."""

from __future__ import annotations

from tarn.core.registry.common import Connection, RegistryError


class Webhooks(Connection):
    def register_webhook(self, url: str, secret: str) -> str:
        """Ask the tracking server to call ``url`` when an alias of this model is set.

        Only a remote ``mlflow server`` delivers webhooks (not a local SQLite store)."""
        if not self.tracking.uri.startswith(("http://", "https://")):
            raise RegistryError("webhooks need a remote MLflow tracking server",
                                "set mlflow.tracking_uri / MLFLOW_TRACKING_URI to its URL; "
                                "locally the server polls the alias instead")
        if not secret:
            raise RegistryError("no webhook secret", "set TARN_WEBHOOK_SECRET")
        hook = self.client.create_webhook(
            name=f"tarn-{self.name}-{self.alias}", url=url,
            events=["model_version_alias.created"], secret=secret,
            description=f"tarn: deploy {self.name}@{self.alias}")
        return hook.webhook_id
