"""Data versioning with DVC (through its CLI, the interface DVC keeps stable) and git.

`data.dvc` at the repository root tracks the generated corpora under `data/`;
the default remote is a local folder (`.dvc/config`), S3/GCS by `dvc remote add`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml


class DvcError(RuntimeError):
    """A DVC command failed."""


def dvc(root: str | Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``dvc args...`` in root with this interpreter's DVC."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )
    if check and proc.returncode != 0:
        raise DvcError(f"dvc {' '.join(args)} failed in {root} (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc


def tracked_md5(dvc_file: str | Path) -> str | None:
    """The md5 a .dvc file records for its (single) output, or None when it records none."""
    path = Path(dvc_file)
    if not path.is_file():
        return None
    try:
        meta = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise DvcError(f"{path}: not valid YAML ({e})") from None
    outs = meta.get("outs") or []
    return outs[0].get("md5") if outs else None


def add(root: str | Path, target: str) -> str:
    """Track target (a folder relative to root) and return its new md5."""
    dvc(root, "add", "--quiet", target)
    md5 = tracked_md5(Path(root) / f"{target}.dvc")
    if md5 is None:
        raise DvcError(f"dvc add {target} wrote no md5 into {target}.dvc")
    return md5


def push(root: str | Path, target: str, remote: str | None = None) -> None:
    dvc(root, "push", "--quiet", *(["-r", remote] if remote else []), f"{target}.dvc")


def pull(root: str | Path, target: str, remote: str | None = None) -> bool:
    """Fetch and check out target's tracked version; False when the remote lacks it."""
    proc = dvc(root, "pull", "--quiet", *(["-r", remote] if remote else []), f"{target}.dvc", check=False)
    return proc.returncode == 0


def workspace_matches(root: str | Path, target: str) -> bool:
    """True when the workspace holds exactly the version target.dvc records."""
    if tracked_md5(Path(root) / f"{target}.dvc") is None or not (Path(root) / target).exists():
        return False
    proc = dvc(root, "status", "--quiet", f"{target}.dvc", check=False)
    return proc.returncode == 0


def git_sha(root: str | Path) -> str | None:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None
