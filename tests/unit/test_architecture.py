"""The house plan, checked: arrows point down only, and dvc.yaml declares what each stage
really reads (params keys and source files), so `dvc repro` re-runs what a change affects."""

from __future__ import annotations

import copy
import importlib
import re

import pytest
import yaml

from tarn.config import UndeclaredParam, params_from_dict, stage_view
from tests.support.imports import closure, imports, layer, module_path, modules
from tests.support.project import REPO, missing_params, repo_params_dict

STAGES = ("snapshot", "etl", "prepare", "tune", "train", "evaluate")
# who may import whom (by layer: the folder under src/tarn, or the top-level module)
ALLOWED = {
    "errors": set(),
    "config": {"errors"},
    "datasets": set(),
    "core": {"config", "errors", "core"},
    "stages": {"config", "errors", "core"},
    "edge": {"config", "errors", "core", "edge"},
    "lifecycle": {"config", "errors", "core", "edge", "lifecycle"},
    "serve": {"config", "errors", "core", "edge", "serve"},
}
# inside the lifecycle, data flows one way: monitor -> retrain, gates -> promote -> retrain
LIFECYCLE_ORDER = ["init", "gates", "promote", "publish", "backend", "targets", "report", "monitor",
                   "simulate", "status", "reset", "retrain"]
# modules whose changes do not change a stage's result: validation, messages, terminal output
NOT_DEPS = {"tarn", "tarn.config", "tarn.errors", "tarn.core", "tarn.stages",
            "tarn.core.progress"}


def _dvc() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_the_layers_are_visible_from_the_package_folder():
    assert {p.name for p in (REPO / "src" / "tarn").iterdir() if p.is_dir()} >= {
        "core", "stages", "lifecycle", "edge", "serve", "datasets"}
    assert {p.stem for p in (REPO / "src" / "tarn" / "stages").glob("[a-z]*.py")} == set(STAGES)


@pytest.mark.parametrize("module", [m for m in modules() if layer(m) in ALLOWED
                                    or m in ("tarn.config", "tarn.errors")])
def test_arrows_point_down_only(module):
    own = layer(module) if layer(module) != "tarn" else module.split(".")[-1]
    for target in imports(module):
        other = layer(target) if layer(target) != "tarn" else target.split(".")[-1]
        assert other in ALLOWED[own] or other == own and own not in ("stages",), \
            f"{module} imports {target}: {own} may import only {sorted(ALLOWED[own])}"


def test_no_stage_imports_another_stage():
    for s in STAGES:
        others = {f"tarn.stages.{o}" for o in STAGES if o != s}
        assert not closure(f"tarn.stages.{s}") & others, s


def test_lifecycle_modules_import_only_earlier_ones():
    for i, name in enumerate(LIFECYCLE_ORDER):
        later = {f"tarn.lifecycle.{n}" for n in LIFECYCLE_ORDER[i + 1:]}
        assert not imports(f"tarn.lifecycle.{name}") & later, name


def test_only_the_registry_module_calls_the_model_registry():
    needles = ("models:/", "register_model(", "set_model_version_tag(",
               "set_registered_model_alias(", "transition_model_version_stage(",
               "mlflow.pyfunc.load_model(", "get_model_version", "search_model_versions(")
    for m in modules():
        if m == "tarn.core.registry" or m.startswith("tarn.core.registry."):
            continue  # the registry package: one module per concern
        text = module_path(m).read_text()
        found = [n for n in needles if n in text]
        assert not found, f"{m} calls the registry directly: {found}"


# a quoted name starting "tarn." (either quote, f-strings too); logger names are not tags
TAG_SPELLING = re.compile(r"(?<!getLogger\()[\"']tarn\.[a-z_]+")


def test_tags_are_written_in_one_module():
    for m in modules():
        if m in ("tarn.core.tags", "tarn.edge.runner"):  # runner: an ONNX metadata key
            continue
        assert not TAG_SPELLING.findall(module_path(m).read_text()), m


def test_the_tag_check_sees_both_quote_styles():
    assert TAG_SPELLING.findall("res.tags['tarn.train_rows']")
    assert TAG_SPELLING.findall('tags["tarn.mitigation"]')
    assert not TAG_SPELLING.findall('logging.getLogger("tarn.serve")')


# ------------------------------------------------------------------------- dvc.yaml
def undeclared(dvc_stage: dict, reads: tuple[str, ...]) -> list[str]:
    """The keys a stage reads that its dvc.yaml ``params`` do not cover."""
    declared = [p if isinstance(p, str) else next(iter(p)) for p in dvc_stage.get("params", [])]
    return [k for k in reads if not any(k == d or k.startswith(d + ".") for d in declared)]


def test_params_yaml_holds_every_key_dvc_yaml_names():
    assert missing_params(yaml.safe_load((REPO / "params.yaml").read_text())) == []


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_declares_every_params_key_the_stage_reads(stage):
    reads = importlib.import_module(f"tarn.stages.{stage}").READS
    assert undeclared(_dvc()[stage], reads) == []


@pytest.mark.parametrize("stage", STAGES)
def test_removing_a_declaration_is_caught(stage):
    dvc = _dvc()[stage]
    reads = importlib.import_module(f"tarn.stages.{stage}").READS
    for entry in dvc["params"]:
        mutated = copy.deepcopy(dvc)
        mutated["params"].remove(entry)
        missing = undeclared(mutated, reads)
        assert missing == [] or all(k == entry or k.startswith(entry + ".") for k in missing)
        if any(k == entry or k.startswith(entry + ".") for k in reads):
            assert missing, f"removing {entry!r} from {stage} went unnoticed"


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_lists_every_module_the_stage_imports(stage):
    deps = set(_dvc()[stage]["deps"])
    wanted = {str(module_path(m).relative_to(REPO)) for m in closure(f"tarn.stages.{stage}")
              if m not in NOT_DEPS}
    # a folder (src/tarn/core/tasks: every task module, found at import) covers its files
    assert {w for w in wanted if not any(w.startswith(f"{d}/") for d in deps)} - deps == set()


def test_a_stage_cannot_read_a_key_it_does_not_declare():
    from tarn.stages import etl, evaluate

    params = params_from_dict(repo_params_dict())
    view = stage_view(params, "etl", etl.READS, etl.AMBIENT)
    assert view.etl.chunk_rows == params.etl.chunk_rows and view.schema is params.schema
    with pytest.raises(UndeclaredParam, match="'tune'"):
        _ = view.tune
    ev = stage_view(params, "evaluate", evaluate.READS, evaluate.AMBIENT)
    assert ev.prepare.numeric_scaler == params.prepare.numeric_scaler
    with pytest.raises(UndeclaredParam, match="'prepare.test_batches'") as e:
        _ = ev.prepare.test_batches
    assert "dvc.yaml" in e.value.hint
