"""Where the per-machine cache keeps downloaded data sets (the folder scripts/env.sh calls VP_CACHE)."""

import os
from pathlib import Path


def cache_root() -> Path:
    """$VP_CACHE, else ~/.cache/variant-parallel (as in scripts/env.sh)."""
    return Path(os.environ.get("VP_CACHE", Path.home() / ".cache" / "variant-parallel"))


def dataset_dir(override_env: str, *parts: str) -> Path:
    """A data set's folder: $override_env when set, else <cache>/datasets/<parts...>."""
    if override_env in os.environ:
        return Path(os.environ[override_env])
    return cache_root().joinpath("datasets", *parts)
