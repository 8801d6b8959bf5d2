from pathlib import Path
from typing import Annotated, Optional, Tuple

import pandas as pd
from zenml import log_metadata, step
from zenml.types import HTMLString

from components.data.corpus import CorpusConfig, build_corpus
from components.data.manifest import read_manifest
from components.data.overview import overview_html
from components.data.slurp import read_records
from components.data.speakers import parse_voices
from components.data.versioning import git_sha


@step
def ingest(
    tracked_md5: str,
    slurp_jsonl: str,
    corpus_name: str = "demo",
    data_root: str = ".",
    voices: str = "demo",
    snrs: Tuple[float, ...] = (0.0, 5.0, 10.0, 20.0),
    noise_kinds: Tuple[str, ...] = ("white", "pink", "babble"),
    speakers_per_text: int = 1,
    limit: Optional[int] = None,
    seed: int = 0,
    workers: Optional[int] = None,
) -> Tuple[
    Annotated[pd.DataFrame, "manifest"],
    Annotated[str, "manifest_path"],
    Annotated[HTMLString, "corpus_overview"],
]:
    """Read SLURP text and synthesize (or resume) the corpus data/<corpus_name>; cached on tracked_md5."""
    records = read_records(slurp_jsonl)[:limit]
    cfg = CorpusConfig(
        speakers=parse_voices(voices),
        snrs=list(snrs),
        noise_kinds=list(noise_kinds),
        speakers_per_text=speakers_per_text,
        seed=seed,
        **({"workers": workers} if workers else {}),
    )
    manifest_path = build_corpus(records, Path(data_root) / "data" / corpus_name, cfg)
    df = read_manifest(manifest_path)
    log_metadata(
        {
            "tracked_md5": tracked_md5,
            "git_sha": git_sha(data_root) or "no commit",
            "utterances": len(df),
            "speakers": int(df["speaker"].nunique()),
            "hours": float(df["duration"].sum() / 3600),
        }
    )
    return df, str(manifest_path), HTMLString(overview_html(df, f"corpus {corpus_name}"))
