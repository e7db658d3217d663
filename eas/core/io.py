"""Where things live on disk, and writes that never leave a half-written file behind.

Everything generated (datasets in their real formats, cached features, converted and trained
weights, results) goes under one data root, `data/` in the repository unless `EAS_DATA`
points elsewhere. Caches can be moved separately with `EAS_CACHE` (for instance to share the
converted language model between checkouts).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]  # eas/core/io.py -> the repository
_UMASK = os.umask(0)
os.umask(_UMASK)


def data_root() -> Path:
    return Path(os.environ.get("EAS_DATA", REPO_ROOT / "data")).resolve()


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("EAS_CACHE", data_root() / "cache")).resolve()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir(*parts: str) -> Path:
    path = data_root().joinpath("results", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def datasets_dir(*parts: str) -> Path:
    path = data_root().joinpath("datasets", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    The temporary file lives in the same directory so the final `os.replace` is atomic:
    readers see either the old file or the complete new one, never a partial write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual permissions
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def save_tensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return Path(path)


def copy_tensors_into(own: dict, stored: dict, source, error: type[Exception] = ValueError) -> None:
    """Copy `stored` into the tensors `own` (name -> tensor, moved to each one's device and dtype), only if
    both name exactly the same tensors: a checkpoint that does not match its model is an error, never a
    partial load."""
    import torch

    missing, unexpected = sorted(set(own) - set(stored)), sorted(set(stored) - set(own))
    if missing or unexpected:
        raise error(f"checkpoint {source} does not match: missing {missing}, unexpected {unexpected}.")
    with torch.no_grad():
        for name, t in own.items():
            t.copy_(stored[name].to(t.device, t.dtype))


def save_frame(path: str | os.PathLike, frame) -> Path:
    """Save a pandas DataFrame as CSV atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def key_of(params: dict) -> str:
    """A short stable hash of a parameter dict, used to key cached results by their parameters."""
    import hashlib

    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
