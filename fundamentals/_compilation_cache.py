"""JAX's persistent compilation cache: where the `fundamentals` command keeps it, and turning it on.

Used by `fundamentals train` (on unless `--no-cache`) and by the benchmark's `compile` section,
which times a cold cache against a warm one. The library itself never turns it on: a program
that imports `fundamentals` keeps JAX's own settings.
"""

from __future__ import annotations

import os

import jax

__all__ = ["default_cache_dir", "enable_compilation_cache"]


def default_cache_dir() -> str:
    """Where the command keeps JAX's persistent compilation cache: `$XDG_CACHE_HOME/fundamentals/jax`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fundamentals", "jax")


def enable_compilation_cache(directory: str | None = None) -> str:
    """Turn on JAX's persistent compilation cache, with thresholds low enough to cache small steps.

    A compiled train step is then read from disk on the next run instead of compiled again
    (`fundamentals bench compile` measures both). JAX's defaults skip entries that compiled in
    under a second, which is every step of a small model, so the minimum compile time and entry
    size are set to zero here.

    **Arguments:**

    - `directory`: the cache folder; `default_cache_dir()` if `None`.

    **Returns:**

    The cache directory.
    """
    directory = directory or default_cache_dir()
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    return directory
