import pytest
from typer.main import get_command
from typer.testing import CliRunner

from tarn.cli import app
from tests.support.project import adult_csv, write_params

runner = CliRunner()


def all_commands():
    def walk(cmd, path):
        yield path
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
    return list(walk(get_command(app), []))


@pytest.mark.parametrize("path", all_commands(), ids=lambda p: " ".join(p) or "tarn")
def test_every_command_has_help(path):
    res = runner.invoke(app, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output and len(res.output.splitlines()) > 3


def test_errors_are_one_line_with_a_fix(tmp_path, monkeypatch):
    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["snapshot"])
    assert res.exit_code == 1
    assert "error: lake not found" in res.output and "fix: run `tarn lake seed`" in res.output
    assert "Traceback" not in res.output


def test_seed_list_and_add(tmp_path, monkeypatch):
    write_params(tmp_path, {"lake.seed.train_batches": 2, "lake.seed.test_batches": 1})
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["lake", "seed"]).exit_code == 0
    res = runner.invoke(app, ["lake", "seed", "--if-empty"])
    assert res.exit_code == 0 and "left as is" in res.output
    f = tmp_path / "new.csv"
    f.write_text(adult_csv("train", 0, 1))  # the lake's raw format, one row
    res = runner.invoke(app, ["lake", "add", str(f), "--batch", "extra"])
    assert res.exit_code == 0 and "0004-extra" in res.output
    res = runner.invoke(app, ["lake", "list"], terminal_width=200)
    assert "0003-adult-test" in res.output and "48,843" in res.output  # 32,561 + 16,281 + 1


def test_an_unexpected_error_is_one_line_and_points_to_its_traceback(tmp_path, monkeypatch):
    from tarn.core.lake import Lake

    def broken(self):
        raise ZeroDivisionError("a bug in tarn")

    write_params(tmp_path)
    (tmp_path / "data" / "lake").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Lake, "inventory", broken)
    res = runner.invoke(app, ["lake", "list"], terminal_width=200)
    assert res.exit_code == 1
    assert "unexpected error: ZeroDivisionError: a bug in tarn" in res.output
    assert "Traceback" not in res.output
    trace = next((tmp_path / ".tarn" / "logs").glob("error-*.txt"))
    assert str(trace) in res.output.replace("\n", "")
    assert "Traceback" in trace.read_text() and "in broken" in trace.read_text()


def test_reset_lists_asks_and_keeps_the_lake(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # a local store: reset lists it
    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    for d in ("data/lake/0001-a", "data/curated", "bundles/x", ".mlflow", "data/predictions"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "data/lake/0001-a/a.csv").write_text("age\n1\n")
    (tmp_path / "data/predictions/preds-1.parquet").write_bytes(b"x")
    res = runner.invoke(app, ["reset"], input="n\n", terminal_width=200)
    assert res.exit_code == 1 and "data/curated" in res.output and ".mlflow" in res.output
    assert (tmp_path / "data/curated").is_dir()  # refused: nothing deleted
    res = runner.invoke(app, ["reset", "--yes"], terminal_width=200)
    assert res.exit_code == 0 and "deleted 4 paths" in res.output
    assert not (tmp_path / "data/curated").exists() and not (tmp_path / ".mlflow").exists()
    assert (tmp_path / "data/lake/0001-a/a.csv").is_file()
    assert "nothing to delete" in runner.invoke(app, ["reset", "--yes"]).output


def test_log_retire_moves_files_aside(tmp_path, monkeypatch):
    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "data/predictions"
    log.mkdir(parents=True)
    for i in range(3):
        (log / f"preds-{i}.parquet").write_bytes(b"x")
    res = runner.invoke(app, ["log", "retire", "--yes"], terminal_width=200)
    assert res.exit_code == 0 and "moved 3 files" in res.output
    assert not list(log.glob("preds-*.parquet"))
    assert len(list(log.glob("retired-*/preds-*.parquet"))) == 3


def test_version_and_help_read_cleanly_at_80_columns():
    from importlib.metadata import version

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"tarn {version('tarn')}"
    for path in all_commands():
        out = runner.invoke(app, [*path, "--help"], terminal_width=80).output
        assert "<bool>" not in out and "[default: no-" not in out, path
        assert max(len(line) for line in out.splitlines()) <= 80, path


_EXIT_PROBE = """
import atexit, sys, threading, time
from pathlib import Path
out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit").write_text("ran"))
def late():  # a non-daemon thread still working when the command returns
    time.sleep(0.3)
    (out / "thread").write_text("joined")
threading.Thread(target=late).start()
sys.argv = ["tarn", *sys.argv[2:]]
from tarn.cli import main
main()
raise SystemExit(99)  # main() never returns: it leaves through os._exit
"""


@pytest.mark.parametrize(("args", "status", "shown"), [
    (["--help"], 0, "Usage"), (["no-such-command"], 2, "No such command"),
    (["snapshot"], 1, "fix: run tarn from the project root")])
def test_the_tarn_command_exits_with_its_status_after_threads_hooks_and_output(
        tmp_path, args, status, shown):
    """`tarn` skips the interpreter's teardown (Arrow's thread pool can abort it), not what
    comes before it: the status, non-daemon threads, atexit hooks and piped output."""
    import subprocess
    import sys

    work = tmp_path / "cwd"
    work.mkdir()  # no params.yaml: `tarn snapshot` fails with its one-line error
    res = subprocess.run([sys.executable, "-c", _EXIT_PROBE, str(tmp_path), *args],
                         cwd=work, capture_output=True, text=True, timeout=120)
    assert res.returncode == status, res.stderr
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "joined"
    assert shown in res.stdout + res.stderr
