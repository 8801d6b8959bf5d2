from pathlib import Path
from typing import Annotated

from zenml import step

from components.data import versioning


@step(enable_cache=False)
def tracked_data_version(data_root: str = ".", target: str = "data") -> Annotated[str, "tracked_md5"]:
    """The md5 that <target>.dvc records: the cache key of ingest.

    When the tracked folder is absent it is pulled from the default remote; if
    that fails the key says so, so that ingest rebuilds instead of trusting a
    cached result whose files are gone. A folder that exists is never touched.
    """
    root = Path(data_root)
    md5 = versioning.tracked_md5(root / f"{target}.dvc")
    if md5 is None:
        return "untracked"
    if not (root / target).exists():
        versioning.pull(root, target)
    return md5 if (root / target).exists() else f"absent:{md5}"
