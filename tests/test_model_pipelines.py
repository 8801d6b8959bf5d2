"""Pre-training, the baselines, the architecture search, ARTE, multi-task adaptation, retraining (promotion) and
deployment as real ZenML runs (isolated store), then predict + score, lineage over REST and the dashboard."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from components.data import versioning
from components.serving.local import free_port
from tests.browser import HeadlessChromium, chromium_binary
from tests.conftest import REPO, SAMPLE
from tests.zenml_server import get_json, local_zenml_server, put_json

BIN = os.path.dirname(sys.executable)

COMMON = """
  corpus_name: tiny
  voices: flite:slt,espeak-ng:en-us
  limit: 40
  data_root: {root}
"""
TARGET = '  target: {{slurp_jsonl: {sample}, corpus_name: tiny, voices: "flite:slt,espeak-ng:en-us", limit: 40, data_root: {root}}}'
PRETRAIN = """
parameters:
  source_text: {sample}
  nlu_slurp_jsonl: {sample}
  checkpoint_dir: {tmp}/ckpt
  asr: {{d_model: 64, heads: 4, ffn: 128, layers: 1, conv_kernel: 15}}
  se: {{hidden: 32, layers: 1}}
  se_train: {{max_epochs: 1, batch_size: 8, progress: false}}
  asr_train: {{max_epochs: 1, batch_size: 8, progress: false}}
  asr_enhanced_train: {{max_epochs: 1, batch_size: 8, progress: false}}
  nlu_train: {{max_epochs: 1, batch_size: 16, lr: 0.00005, progress: false}}
"""
BASELINES = """
parameters:
{target}
  lm_text: {tmp}/lm.txt
  finetune_train: {{max_epochs: 1, batch_size: 8, lr: 0.0002, lr_scale: {{nlu.encoder.: 0.25}}, progress: false}}
"""
NAS = """
parameters:
{target}
  finetune_train: {{max_epochs: 1, batch_size: 8, lr: 0.0002, lr_scale: {{nlu.encoder.: 0.25}}, progress: false}}
  stage2_train: {{max_epochs: 1, batch_size: 8, lr: 0.001, progress: false}}
  search_config: {{epochs: 2, warmup_epochs: 1, batch_size: 8, record_every: 1, progress: false}}
  lambdas: [0.0, 1000.0]
  blocks: [nlu]
  serve_mode: text
"""
ARTE = """
parameters:
{target}
  train_config: {{max_epochs: 1, batch_size: 8, lr: 0.001, progress: false}}
  update_config: {{max_steps: 1, batch_size: 4, lr: 0.002}}
  arte_config: {{rounds: 2, candidates: 3, batch_size: 4, pairs: 1, preference_items: 3}}
  preference_pool: 6
  n_generated: 12
  seeds: [0, 1]
"""
MULTITASK = """
parameters:
{target}
  task_by: [speaker]
  export_dir: {tmp}/exports
  train_config: {{max_epochs: 1, batch_size: 8, lr: {lr}, progress: false}}
  methods:
    hra_linear: {{adapter: {{method: hra, target_modules: ["asr:@layer"], r: 8}}, new_task: [head]}}
    lora: {{adapter: {{method: lora, target_modules: ["asr:@attention"], r: 4}}}}
    mhr: {{adapter: {{method: mhr, target_modules: ["asr:@attention"], r: 4, n_skills: 2, n_splits: 4}}, new_task: [mhr_z, mhr_mu]}}
    full_finetuning: {{full: true}}
"""

RETRAIN = """
  new_batch: {batch}
  reference_manifest: {batch}
  force: {force}
