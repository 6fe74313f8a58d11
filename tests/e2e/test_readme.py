"""The README runs as written: its shell blocks for the single-machine lifecycle (quick start
through monitoring and retraining), in order, with bash, in a fresh project.

How it works:

- **What runs.** Fenced ``bash`` blocks between ``## Quick start`` and ``## Scaling out``, in
  order, unless the line before the fence is ``<!-- readme-test: skip ... -->``. A block marked
  ``<!-- readme-test: run -->`` runs wherever it is and whatever its language (``python``
  blocks go to the venv's python). "Scaling out" needs PostgreSQL, S3 and Dask servers and is
  left out (tests/e2e/test_shared_stack.py and tests/integration/test_cluster.py cover them).
- **One bash session.** The blocks are joined into one script (``set -eE -o pipefail``), so
  ``source``/``export`` carry over as in a terminal, and any failing command fails the test,
  naming the README line of its block and the command.
- **A fresh project.** The files a clone holds (git's tracked files plus new, not ignored ones,
  as they are in the working tree: the README under test is the one being edited), committed
  into a new git repository in a temporary folder; no lake, DVC outputs, MLflow store,
  bundles or prediction log.
- **The venv is not re-created.** ``.venv`` in the project links to the venv running the tests
  (the one ``make test`` built), and ``make`` is a shell function adding ``-o venv -o
  client``: ``make run`` and ``make ui`` run their own recipes exactly, without re-syncing
  the venv (which would re-point its editable install at the temporary copy) or re-vendoring
  the browser runtime from npm (``make test`` already did both).
- **Small settings.** Before the blocks run, the test writes a few keys into the project's
  params.yaml (and commits them, so ``dvc params diff`` is clean): 3 tuning trials instead of
  40, fewer boosting rounds and parity rows, and a free port for ``tarn serve``. The lake is
  the full bundled data (``tarn lake seed`` has no row cap; the ETL takes seconds).
- **Long-running commands** (``tarn serve``, ``make ui``) start in the background, each in its
  own session; the script waits until they answer over HTTP and the test stops them at the end.
  ``:8000`` in the blocks becomes the free port given to ``serve.port``; ``make ui`` keeps its
  port 5000 (the Makefile's), so the test needs it free.
- **Output.** Each block's start is marked ``::: README.md:LINE`` in the output, a failure
  names the block and the command, and the test prints how long each block took (``-s``).
  ``README_TEST_KEEP_GOING=1`` runs every block even after a failure (to list all of them while
  fixing the README; the test then judges only the last command).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support.project import FAST_TUNE
from tests.support.servers import free_port, need

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
UI_PORT = 5000  # the Makefile's `make ui` port
SCRIPT_TIMEOUT_S = 1500

FIRST = "## Quick start"
LAST = "## Scaling out"
SHELLS = {"bash", "sh", "shell", "console"}
_MARK = re.compile(r"^\s*<!--\s*readme-test:\s*(\w+)\b.*-->\s*$")
_FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")

# Settings written into the project's params.yaml before the README's commands run.
SMALL = {
    "tune.max_evals": 3,
    **FAST_TUNE,
    "tune.early_stopping_rounds": 10,
    "edge.parity_rows": 2000,
}


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence in README.md
    lang: str
    code: str
    mark: str  # "", "run", "skip"
    in_scope: bool  # between FIRST and LAST

    @property
    def runs(self) -> bool:
        if self.mark == "skip":
            return False
        if self.mark == "run":
            return True
        return self.in_scope and self.lang in SHELLS


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block of a Markdown text, with its marker comment and section scope."""
    lines = text.splitlines()
    out: list[Block] = []
    scope = False
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.startswith("## "):
            scope = ln.strip() == FIRST or (scope and ln.strip() != LAST)
        m = _FENCE.match(ln)
        if not m:
            i += 1
            continue
        indent, lang = m.group(1), m.group(2).lower()
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mm = _MARK.match(prev)
        mark = mm.group(1).lower() if mm else ""
        if mark not in ("", "run", "skip"):
            raise ValueError(f"README.md:{i + 1}: unknown readme-test mark {mark!r}")
        body = []
        j = i + 1
        while j < len(lines) and not re.match(rf"^{indent}```\s*$", lines[j]):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        out.append(Block(i + 1, lang, "\n".join(body) + "\n", mark, scope))
        i = j + 1
    return out


# A long-running command (first words of a line) -> the URL path that answers once it is up.
BACKGROUND = {"tarn serve": ("SERVE_PORT", "/ready"), "make ui": ("UI_PORT", "/")}

PRELUDE = r"""
set -eE -o pipefail
trap 'echo "README-TEST FAILED: README.md:$README_BLOCK: \`$BASH_COMMAND\` exited $?" >&2' ERR
# The venv exists (make test built it): make's venv and client targets count as up to date.
make() { command make -o venv -o client "$@"; }
export -f make
readme_background() {  # readme_background NAME URL COMMAND: start in its own session, wait
  local name=$1 url=$2 cmd=$3 pid
  setsid bash -c "$cmd" > "$README_TMP/$name.log" 2>&1 &
  pid=$!
  echo "$pid" >> "$README_TMP/pids"
  for _ in $(seq 600); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "README-TEST: \`$cmd\` exited early:" >&2; tail -n 30 "$README_TMP/$name.log" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "README-TEST: \`$cmd\` did not answer $url in 300 s" >&2
  tail -n 30 "$README_TMP/$name.log" >&2
  return 1
}
"""


