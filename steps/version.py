from pathlib import Path
from typing import Annotated, Optional

from zenml import log_metadata, step

from components.data import versioning


@step(enable_cache=False)
def version_corpus(
    validation_summary: dict, data_root: str = ".", target: str = "data", remote: Optional[str] = None
) -> Annotated[dict, "data_version"]:
    """`dvc add` the validated corpus, push it to the remote, and log {dvc md5, git sha}."""
    if not validation_summary["ok"]:
        raise ValueError("refusing to version a corpus that failed validation")
    root = Path(data_root)
    md5 = versioning.add(root, target)
    versioning.push(root, target, remote)
    version = {"dvc_md5": md5, "git_sha": versioning.git_sha(root) or "no commit", "dvc_file": f"{target}.dvc"}
    log_metadata(version)
    return version
