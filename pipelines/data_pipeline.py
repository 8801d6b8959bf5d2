from typing import Optional, Tuple

from zenml import pipeline

from steps.data_version import tracked_data_version
from steps.ingest import ingest
from steps.split import split_corpus
from steps.validate import validate_corpus
from steps.version import version_corpus


@pipeline
def data_pipeline(
    slurp_jsonl: str = "components/data/sample/slurp_devel_sample.jsonl",
    corpus_name: str = "demo",
    data_root: str = ".",
    voices: str = "demo",
    snrs: Tuple[float, ...] = (0.0, 5.0, 10.0, 20.0),
    noise_kinds: Tuple[str, ...] = ("white", "pink", "babble"),
    speakers_per_text: int = 1,
    limit: Optional[int] = None,
    seed: int = 0,
    labels: Optional[str] = None,
    allow_unlabelled: bool = False,
    dvc_remote: Optional[str] = None,
) -> None:
    """ingest -> validate -> split -> version."""
    md5 = tracked_data_version(data_root=data_root)
    manifest, manifest_path, _ = ingest(
        md5,
        slurp_jsonl=slurp_jsonl,
        corpus_name=corpus_name,
        data_root=data_root,
        voices=voices,
        snrs=snrs,
        noise_kinds=noise_kinds,
        speakers_per_text=speakers_per_text,
        limit=limit,
        seed=seed,
    )
    _, summary = validate_corpus(manifest_path, labels=labels, allow_unlabelled=allow_unlabelled)
    split_corpus(manifest, summary)
    version_corpus(summary, data_root=data_root, remote=dvc_remote, after="split_corpus")
