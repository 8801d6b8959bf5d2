"""Find the pre-trained backbones to adapt: a cascadapt_backbones model version's pretrained_cascade."""

from zenml.client import Client
from zenml.models import ArtifactVersionResponse

MODEL = "cascadapt_backbones"
ARTIFACT = "pretrained_cascade"


def backbone_artifact(version: str = "latest") -> ArtifactVersionResponse:
    """The pretrained_cascade of ``version`` ("latest" = the newest version that finished pre-training).

    Resolved when the pipeline is compiled, and passed to steps as an input, so the
    run's lineage links to the exact backbone artifact.
    """
    client = Client()
    if version != "latest":
        return client.get_model_version(MODEL, version).get_artifact(ARTIFACT)
    for mv in client.list_model_versions(MODEL, sort_by="desc:number", size=50).items:
        artifact = mv.get_artifact(ARTIFACT)
        if artifact is not None:
            return artifact
    raise LookupError(f"no version of model {MODEL!r} has a {ARTIFACT!r} yet: run the pretrain pipeline first")
