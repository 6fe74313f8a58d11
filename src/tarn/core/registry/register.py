"""Registering a version and writing its records: lineage, retraining, gates, test figure,
deployment (the typed records of :mod:`tarn.core.tags`)."""

from __future__ import annotations

import json

from tarn.core.registry.common import CARD_MARKDOWN, Registered, Verdict, headline
from tarn.core.registry.reads import Reads
from tarn.core.tags import (
    DeploymentRecord,
    GateRecord,
    Lineage,
    RetrainRecord,
    RunTag,
    VersionTag,
)
from tarn.core.tracking import log_inputs, quiet_mlflow, start_run


class Registration(Reads):
    """New versions, and the records written on them."""

    def register(self, pipe, lineage: Lineage, run_name: str, logged_params: dict,
                 metrics: dict, pack, documents: dict[str, object] | None = None, *,
                 started: float | None = None, inputs: list | None = None) -> Registered:
        """Log the Pipeline as an MLflow model in a new run and register it as a new version
        carrying its lineage (one call: no version without its lineage). Training and
        retraining both register through here.

        ``started`` (a ``time.time()``) is when the work the run records began: the run
        starts then, so its duration in the UI is the fit's, not the upload's. ``inputs``
        (:class:`tarn.core.tracking.DataInput`) are the tables the model learned from: the
        run's datasets. The version gets the readable tags and one JSON lineage tag; the
        run keeps the flat tags, and the card as ``model_card.md``."""
        import mlflow
        import mlflow.sklearn

        # scikit-learn and skops: only a process that registers pays for them
        from tarn.core.model import TRUSTED_TYPES, card_markdown, pip_requirements

        tags = lineage.to_tags()
        readable = {VersionTag.TASK: str(pack.card.get("task", "")),
                    VersionTag.DATA: lineage.data_tag()}
        test = headline(metrics)
        if test:
            readable[VersionTag.TEST] = test
        version_tags = {**readable, **lineage.version_tags()}
        # the run starts when the work began (``started``), not at the upload
        with quiet_mlflow(), start_run(run_name, self.tracking.experiment_id, started) as run:
            mlflow.set_tags({**tags, RunTag.STAGE: run_name})
            mlflow.log_params(dict(logged_params))
            mlflow.log_metrics(metrics)
            log_inputs(run.info.run_id, list(inputs or []))
            for name, doc in (documents or {}).items():  # e.g. the manifest of the new data
                mlflow.log_dict(doc, name)
            mlflow.log_text(card_markdown(pack.card, lineage.as_json_dict(), metrics),
                            CARD_MARKDOWN)
            # no input example: MLflow would check it by loading the model with its own
            # loader, which tarn switches off (pickle); the signature carries the contract,
            # and tarn's loader and the server's warm-up check the model
            info = mlflow.sklearn.log_model(
                pipe, name="model", signature=pack.signature, pyfunc_predict_fn=pack.predict_fn,
                metadata=pack.metadata,
                skops_trusted_types=TRUSTED_TYPES, pip_requirements=pip_requirements())
            mv = mlflow.register_model(info.model_uri, self.name, tags=version_tags)
        return Registered(run.info.run_id, info.model_uri, self.name, str(mv.version))

    def record_deployment(self, version: str, record: DeploymentRecord) -> None:
        """Add ``record``'s target entries to the version's deployment record (each target
        keeps its own last entry: the server writes backend and bundle, others their own)."""
        before = DeploymentRecord.from_tags(dict(self.version(version).tags))
        self._tag(version, before.merged(record).version_tags())

    def record_retrain(self, version: str, record: RetrainRecord) -> None:
        """Why a retrained version exists, added to its lineage tag (written once, by the
        process that registered it, before anyone promotes it)."""
        tags = dict(self.version(version).tags)
        raw = tags.get(Lineage.TAG)
        if raw is None:  # a version from before the JSON lineage: its own tags
            self._tag(version, record.to_tags())
            return
        doc = {**json.loads(raw), **record.as_json_dict()}
        self._tag(version, {Lineage.TAG: json.dumps(doc, sort_keys=True, default=float,
                                                    separators=(",", ":"))})

    def record_gates(self, version: str, result: str, verdict: Verdict) -> None:
        self._tag(version, GateRecord(result, verdict.as_dict()).version_tags())

    def record_test(self, version: str, metrics: dict[str, float]) -> None:
        """The headline test figure on the version (``tarn.test``), from the evaluate
        stage's ``test_*`` metrics."""
        text = headline(metrics)
        if text:
            self._tag(version, {VersionTag.TEST: text})