"""

INSPECT = textwrap.dedent(
    """
    import json, sys
    from zenml.client import Client

    def arte_outputs(c):
        run = c.list_pipeline_runs(pipeline_name="arte_pipeline", size=1, sort_by="desc:created").items[0]
        align = run.steps["align_teacher_seed0"].outputs
        return {
            "rows": run.steps["arte_results"].outputs["arte_results"][0].load().to_dict("records"),
            "summary": run.steps["arte_results"].outputs["arte_summary"][0].load().to_dict("records"),
            "history": align["arte_history"][0].load(),
            "policy": align["teacher_policy"][0].load(),
            "policy_plot": "data:image/png" in align["policy_shift"][0].load(),
            "generated": {name: run.steps[f"generate_{name}_seed0"].outputs["generated"][0].load().to_dict("records") for name in ("random", "tailored")},
            "train_rows": {name: len(run.steps[f"generate_{name}_seed0"].outputs["train_with_generated"][0].load()) for name in ("random", "tailored")},
            "train": len(run.steps["split_corpus"].outputs["train"][0].load()),
            "held_out_text": [t for split in ("nas_val", "test") for t in run.steps["split_corpus"].outputs[split][0].load()["text"]],
            "student_input": str(run.steps["align_teacher_seed0"].inputs["student"][0].id),
            "student_no_extra": str(run.steps["train_no_extra_seed0"].outputs["trained_architecture"][0].id),
        }

    c = Client()
    backbones = c.get_model_version("cascadapt_backbones", None)
    baselines = c.get_model_version("cascadapt_baselines", None)
    run = c.list_pipeline_runs(pipeline_name="baseline_pipeline", size=1, sort_by="desc:created").items[0]
    nas = c.get_model_version("cascadapt_nas", None)
    nas_run = c.list_pipeline_runs(pipeline_name="nas_pipeline", size=1, sort_by="desc:created").items[0]
    table = run.steps["results_table"].outputs["results"][0].load()
    json.dump({
        "backbone_artifact": backbones.get_artifact("pretrained_cascade") is not None,
        "finetuned_artifact": baselines.get_artifact("finetuned_cascade") is not None,
        "rows": table.to_dict("records"),
        "input_backbone": str(run.steps["evaluate_frozen"].inputs["cascade"][0].id),
        "backbone_id": str(backbones.get_artifact("pretrained_cascade").id),
        "nas_rows": nas_run.steps["nas_results_table"].outputs["nas_results"][0].load().to_dict("records"),
        "nas_architecture": nas.get_artifact("nas_architecture").load(),
        "nas_cascade": nas.get_artifact("nas_cascade") is not None,
        "weights_plot": "data:image/png" in nas_run.steps["search_nfa_lam0"].outputs["architecture_weights"][0].load(),
        "lam1000_architecture": nas_run.steps["search_nfa_lam1000"].outputs["architecture"][0].load()["architecture"],
        "arte": arte_outputs(c),
    }, sys.stdout)
    """
)

INSPECT_MULTITASK = textwrap.dedent(
    """
    import json, sys
    from zenml.client import Client
    from zenml.enums import ModelStages
    c = Client()
    production = c.get_model_version("cascadapt_multitask", ModelStages.PRODUCTION)
    first = c.list_pipeline_runs(pipeline_name="multitask_pipeline", size=1, sort_by="desc:created").items[0]
    results = first.steps["multitask_results"].outputs
    winner = production.get_artifact("winning_adapters").load()
    json.dump({
        "production": production.number,
        "promotion": first.steps["promote_adapters"].outputs["promotion"][0].load(),
        "summary": results["multitask_results"][0].load().to_dict("records"),
        "scores": results["multitask_task_scores"][0].load().to_dict("records"),
        "new_task": first.steps["define_tasks"].outputs["new_task"][0].load(),
        "winner": {"system": winner.system, "tasks": winner.tasks},
        "lineage": production.run_metadata.get("lineage"),
        "md5": first.steps["tracked_data_version"].outputs["tracked_md5"][0].load(),
        "serving": production.run_metadata.get("serving"),
        "retraining": [
            {"steps": sorted(run.steps), "decision": run.steps["decide_retraining"].outputs["retraining_decision"][0].load(),
             "promotion": run.steps["promote_adapters"].outputs["promotion"][0].load() if "promote_adapters" in run.steps else None}
            for run in reversed(c.list_pipeline_runs(pipeline_name="retraining_pipeline", size=2, sort_by="desc:created").items)
        ],
    }, sys.stdout, default=str)
    """
)


RUN_IN_ONE_PROCESS = textwrap.dedent(
    """
    import importlib, sys
    for name, config in zip(sys.argv[1::2], sys.argv[2::2]):  # stops at the first run that fails
        module, _, attr = name.rpartition(".")
        getattr(importlib.import_module(module), attr).with_options(config_path=config)()
    """
)


@pytest.mark.timeout(1800)  # eight pipeline runs: about 4.5 min alone on 2 cores, far more on shared cores
def test_pretrain_then_baselines_then_predict_and_score(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    versioning.dvc(root, "init", "-q")
    versioning.dvc(root, "remote", "add", "-d", "local", str(tmp_path / "remote"))
    (tmp_path / "lm.txt").write_text("".join(json.loads(line)["sentence"] + "\n" for line in SAMPLE.read_text().splitlines()))
    env = {**os.environ, "ZENML_CONFIG_PATH": str(tmp_path / "zenml"), "ZENML_ANALYTICS_OPT_IN": "false"}

    def config(name: str, body: str) -> str:
        path = tmp_path / f"{name}.yaml"
        path.write_text(body)
        return str(path)

    # pre-training the way a user runs a pipeline; the rest in one process (a CLI start is ~15 s a run)
    proc = subprocess.run([f"{BIN}/zenml", "pipeline", "run", "pipelines.pretrain_pipeline.pretrain_pipeline", "-c", config("pretrain", PRETRAIN.format(sample=SAMPLE, tmp=tmp_path) + COMMON.format(root=root))], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    target = TARGET.format(sample=SAMPLE, root=root)
    runs = [(f"pipelines.{name}_pipeline.{name}_pipeline", config(name, body.format(target=target, tmp=tmp_path))) for name, body in (("baseline", BASELINES), ("nas", NAS), ("arte", ARTE), ("multitask", MULTITASK.replace("{lr}", "0.001")))]
    # retraining: a batch like the reference does not retrain; a forced run retrains, and its diverging
    # candidate (lr 3) is not promoted over the production version
    manifest = root / "data" / "tiny" / "manifest.jsonl"
    for force, lr in ((False, "0.001"), (True, "3.0")):
        body = MULTITASK.replace("{lr}", lr).format(target=target, tmp=tmp_path) + RETRAIN.format(batch=manifest, force=str(force).lower())
        runs.append(("pipelines.retraining_pipeline.retraining_pipeline", config(f"retrain_{force}", body)))
    # the promoted adapters as a bento, served on 127.0.0.1 for a smoke test of every task
    runs.append(("pipelines.deployment_pipeline.deployment_pipeline", config("deploy", f"parameters:\n  serve_locally: true\n  port: {free_port()}\n")))
    proc = subprocess.run([sys.executable, "-c", RUN_IN_ONE_PROCESS, *(arg for run in runs for arg in run)], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    proc = subprocess.run([sys.executable, "-c", INSPECT], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout)
    assert found["backbone_artifact"] and found["finetuned_artifact"]
    assert found["input_backbone"] == found["backbone_id"]  # lineage: the baselines used that exact backbone
    rows = {(r["system"], r["mode"]): r for r in found["rows"]}
    assert set(rows) == {("frozen", "e2e"), ("frozen", "text"), ("full_finetuning", "e2e"), ("full_finetuning", "text"), ("full_finetuning", "text+beam"), ("pocketsphinx", "text")}
    assert rows[("pocketsphinx", "text")]["n"] == rows[("frozen", "e2e")]["n"]  # the same test utterances
    assert rows[("frozen", "e2e")]["trainable_parameters"] == 0
    assert rows[("full_finetuning", "e2e")]["trainable_parameters"] == rows[("full_finetuning", "e2e")]["total_parameters"] > 20_000_000
    for r in rows.values():
        assert 0 <= r["intent_acc"] <= 1 and r["n"] > 0

    # the architecture search and its baselines on the same data
    nas_modes = [(r["system"], r["mode"]) for r in found["nas_rows"]]
    nfa = [(f"NFA_{stage}_lam{lam}", mode) for lam in (0, 1000) for stage, mode in (("one_stage", "e2e"), ("two_stage", "e2e"), ("two_stage", "text"))]  # one search a lambda
    assert nas_modes == [("frozen", "e2e"), ("full_finetuning", "e2e"), ("full_finetuning", "text"), ("full_plugging", "e2e"), ("NA", "e2e"), *nfa]
    nas_rows = {r["system"]: r for r in found["nas_rows"] if r["mode"] == "e2e"}
    assert nas_rows["full_finetuning"]["trainable_pct"] == 100 and nas_rows["frozen"]["trainable_pct"] == 0
    assert 0 < nas_rows["full_plugging"]["trainable_pct"] < 10  # adapters everywhere (+ the bridge)
    # lambda 1000 prices fine-tuning out (its logit only falls); between frozen and adapter, which both cost less
    # than the expected cost while fine-tuning is likely, the few architecture steps here do not decide
    assert "finetune" not in found["lam1000_architecture"].values()
    assert nas_rows["NFA_two_stage_lam1000"]["trainable_pct"] <= nas_rows["full_plugging"]["trainable_pct"]
    architecture = found["nas_architecture"]  # the selected point of the sweep
    assert architecture["system"] in {system for system, _ in nfa} and architecture["blocks"] == ["nlu"]
    # serve_mode text: the searches scored the text mode's NLU loss, the selection its NLU CER
    text_rows = {r["system"]: r for r in found["nas_rows"] if r["mode"] == "text" and r["system"].startswith("NFA_")}
    assert architecture["mode"] == architecture["serve_mode"] == "text"
    fits = [r for r in text_rows.values() if r["trainable_pct"] <= 10]  # lambda 1000's point at least (<= full plugging)
    assert fits and architecture["system"] == min(fits, key=lambda r: r["nlu_cer"])["system"]
    assert set(architecture["architecture"]) == {"se", "asr", *(f"nlu.{i}" for i in range(6))}
    assert set(architecture["architecture"].values()) <= {"frozen", "adapter", "finetune"}
    assert len(architecture["history"]) > 0 and found["nas_cascade"] and found["weights_plot"]

    # tailored training data: the teacher aligned on the student trained without extra data, two generated
    # sets of the same size (valid, spoken, nothing of nas_val or test), the three students on the test split
    arte = found["arte"]
    assert [(r["system"], r["seed"], r["generated"]) for r in arte["rows"]] == [(s, seed, g) for seed in (0, 1) for s, g in (("no_extra", 0), ("random", 12), ("tailored", 12))]
    for row in arte["summary"]:  # mean and spread over the two seeds
        scores = [r["intent_acc"] for r in arte["rows"] if r["system"] == row["system"]]
        assert row["seeds"] == 2 and row["intent_acc_mean"] == pytest.approx(sum(scores) / 2) and row["intent_acc_std"] == pytest.approx(abs(scores[0] - scores[1]) / 2 ** 0.5)
    assert len({r["n"] for r in arte["rows"]}) == 1 and all(0 <= r["intent_acc"] <= 1 and 0 <= r["slu_f1"] <= 1 and r["wer"] >= 0 for r in arte["rows"])
    assert arte["student_input"] == arte["student_no_extra"]
    assert [h["items"] for h in arte["history"]["history"]] == [6, 3] and all(h["pairs"] == 1 for h in arte["history"]["history"])
    assert arte["history"]["after"] != arte["history"]["before"] and arte["policy_plot"]
    assert set(arte["policy"]["logits"]) == {"intent", "voice", "noise", "snr"} and set(arte["policy"]["logits"]["voice"]) == {"flite-slt-p+0-r1", "espeak-ng-en-us-p+0-r1"}
    held_out = {" ".join(t.lower().split()) for t in arte["held_out_text"]}
    for name, rows in arte["generated"].items():
        assert len(rows) == 12 and arte["train_rows"][name] == arte["train"] + 12
        assert all(r["slurp_id"] >= 90_000_000 and r["split"] == "train" and r["text"] not in held_out for r in rows)
        assert all((root / "data" / "tiny" / r["noisy_path"]).is_file() and r["clean_path"].startswith(f"../arte/{name}-") for r in rows)
    assert [r["text"] for r in arte["generated"]["random"]] != [r["text"] for r in arte["generated"]["tailored"]]

    # the public commands on the fine-tuned model version
    out = tmp_path / "predictions.jsonl"
    manifest = root / "data/tiny/manifest.jsonl"
    proc = subprocess.run([f"{BIN}/cascadapt", "predict", "--model", "cascadapt_baselines", "--manifest", str(manifest), "--split", "test", "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines and all(set(line) == {"file", "slurp_id", "scenario", "action", "entities", "transcript"} for line in lines)
    proc = subprocess.run([f"{BIN}/cascadapt", "score", "--gold", str(SAMPLE), "--predictions", str(out), "--allow-missing"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(proc.stdout)
    assert scores["n"] == len(lines) and {"wer", "cer", "intent_acc", "slu_f1", "nlu_cer"} <= set(scores)

    # multi-task adaptation: every method, the new task, the comparison, promotion and lineage
    proc = subprocess.run([sys.executable, "-c", INSPECT_MULTITASK], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout)
    summary = {r["system"]: r for r in found["summary"]}
    assert set(summary) == {"frozen", "hra_linear", "hra_linear+head", "lora", "mhr", "mhr+mhr_z", "mhr+mhr_mu", "full_finetuning"}
    assert summary["hra_linear"]["shared_params"] > 0 and summary["lora"]["shared_params"] == 0
    assert 0 < summary["hra_linear"]["per_task_params"] < summary["lora"]["per_task_params"] < summary["full_finetuning"]["per_task_params"]
    assert summary["mhr+mhr_z"]["per_task_params"] < summary["mhr+mhr_mu"]["per_task_params"]
    scores = {(r["system"], r["task"]): r for r in found["scores"]}
    new = found["new_task"]
    old = [task for system, task in scores if system == "hra_linear"]
    assert old and new not in old
    for task in old:  # adding the new task's head left the old tasks' outputs, hence their scores, unchanged
        assert scores[("hra_linear+head", task)]["wer"] == scores[("hra_linear", task)]["wer"]
    first = found["promotion"]
    assert first["promoted"] and "no version in production" in first["reason"]
    quiet, forced = found["retraining"]
    second = forced["promotion"]  # the forced retraining's diverging candidate
    assert not second["promoted"] and second["candidate_score"] >= second["production_score"] and second["compared_tasks"] == len(old) + 1
    assert found["production"] == first["version"] != second["version"]
    assert set(found["winner"]["tasks"]) == {*old, new} and found["winner"]["system"] == first["candidate"]
    assert (tmp_path / "exports" / f"cascadapt_multitask-v{first['version']}" / "bundle.json").is_file()
    serving = found["serving"]  # the bento tag on the production version, and its smoke test
    assert serving["bento_tag"].startswith("cascadapt_slu_service:") and serving["smoke_test"]["tasks"] == len(old) + 1
    assert serving["smoke_test"]["example"]["intent"]
    assert not quiet["decision"]["retrain"] and quiet["steps"] == ["decide_retraining", "detect_data_drift"]
    assert forced["decision"] == {"retrain": True, "reasons": ["forced"]} and not forced["promotion"]["promoted"]
    assert found["production"] == first["version"]
    assert found["lineage"]["adapters"] == first["candidate"] and found["lineage"]["backbone_artifact"] and found["lineage"]["data_md5"] == found["md5"]

    # lineage through the REST API of a real ZenML server on this store, and its dashboard in a browser
    with local_zenml_server(tmp_path / "zenml") as url:
        lineage = lineage_over_rest(f"{url}/api/v1")
        assert lineage["data_md5"] == found["md5"]  # what tracked_data_version read (DVC md5, or "unverified:" with the content hash)
        assert lineage["backbone_producer"] == "pretrain_pipeline"
        assert lineage["backbone"] in lineage["architecture_inputs"] and lineage["backbone"] in lineage["adapters_inputs"]  # search and adaptation on that backbone
        assert lineage["adapters"] == first["candidate"] and {"wer", "cer", "intent_acc"} <= set(lineage["metrics"])
        assert lineage["bento_tag"] == serving["bento_tag"] and lineage["adapters_pipeline"] == "multitask_pipeline"
        if chromium_binary() is not None:  # setup.sh installs it; without it the REST half still ran
            shot = dashboard_renders_run(url, lineage["multitask_run"], REPO / "outputs" / "test-artifacts" / "dashboard_multitask_run.png")
            assert shot.stat().st_size > 20_000


def lineage_over_rest(api: str) -> dict:
    """data md5 -> backbone -> architecture and adapters -> metrics -> bento tag, each link read from the REST API."""
    production = get_json(f"{api}/model_versions?model=cascadapt_multitask&stage=production&hydrate=true")["items"][0]
    metadata = production["metadata"]["run_metadata"]
    backbone = metadata["lineage"]["backbone_artifact"]
    producer = get_json(f"{api}/artifact_versions/{backbone}?hydrate=true")["resources"]["producer_pipeline_run_id"]

    def cascades_used_by(artifact_name: str, model_version: str | None = None) -> tuple[str, set[str]]:
        """(the run that made ``artifact_name``'s newest version, of ``model_version`` if given; the artifacts its steps took as ``cascade``)."""
        of_version = f"&model_version_id={model_version}" if model_version else ""
        version = get_json(f"{api}/artifact_versions?artifact={artifact_name}{of_version}&sort_by=desc:created&size=1&hydrate=true")["items"][0]
        run = version["resources"]["producer_pipeline_run_id"]
        steps = get_json(f"{api}/steps?pipeline_run_id={run}&size=100&hydrate=true")["items"]
        return run, {a["id"] for step in steps for a in step["resources"]["inputs"].get("cascade", [])}

    _, architecture_inputs = cascades_used_by("nas_architecture")
    multitask_run, adapters_inputs = cascades_used_by("winning_adapters", production["id"])  # the adapters in production
    return {
        "data_md5": metadata["lineage"]["data_md5"],
        "backbone": backbone,
        "backbone_producer": get_json(f"{api}/runs/{producer}?hydrate=true")["resources"]["pipeline"]["name"],
        "architecture_inputs": architecture_inputs,
        "adapters_inputs": adapters_inputs,
        "adapters": metadata["lineage"]["adapters"],
        "metrics": metadata["lineage"]["metrics"],
        "bento_tag": metadata["serving"]["bento_tag"],
        "multitask_run": multitask_run,
        "adapters_pipeline": get_json(f"{api}/runs/{multitask_run}?hydrate=true")["resources"]["pipeline"]["name"],
    }


def dashboard_renders_run(url: str, run_id: str, screenshot: Path) -> Path:
    """The run's DAG page in headless Chromium: nodes drawn, the last step among them; a screenshot kept."""
    put_json(f"{url}/api/v1/current-user", {"email_opted_in": False, "user_metadata": {"finished_onboarding_survey": True}})  # skip the first-visit survey
    with HeadlessChromium() as browser:
        browser.open(f"{url}/projects/default/runs/{run_id}")
        browser.wait_for("document.querySelectorAll('.react-flow__node').length > 0", timeout=120)
        browser.evaluate("document.querySelector('button[aria-label=\"Fit view\"]').click()")  # the whole DAG, not the first nodes
        browser.wait_for("document.body.innerText.includes('promote_adapters')", timeout=60)
        return browser.screenshot(screenshot)
