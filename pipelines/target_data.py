"""What the baseline, search and multi-task pipelines start from: the target corpus, tracked, ingested, validated and
split, and the backbones. A plain function of steps, called inside a pipeline."""

from steps.backbones import backbone_artifact
from steps.data_version import tracked_data_version
from steps.ingest import ingest
from steps.settings import TargetCorpus
from steps.split import fit_to_backbone, split_corpus
from steps.validate import validate_corpus

ALL_MODULES = ("se", "asr", "bridge", "nlu")  # what full fine-tuning trains


def target_data(target: TargetCorpus):
    """-> (train, nas_val, test, manifest_path, backbone, data md5) step outputs."""
    t = target
    md5 = tracked_data_version(data_root=t.data_root)
    manifest, manifest_path, _ = ingest(md5, slurp_jsonl=t.slurp_jsonl, corpus_name=t.corpus_name, data_root=t.data_root, voices=t.voices, snrs=t.snrs, limit=t.limit, seed=t.seed)
    _, summary = validate_corpus(manifest_path)
    backbone = backbone_artifact(t.backbone_version)
    train, nas_val, test = fit_to_backbone(backbone, *split_corpus(manifest, summary))
    return train, nas_val, test, manifest_path, backbone, md5
