"""Loading a version: the one place a ``models:/`` URI is downloaded, checked and loaded,
and what a version's card and signature say about the requests it takes.

``tarn.core.model`` and ``tarn.core.task`` are imported inside the methods on purpose: they
pull in scikit-learn (and MLflow's artifact code), seconds of imports that the commands which
only read the registry (``tarn status``) never need."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tarn.core.registry.common import Connection
from tarn.core.signing import DeployKey, UnsignedVersion, artifact_digest, check
from tarn.core.tags import UNSIGNED_REFUSAL, GateRecord, LoadRefusal

if TYPE_CHECKING:
    import pandas as pd


class Loading(Connection):
    """Download, check and load versions; compare two versions' request schemas."""

    def load_model(self, version: str):
        """The version's sklearn Pipeline: the one place a ``models:/`` URI is loaded.

        The artifacts are downloaded into a folder that is always removed, checked by
        :func:`tarn.core.model.load_trusted` (skops only, no bundled code, allow-listed
        types) and never handed to MLflow's own loader. A refusal is recorded on the version.
        """
        return self.load_with_card(version)[0]

    def load_with_card(self, version: str, key: DeployKey | None = None
                       ) -> tuple[object, dict]:
        """(Pipeline, card) of a version from one download: what it predicts (task, classes,
        threshold) and the contract it was trained on travel with it (``{}`` for a version
        from before cards; see :func:`tarn.core.model.read_card`).

        With ``key`` (deploying it: the server, ``tarn bundle publish``) the version's
        deployment signature is checked against the downloaded files and card before any
        file is deserialized: a version ``tarn promote`` did not sign raises
        :class:`tarn.core.signing.UnsignedVersion`, recorded on the version like any
        refusal."""
        import mlflow.artifacts

        from tarn.core.model import UntrustedModel, load_trusted, read_card  # scikit-learn

        with tempfile.TemporaryDirectory(prefix="tarn-model-") as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=self.uri(version),
                                                             dst_path=tmp))
            try:
                card = read_card(local)
                self._artifacts()[str(version)] = (artifact_digest(local), card)
                if key is not None:
                    self._check_signature(str(version), key)
                return load_trusted(local), card
            except (UntrustedModel, UnsignedVersion) as e:
                e.message = f"{self.name} version {version} refused: {e.message}"
                with contextlib.suppress(Exception):  # recording must not hide the refusal
                    self._tag(version, LoadRefusal(e.message).to_tags())
                    self._forget_agreed(str(version))
                raise

    def _artifacts(self) -> dict[str, tuple[str, dict]]:
        """version -> (digest of its model files, card), from downloads already made (the
        gates' measurement): signing a promotion needs no second download."""
        return self.__dict__.setdefault("_artifact_digests", {})

    def artifacts(self, version: str) -> tuple[str, dict]:
        """(digest of the version's model files, its card); downloaded unless known. Nothing
        is deserialized."""
        import mlflow.artifacts

        from tarn.core.model import read_card  # scikit-learn

        known = self._artifacts().get(str(version))
        if known is not None:
            return known
        with tempfile.TemporaryDirectory(prefix="tarn-model-") as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=self.uri(version),
                                                             dst_path=tmp))
            self._artifacts()[str(version)] = (artifact_digest(local), read_card(local))
        return self._artifacts()[str(version)]

    def _check_signature(self, version: str, key: DeployKey) -> None:
        """Raise :class:`UnsignedVersion` unless the version's gate record carries a valid
        signature of its downloaded files and card."""
        digest, card = self._artifacts()[version]
        tags = dict(self.client.get_model_version(self.name, version).tags)
        why = check(key, GateRecord.from_tags(tags).signature, name=self.name,
                    version=version, digest=digest, card=card)
        if why:
            raise UnsignedVersion(
                f"{UNSIGNED_REFUSAL}: {why}",
                f"`tarn promote --version {version}` runs the gates and signs it; or put a "
                "signed version back in production (`tarn rollback`, or `tarn promote "
                "--version N`)")

    def card(self, version: str) -> dict:
        """The card the version carries in its ``MLmodel`` metadata (task, classes, threshold,
        contract; see :func:`tarn.core.model.packaging`); ``{}`` for a version from before
        cards. Only the ``MLmodel`` YAML is downloaded and read: nothing is executed."""
        import mlflow.artifacts

        from tarn.core.model import read_card  # scikit-learn

        with tempfile.TemporaryDirectory(prefix="tarn-card-") as tmp:
            mlflow.artifacts.download_artifacts(artifact_uri=f"{self.uri(version)}/MLmodel",
                                                dst_path=tmp)
            return read_card(Path(tmp))

    def task(self, version: str):
        """The :class:`tarn.core.task.Task` the version was trained for (from its card)."""
        from tarn.core.task import Task  # scikit-learn

        return Task.from_card(self.card(version))

    def scores(self, version: str, X: pd.DataFrame):
        """(task, scores): the version's own task and its scores for ``X`` (binary: P(class 1);
        multiclass: (n, K) probabilities; regression: values)."""
        from tarn.core.task import Task  # scikit-learn

        pipe, card = self.load_with_card(version)
        task = Task.from_card(card)
        return task, task.scores(pipe, X)

    def input_schema(self, version: str) -> dict[str, tuple[str, bool]]:
        from mlflow.models import get_model_info

        info = get_model_info(self.uri(version))
        if info.signature is None:
            return {}
        return {c.name: (c.type.name, c.required) for c in info.signature.inputs.inputs}

    def schema_problems(self, candidate: str, champion: str) -> list[str]:
        """Why the candidate cannot take the champion's requests or answer them the same way
        (empty = compatible): its columns, and its task and classes (from the cards: a
        binary model's clients read a probability, a regression model's a value)."""
        cand, champ = self.input_schema(candidate), self.input_schema(champion)
        problems = []
        t_cand, t_champ = self.task(candidate), self.task(champion)
        if why := t_cand.compatible(t_champ):  # the task; with classes, their names
            problems.append(why)
        for col, (kind, _required) in champ.items():
            if col not in cand:
                problems.append(f"column {col!r} missing")
            elif cand[col][0] != kind:
                problems.append(f"column {col!r} is {cand[col][0]}, was {kind}")
        for col, (_, required) in cand.items():
            if col not in champ and required:
                problems.append(f"new required column {col!r}")
        return problems
