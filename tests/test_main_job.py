"""The main job (cascadapt/main_job.py): its stages are the pipelines and configs that exist, a wrong stage
is refused by name, and (slow, on demand) the whole job runs on an isolated store and reports its results."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cascadapt.main_job import STAGES, main
from tests.conftest import REPO


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_every_stage_names_a_pipeline_and_a_config_that_exist(stage):
    module, function = stage.pipeline.split(":")
    assert callable(getattr(importlib.import_module(module), function)) and (REPO / stage.config).is_file()


def test_an_unknown_stage_is_refused_by_name():
    result = CliRunner().invoke(main, ["--stages", "data,training"])
    assert result.exit_code == 2 and "unknown stage(s) training" in result.output


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_whole_job_runs_and_reports(tmp_path):
    env = {**os.environ, "ZENML_CONFIG_PATH": str(tmp_path / "zenml"), "ZENML_ANALYTICS_OPT_IN": "false"}
    proc = subprocess.run([sys.executable, "-m", "cascadapt.main_job"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for words in ("Frozen backbone vs full fine-tuning", "Transcripts of held-out test sentences", "Architecture search", "Tailored training data", "Multi-task adaptation", "promoted", "Bento: cascadapt_slu_service:"):
        assert words in proc.stdout
    # the served Whisper cascade hears its smoke-test clip and understands it, for every task
    exact, tasks, correct, tasks_again = map(int, re.search(r"exact transcripts (\d+)/(\d+) .* correct intents (\d+)/(\d+)", proc.stdout).groups())
    assert exact == correct == tasks == tasks_again > 0
