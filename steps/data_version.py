import uuid
from pathlib import Path
from typing import Annotated

from zenml import step

from components.data import versioning


@step(enable_cache=False)
def tracked_data_version(data_root: str = ".", target: str = "data") -> Annotated[str, "tracked_md5"]:
    """The md5 that <target>.dvc records: the cache key of ingest.

    When the tracked folder is absent it is pulled from the default remote first
    (a folder that exists is never touched). The md5 is returned only when the
    workspace holds exactly that version; otherwise (untracked, not pullable,
    changed since `dvc add`) the key is unique, so ingest runs and rebuilds or
    resumes the corpus in this workspace instead of trusting a cached result
    whose files may be elsewhere (the ZenML store is shared by every checkout).
    """
    root = Path(data_root)
    md5 = versioning.tracked_md5(root / f"{target}.dvc")
    if md5 is not None and not (root / target).exists():
        versioning.pull(root, target)
    if md5 is not None and versioning.workspace_matches(root, target):
        return md5
    return f"unverified:{md5}:{uuid.uuid4().hex}"
