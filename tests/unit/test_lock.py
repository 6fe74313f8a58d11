"""requirements/dev.lock agrees with pyproject.toml (`make lock` re-pins it)."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from importlib import metadata

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.project import REPO

LOCK = REPO / "requirements" / "dev.lock"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
REQUIREMENTS = [Requirement(r) for r in
                [*PROJECT["dependencies"], *PROJECT["optional-dependencies"]["dev"],
                 *PROJECT["optional-dependencies"]["bench"]]]
FIX = "run `make lock` and commit requirements/dev.lock"


def _pins() -> dict[str, tuple[Version, str, list[str]]]:
    """name -> (version, marker text, hashes) for every entry of the lock."""
    text = LOCK.read_text()
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\\n]+))?", block)
        if m:
            pins[canonicalize_name(m.group(1))] = (
                Version(m.group(2)), (m.group(3) or "").strip(),
                re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return pins


PINS = _pins()


def test_lock_header_records_the_current_dependency_lists():
    """Same digest as the Makefile's DEPS_HASH: any edit of the lists needs a new lock."""
    digest = hashlib.sha256(json.dumps([sorted(PROJECT["dependencies"]), sorted(
        PROJECT["optional-dependencies"]["dev"]), sorted(
        PROJECT["optional-dependencies"]["bench"])]).encode()).hexdigest()
    first = LOCK.read_text().splitlines()[0]
    assert first == f"# pyproject-deps-sha256: {digest}", FIX


@pytest.mark.parametrize("req", REQUIREMENTS, ids=str)
def test_every_requirement_is_pinned_and_satisfied(req):
    name = canonicalize_name(req.name)
    assert name in PINS, f"{req} is not in the lock: {FIX}"
    version, _, hashes = PINS[name]
    assert req.specifier.contains(version, prereleases=True), \
        f"the lock pins {name}=={version}, outside {req}: {FIX}"
    assert hashes, f"{name} has no hash in the lock"


@pytest.mark.parametrize("req", [r for r in REQUIREMENTS if r.extras], ids=str)
def test_requested_extras_are_locked(req):
    """``dask[distributed]`` needs distributed in the lock, and so on (from the installed
    distribution's metadata, which the venv took from this lock)."""
    try:
        requires = metadata.requires(req.name) or []
    except metadata.PackageNotFoundError:
        pytest.fail(f"{req.name} is not installed: the venv is not the lock's (run `make venv`)")
    env = default_environment()
    for extra in req.extras:
        for dep in map(Requirement, requires):
            if dep.marker is None or not dep.marker.evaluate({**env, "extra": extra}):
                continue
            if dep.marker.evaluate({**env, "extra": ""}):
                continue  # not specific to this extra
            assert canonicalize_name(dep.name) in PINS, f"{dep} (for {req}) not locked: {FIX}"


def test_every_pin_has_hashes():
    assert len(PINS) > 100
    assert [n for n, (_, _, h) in PINS.items() if not h] == []
