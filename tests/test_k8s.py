"""k8s/: every overlay builds (our kustomize subset, checked against kubectl's where installed) and passes
kubernetes-validate --strict for each Kubernetes version we support; the manifests carry what the
operations issue asks (probes, requests and limits, non-root, minimal RBAC, no secrets); bad input
fails with a message that names it."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from cascadapt.kustomize import KustomizeError, build, validate
from tests.conftest import REPO

OVERLAYS = sorted(p.parent.name for p in (REPO / "k8s/overlays").glob("*/kustomization.yaml"))
KUSTOMIZATIONS = [f"overlays/{o}" for o in OVERLAYS] + ["training"]  # training: the multi-node DDP Job
KUBERNETES_VERSIONS = ["1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0"]  # README: supported versions


def key(obj: dict) -> tuple:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
def test_every_kustomization_passes_strict_validation(folder, version):
    assert validate(build(REPO / "k8s" / folder), version) == []


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed")
@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
def test_our_build_equals_kubectl_kustomize(folder):
    rendered = subprocess.run(["kubectl", "kustomize", str(REPO / "k8s" / folder)], capture_output=True, text=True, check=True).stdout
    theirs = [d for d in yaml.safe_load_all(rendered) if d]
    assert sorted(build(REPO / "k8s" / folder), key=key) == sorted(theirs, key=key)


def test_the_training_job_runs_torchrun_on_every_node_with_a_gpu():
    job = next(o for o in build(REPO / "k8s/training") if o["kind"] == "Job")
    spec = job["spec"]
    pod = spec["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == int(next(a for a in args if a.startswith("--nnodes=")).split("=")[1])
    assert "--node_rank=$(JOB_COMPLETION_INDEX)" in args and pod["containers"][0]["command"] == ["torchrun"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1" and pod["securityContext"]["runAsNonRoot"]
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_manifests_carry_probes_limits_non_root_and_no_secrets(overlay):
    objects = build(REPO / "k8s/overlays" / overlay)
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim", "Deployment", "Service"} <= kinds
    assert "Secret" not in kinds  # secrets are referenced, never shipped
    namespace = next(o for o in objects if o["kind"] == "Namespace")["metadata"]["name"]
    assert all(o["metadata"].get("namespace") == namespace for o in objects if o["kind"] != "Namespace")

    bento = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert bento["securityContext"]["runAsNonRoot"] and bento["automountServiceAccountToken"] is False
    for container in bento["containers"]:
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz" and container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container["securityContext"]["allowPrivilegeEscalation"] is False and container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert not container["image"].endswith(":latest")  # an overlay pins the bento's image
        assert all(ref["secretRef"].get("optional") for ref in container.get("envFrom", []))  # secrets referenced, not required or shipped

    role = next(o for o in objects if o["kind"] == "Role")
    assert all("*" not in rule["verbs"] and "*" not in rule["resources"] for rule in role["rules"])
    binding = next(o for o in objects if o["kind"] == "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "cascadapt-orchestrator", "namespace": namespace}]


BROKEN = {  # name -> (JSON patch on the Deployment, words in the error)
    "unknown field": ({"op": "add", "path": "/spec/template/spec/containers/0/imagePullPolicyy", "value": "Always"}, "imagePullPolicyy"),
    "wrong type": ({"op": "replace", "path": "/spec/replicas", "value": "two"}, "spec/replicas"),
    "missing required": ({"op": "remove", "path": "/spec/selector"}, "selector"),
}


def overlay_with(tmp_path, patch_ops: list[dict]):
    shutil.copytree(REPO / "k8s/base", tmp_path / "base")
    (tmp_path / "bad").mkdir()
    spec = {"resources": ["../base"], "namespace": "t", "patches": [{"target": {"kind": "Deployment", "name": "cascadapt-slu"}, "patch": yaml.safe_dump(patch_ops)}]}
    (tmp_path / "bad/kustomization.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path / "bad"


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_manifest_fails_validation_naming_the_object_and_field(case, tmp_path):
    op, words = BROKEN[case]
    errors = validate(build(overlay_with(tmp_path, [op])), "1.33.0")
    assert len(errors) == 1 and errors[0].startswith("Deployment/cascadapt-slu: ") and words in errors[0]


def test_kustomizations_we_cannot_build_say_why(tmp_path):
    with pytest.raises(KustomizeError, match="no such path"):
        build(overlay_with(tmp_path, [{"op": "replace", "path": "/spec/nothing/here", "value": 1}]))
    (tmp_path / "bad/kustomization.yaml").write_text(yaml.safe_dump({"resources": ["../base"], "configMapGenerator": []}))
    with pytest.raises(KustomizeError, match=r"\['configMapGenerator'\] not supported"):
        build(tmp_path / "bad")


def test_the_cli_prints_validated_manifests_and_fails_on_invalid_ones(tmp_path):
    from click.testing import CliRunner

    from cascadapt.cli import main

    ok = CliRunner().invoke(main, ["k8s", str(REPO / "k8s/overlays" / OVERLAYS[0]), "--validate", KUBERNETES_VERSIONS[-1]])
    assert ok.exit_code == 0 and {o["kind"] for o in yaml.safe_load_all(ok.output)} >= {"Deployment", "Namespace"}
    bad = CliRunner().invoke(main, ["k8s", str(overlay_with(tmp_path, [BROKEN["unknown field"][0]])), "--validate", "1.33.0"])
    assert bad.exit_code == 1 and "imagePullPolicyy" in bad.output
