"""A full retraining streams `dvc repro`: stage names and what the stages print (steps,
progress counts, heartbeats), as the lines arrive; DVC's chatter and table rules are dropped."""

from __future__ import annotations

from tarn.lifecycle.retrain import dvc_line, forward_dvc

DVC_OUTPUT = [
    "Stage 'snapshot' didn't change, skipping\n",
    "Running stage 'etl':\n",
    "> tarn etl\n",
    "ETL: 16,281/48,842 (1 s)\n",
    "ETL report (read = written + rejected + duplicates)\n",
    "┏━━━━━━━┳━━━━━━┓\n",
    "┃ batch ┃ read ┃\n",
    "│ total │ 10   │\n",
    "└───────┴──────┘\n",
    "Updating lock file 'dvc.lock'\n",
    "\n",
    "Running stage 'tune':\n",
    "> tarn tune\n",
    "tuning: 0/50 (0 s)\n",
    "  still tuning: 0/50 (5 s)\n",
    "\x1b[1mtuning (best val logloss 0.2812)\x1b[0m: 12/50 (40 s)\n",
    "Stage 'evaluate' is cached - skipping run, checking out outputs\n",
    "ERROR: failed to reproduce 'train': failed to run: tarn train, exited with 1\n",
    "Use `dvc push` to send your updates to remote storage.\n",
    "To track the changes with git, run:\n",
    "\tgit add dvc.lock\n",
]

SHOWN = [
    "stage snapshot unchanged, skipped",
    "stage etl",
    "etl: ETL: 16,281/48,842",
    "etl: ETL report (read = written + rejected + duplicates)",
    "stage tune",
    "tune: tuning: 0/50",
    "tune: still tuning: 0/50",
    "tune: tuning (best val logloss 0.2812): 12/50",
    "stage evaluate cached, outputs checked out",
    "tune: ERROR: failed to reproduce 'train': failed to run: tarn train, exited with 1",
]


def test_stage_names_and_the_stages_own_lines_come_through():
    shown: list[str] = []
    seen = forward_dvc(iter(DVC_OUTPUT), shown.append)
    assert shown == SHOWN
    assert seen == [x.rstrip() for x in DVC_OUTPUT]  # all of it, for an error message


def test_lines_are_shown_as_they_arrive():
    shown: list[str] = []

    def stream():
        yield "Running stage 'train':\n"
        assert shown == ["stage train"]  # before dvc has printed anything more
        yield "fitting model: 120/400 (12 s)\n"
        assert shown[-1] == "train: fitting model: 120/400"
        yield "  still training: logging and registering the model (31 s)\n"

    forward_dvc(stream(), shown.append)
    assert shown[-1] == "train: still training: logging and registering the model"


def test_a_line_before_any_stage_has_no_prefix():
    assert dvc_line("Verifying data sources in stage: 'data/lake.dvc'\n", "") == (
        "", "Verifying data sources in stage: 'data/lake.dvc'")
    assert dvc_line("   \n", "tune") == ("tune", None)
