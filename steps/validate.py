from typing import Annotated, Optional, Tuple

from zenml import log_metadata, step
from zenml.types import HTMLString

from components.data.validation import ValidationLimits, load_label_set, validate_manifest


@step(enable_cache=False)  # it reads the audio files, which a cache key on the manifest path cannot see
def validate_corpus(
    manifest_path: str, labels: Optional[str] = None, allow_unlabelled: bool = False
) -> Tuple[Annotated[HTMLString, "validation_report"], Annotated[dict, "validation_summary"]]:
    """Great Expectations checks of every row; the HTML report shows in the dashboard.

    The step does not fail on bad rows, so the report is always stored;
    split_corpus refuses an invalid corpus.
    """
    limits = ValidationLimits(allow_unlabelled=allow_unlabelled)
    report = validate_manifest(manifest_path, labels=load_label_set(labels), limits=limits)
    summary = {
        "ok": report.ok,
        "rows": report.n_rows,
        "failures": len(report.failures),
        "first_failures": report.format_failures().splitlines()[:20],
    }
    log_metadata({"validation_ok": report.ok, "bad_rows": len(report.failures)})
    return HTMLString(report.to_html()), summary
