"""Where a run's inputs (model folders, dataset files) are: local paths found from several folders, or Hub ids.

A relative path in a config is looked up from the current folder, then from the config file's folder,
the project that config file belongs to, and the checkout rlkit runs from (where the shipped `data/`
is), so a command works from any folder. A name that is nowhere on disk is taken for a Hugging Face
Hub id only when it looks like one and the Hub answers: offline, `transformers` and `datasets` retry
for about a minute before failing with a long message; here it is one line, at once.
"""

from __future__ import annotations

import functools
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from rlkit.config import config_file

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name


def search_dirs() -> list[Path]:
    """Where a relative input path is looked up, in this order: the current folder, the config file's
    folder, the nearest folder above that config with pyproject.toml or .git, this checkout."""
    dirs = [Path.cwd()]
    cfg = config_file()
    if cfg is not None:
        dirs.append(cfg.parent)
        dirs += [d for d in cfg.parents if (d / "pyproject.toml").exists() or (d / ".git").exists()][:1]
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").exists():
        dirs.append(checkout)
    unique: list[Path] = []
    for d in dirs:
        if all(d.resolve() != u.resolve() for u in unique):
            unique.append(d)
    return unique


def find_local(value: str) -> tuple[Path | None, list[Path]]:
    """The existing file or folder `value` names (None if none) and every place looked at."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return (path if path.exists() else None), [path]
    tried = []
    for base in search_dirs():
        candidate = base / path
        if candidate.exists():
            return (path if base == Path.cwd() else candidate), tried + [candidate]
        tried.append(candidate)
    return None, tried


def resolve_input(value: str, *, key: str, what: str = "model path", hub_id: re.Pattern | None = HUB_ID) -> str:
    """`value` as a path that exists from the current folder, or unchanged as a Hub id (`hub_id` matches
    it, the Hub answers). Otherwise a FileNotFoundError naming `what` and `key`, each place looked at and
    the fix."""
    if not value:
        return value
    found, tried = find_local(value)
    if found is not None:
        return str(found)
    looked = ", ".join(str(t) for t in tried)
    if hub_id is None or not hub_id.match(value):
        raise FileNotFoundError(f"{what} not found: {key}={value!r} (looked at {looked})")
    problem = hub_unreachable()
    if problem:
        raise FileNotFoundError(
            f"{what} not found: {key}={value!r} is not a local path (looked at {looked}) and the Hugging Face "
            f"Hub is unreachable ({problem}): download it where there is network and point {key} at the folder, or set "
            "HF_HUB_OFFLINE=1 to use a copy in the local cache"
        )
    return value


WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "*.bin.index.json")


def check_model_dir(path: str, *, key: str = "model.path") -> None:
    """A local model folder must be a Hugging Face one with weights: found here, not in every actor later."""
    folder = Path(path)
    if not folder.is_dir():  # a Hub id: its files are the Hub's business
        return
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{key}={path!r} has no config.json: not a Hugging Face model folder "
                                "(save_pretrained writes one; a checkpoint is output_dir/checkpoints/step_N)")
    if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_FILES):
        raise FileNotFoundError(f"{key}={path!r} has no weights (model.safetensors or pytorch_model.bin)")


def resolve_model(value: str, *, key: str = "model.path") -> str:
    """A model given in a config (local folder anywhere `search_dirs` looks, or Hub id) as the path to
    load it from, checked to be a Hugging Face model folder: every recipe calls this before Ray starts."""
    path = resolve_input(value, key=key)
    check_model_dir(path, key=key)
    return path


@functools.lru_cache(maxsize=1)
def hub_unreachable(timeout_s: float = 3.0) -> str:
    """"" when the Hub (HF_ENDPOINT) accepts a connection, or offline mode is on (the libraries then read
    their cache); else why not."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return ""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        return f"{host}:{port}: {err.strerror or err}"
    return ""