def block_script(block: Block, ports: dict[str, int]) -> str:
    """The bash text that runs one block: long-running commands go to the background."""
    if block.lang == "python":
        return f"python - <<'README_PYTHON'\n{block.code}README_PYTHON\n"
    out = []
    for n, ln in enumerate(block.code.splitlines()):
        ln = ln.replace(":8000", f":{ports['SERVE_PORT']}")
        cmd = ln.split("#", 1)[0].strip()
        bg = next((k for k in BACKGROUND if cmd == k or cmd.startswith(k + " ")), None)
        if bg:
            port, path = BACKGROUND[bg]
            url = f"http://127.0.0.1:{ports[port]}{path}"
            name = f"bg-{block.line}-{n}"
            ln = f"readme_background {name} {url} {shlex.quote(cmd)}"
        out.append(ln)
    return "\n".join(out) + "\n"


def readme_script(blocks: list[Block], ports: dict[str, int]) -> str:
    parts = [PRELUDE]
    if os.environ.get("README_TEST_KEEP_GOING"):  # while fixing the README: every failure
        parts.append("set +e\n")
    for b in blocks:
        # a newline first: curl's output may not end with one
        parts.append(f"\nREADME_BLOCK={b.line}\nprintf '\\n::: README.md:{b.line} %s\\n' "
                     "\"$EPOCHREALTIME\"\n")
        parts.append(block_script(b, ports))
    parts.append("\nprintf '\\n::: end %s\\n' \"$EPOCHREALTIME\"\n")
    return "".join(parts)


def fresh_project(dest: Path) -> None:
    """The files of a clone of this repository (as in the working tree), in a new git repo."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO, capture_output=True, check=True)
    for rel in filter(None, listed.stdout.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".venv").symlink_to(VENV)


def small_params(root: Path, overrides: dict) -> None:
    p = root / "params.yaml"
    raw = yaml.safe_load(p.read_text())
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for k in parents:
            node = node[k]
        node[leaf] = value
    p.write_text(yaml.safe_dump(raw, sort_keys=False))


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stop_sessions(pids_file: Path) -> None:
    pids = [int(p) for p in pids_file.read_text().split()] if pids_file.exists() else []
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        alive = []
        for pid in pids:
            try:
                os.killpg(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if _group_alive(p)]
            time.sleep(0.2)
        pids = alive
        if not pids:
            return


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def timings(stdout: str) -> list[tuple[str, float]]:
    marks = re.findall(r"^::: (\S+) (\d+[.,]\d+)$", stdout, re.M)
    return [(name, float(t2.replace(",", ".")) - float(t1.replace(",", ".")))
            for (name, t1), (_, t2) in zip(marks, marks[1:], strict=False)]


def test_readme_blocks_are_found():
    """The selection itself: the lifecycle's blocks run, the scale-out ones do not."""
    blocks = readme_blocks((REPO / "README.md").read_text())
    run = [b for b in blocks if b.runs]
    assert run, "no README block selected"
    text = "".join(b.code for b in run)
    for cmd in ("make run", "tarn lake seed", "dvc repro", "tarn promote", "tarn serve",
                "tarn edge predict", "tarn monitor", "tarn retrain"):
        assert cmd in text, f"no README block that runs has {cmd!r}"
    assert "dask scheduler" not in text and "psql" not in text
    assert "make test" not in text, "the README test would run the whole suite inside itself"


def test_readme_runs_as_written(tmp_path):
    need(port_free(UI_PORT), f"port {UI_PORT} (`make ui`'s) is in use: stop what holds it")
    need(shutil.which("curl") is not None, "curl is needed: apt-get install curl")
    root = tmp_path / "tarn"
    work = tmp_path / "readme-test"
    root.mkdir()
    work.mkdir()
    fresh_project(root)
    serve_port = free_port()
    small_params(root, {**SMALL, "serve.port": serve_port,
                        "serve.notify_url": f"http://127.0.0.1:{serve_port}"})
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "-c", "user.name=readme-test", "-c", "user.email=readme-test@localhost",
        "commit", "-q", "-m", "clone")

    blocks = [b for b in readme_blocks((root / "README.md").read_text()) if b.runs]
    script = readme_script(blocks, {"SERVE_PORT": serve_port, "UI_PORT": UI_PORT})
    (work / "readme.sh").write_text(script)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "TARN_", "DASK_", "AWS_", "VIRTUAL_ENV"))}
    env.update(PATH=f"{VENV / 'bin'}:{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
               MLFLOW_DISABLE_TELEMETRY="true", README_TMP=str(work), COLUMNS="100",
               GIT_AUTHOR_NAME="readme-test", GIT_AUTHOR_EMAIL="readme-test@localhost",
               GIT_COMMITTER_NAME="readme-test", GIT_COMMITTER_EMAIL="readme-test@localhost")
    start = time.monotonic()
    proc = subprocess.Popen(["bash", str(work / "readme.sh")], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    (work / "pids").touch()
    try:
        out, _ = proc.communicate(timeout=SCRIPT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\nREADME-TEST: timed out after {SCRIPT_TIMEOUT_S} s"
    finally:
        stop_sessions(work / "pids")
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (work / "output.log").write_text(out)
    took = time.monotonic() - start
    summary = "\n".join(f"  {name}: {secs:.1f} s" for name, secs in timings(out))
    print(f"README blocks ran in {took:.0f} s:\n{summary}")
    assert proc.returncode == 0, (
        f"a README command failed (exit {proc.returncode}); output tail:\n"
        + "\n".join(out.splitlines()[-80:]))
