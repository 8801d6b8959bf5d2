"""One real ZenML run of the data pipeline, in an isolated ZenML store, git repo and DVC remote."""

import json
import os
import subprocess
import sys
import textwrap


from components.data import versioning
from tests.conftest import REPO

INSPECT = textwrap.dedent(
    """
    import json, sys
    from zenml.client import Client
    runs = Client().list_pipeline_runs(pipeline_name="data_pipeline", sort_by="asc:created", size=10).items
    out = []
    for run in runs:
        steps = run.steps
        version = steps["version_corpus"]
        out.append({
            "status": str(run.status),
            "ingest_cached": str(steps["ingest"].status) == "cached",
            "version_metadata": {k: v for k, v in version.run_metadata.items()},
            "report": steps["validate_corpus"].outputs["validation_report"][0].load(),
            "summary": steps["validate_corpus"].outputs["validation_summary"][0].load(),
            "splits": {n: len(steps["split_corpus"].outputs[n][0].load()) for n in ("train", "nas_val", "test")},
            "visualizations": len(steps["validate_corpus"].outputs["validation_report"][0].visualizations or []),
        })
    json.dump(out, sys.stdout)
    """
)


def test_data_pipeline_runs_end_to_end(tmp_path):
    root, remote = tmp_path / "project", tmp_path / "remote"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "start"], cwd=root, check=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    versioning.dvc(root, "init", "-q")
    versioning.dvc(root, "remote", "add", "-d", "local", str(remote))
    config = tmp_path / "run.yaml"
    config.write_text(
        f"parameters:\n  data_root: {root}\n  corpus_name: tiny\n"
        "  voices: flite:slt,espeak-ng:en-us,festival:kal_diphone\n  limit: 12\n"
    )
    env = {**os.environ, "ZENML_CONFIG_PATH": str(tmp_path / "zenml"), "ZENML_ANALYTICS_OPT_IN": "false"}
    zenml = os.path.join(os.path.dirname(sys.executable), "zenml")
    for _ in range(3):
        proc = subprocess.run([zenml, "pipeline", "run", "pipelines.data_pipeline.data_pipeline", "-c", str(config)], cwd=REPO, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    md5 = versioning.tracked_md5(root / "data.dvc")
    assert md5 and any(remote.rglob("*")), "the corpus was dvc-added and pushed"

    proc = subprocess.run([sys.executable, "-c", INSPECT], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second, third = json.loads(proc.stdout)
    for run in (first, second, third):
        assert run["status"] == "completed"
        assert run["summary"]["ok"] and run["summary"]["rows"] == 12
        assert run["visualizations"] >= 1 and "<html" in run["report"].lower()
        assert sum(run["splits"].values()) == 12
        assert run["version_metadata"]["dvc_md5"] == md5
        assert run["version_metadata"]["git_sha"] == sha
    # ingest is keyed on the tracked md5: the first run tracked the corpus, so the
    # second saw a new md5 and ran; the third saw the same md5 and was cached
    assert [r["ingest_cached"] for r in (first, second, third)] == [False, False, True]
