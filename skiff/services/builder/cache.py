"""The build cache: what a step produced, found again by a key of what the step was.

A key is the digest of the parent state's ID (the image ID the step starts from) and of the
step as it was evaluated: the instruction with its variables expanded, plus what it depends on
besides (the build args a RUN sees, the digest of what a COPY copies). Because the parent ID
is itself the result of the steps before, a change anywhere invalidates exactly the steps
after it. A hit gives the step's result image config (JSON text, so its digest, the image ID,
comes out the same) and its layers, so no snapshot or container is touched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from skiff.core.content import Descriptor

__all__ = ["BuildCache", "CacheEntry", "NoCache", "cache_key"]


@dataclass(frozen=True)
class CacheEntry:
    """A step's result: the image config document (as stored) and every layer of it."""

    config: str
    layers: tuple[Descriptor, ...]
    media_type: str


class BuildCache(Protocol):
    def get(self, key: str) -> CacheEntry | None:
        """The entry under ``key`` if it is there and its layers still exist."""
        ...

    def put(self, key: str, entry: CacheEntry) -> None:
        """Remember ``entry`` (and keep its layers from garbage collection)."""
        ...


class NoCache:
    """``--no-cache``: nothing is found (results are still recorded for later builds)."""

    def __init__(self, inner: BuildCache | None = None) -> None:
        self.inner = inner

    def get(self, key: str) -> CacheEntry | None:
        return None

    def put(self, key: str, entry: CacheEntry) -> None:
        if self.inner is not None:
            self.inner.put(key, entry)


def cache_key(parent_id: str, step: str, extra: Sequence[object] = ()) -> str:
    """The key of ``step`` (a canonical text of the evaluated instruction) on ``parent_id``."""
    blob = json.dumps([parent_id, step, list(extra)], sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()
