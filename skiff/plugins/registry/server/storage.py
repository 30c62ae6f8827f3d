"""The registry's storage layout on the filesystem.

Under ``root``::

    content/blobs/<alg>/<hex>                        every blob and manifest, by digest
    repositories/<name>/_layers/<alg>/<hex>          empty link: the blob is in this repo
    repositories/<name>/_manifests/revisions/<alg>/<hex>   link to a manifest; holds its media type
    repositories/<name>/_manifests/tags/<tag>        the digest the tag names
    repositories/<name>/_referrers/<alg>/<subject-hex>/<alg>-<hex>  descriptor JSON of a referrer
    repositories/<name>/_uploads/<uuid>/             an upload session (see uploads.py)
    gc.lock                                          shared by writers, exclusive for GC sweeps

Every state change is a single ``rename`` of a fully written file (or the creation or removal
of one link), so several registry processes can serve the same root: a reader sees the old
state or the new one, never a half-written file, and nothing lives only in one process's
memory. Blobs are content-addressed and immutable, so any process may cache them.
Names have been checked against the grammar (names.py) before they reach this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

from skiff.core.content import Digest
from skiff.errors import InvalidArgument, NotFound, os_error
from skiff.plugins.content.local import LocalContentStore

from .names import TAG_RE


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise os_error("write registry file", path, exc) from exc


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise os_error("read registry file", path, exc) from exc


def _digest_path(base: str, digest: Digest) -> str:
    return os.path.join(base, digest.algorithm, digest.hex)


class Storage:
    """Repositories as directories of links over one content-addressed blob store."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.content = LocalContentStore(os.path.join(self.root, "content"))
        self.repos = os.path.join(self.root, "repositories")
        self.lock_path = os.path.join(self.root, "gc.lock")
        try:
            os.makedirs(self.repos, exist_ok=True)
            if not os.path.exists(self.lock_path):
                with open(self.lock_path, "ab"):
                    pass
        except OSError as exc:
            raise os_error("create registry storage", self.root, exc) from exc

    # --- paths ------------------------------------------------------------------------------

    def repo_dir(self, name: str) -> str:
        return os.path.join(self.repos, name)

    def layer_link(self, name: str, digest: Digest) -> str:
        return _digest_path(os.path.join(self.repo_dir(name), "_layers"), digest)

    def revision_link(self, name: str, digest: Digest) -> str:
        return _digest_path(os.path.join(self.repo_dir(name), "_manifests", "revisions"), digest)

    def tag_path(self, name: str, tag: str) -> str:
        return os.path.join(self.repo_dir(name), "_manifests", "tags", tag)

    def referrers_dir(self, name: str, subject: Digest) -> str:
        return _digest_path(os.path.join(self.repo_dir(name), "_referrers"), subject)

    def uploads_dir(self, name: str) -> str:
        return os.path.join(self.repo_dir(name), "_uploads")

    def blob_path(self, digest: Digest) -> str:
        return self.content.blob_path(digest)

    # --- repositories -----------------------------------------------------------------------

    def repo_exists(self, name: str) -> bool:
        d = self.repo_dir(name)
        return os.path.isdir(os.path.join(d, "_manifests")) or os.path.isdir(
            os.path.join(d, "_layers"))

    def repositories(self) -> list[str]:
        """Every repository with content, sorted (``_catalog``)."""
        return self._walk(("_manifests", "_layers"))

    def repositories_with_uploads(self) -> list[str]:
        return self._walk(("_uploads",))

    def _walk(self, markers: tuple[str, ...]) -> list[str]:
        out: list[str] = []

        def walk(path: str, prefix: str) -> None:
            try:
                entries = list(os.scandir(path))
            except OSError:
                return
            if prefix and any(e.name in markers for e in entries):
                out.append(prefix)
            for e in entries:
                if not e.name.startswith("_") and e.is_dir(follow_symlinks=False):
                    walk(e.path, f"{prefix}/{e.name}" if prefix else e.name)

        walk(self.repos, "")
        return sorted(out)

    # --- blobs in a repository --------------------------------------------------------------

    def blob_size(self, name: str, digest: Digest) -> int:
        """Size of a blob visible in ``name``; NotFound if it is not linked there or gone."""
        if not os.path.exists(self.layer_link(name, digest)):
            raise NotFound(f"blob {digest} in {name}")
        try:
            return os.stat(self.blob_path(digest)).st_size
        except FileNotFoundError as exc:
            raise NotFound(f"blob {digest} in {name}") from exc
        except OSError as exc:
            raise os_error("stat blob", str(digest), exc) from exc

    def has_blob(self, name: str, digest: Digest) -> bool:
        try:
            self.blob_size(name, digest)
        except NotFound:
            return False
        return True

    def link_blob(self, name: str, digest: Digest) -> None:
        """Make a committed blob visible in ``name``, or refresh the link's time if it is.

        The link's mtime tells the garbage collector the blob was just wanted here (mounted,
        uploaded or checked by a pusher), so a collection in progress spares it.
        """
        link = self.layer_link(name, digest)
        try:
            os.makedirs(os.path.dirname(link), exist_ok=True)
            fd = os.open(link, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.utime(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise os_error("link blob", f"{digest} into {name}", exc) from exc

    def touch_blob(self, name: str, digest: Digest) -> None:
        with contextlib.suppress(OSError):
            os.utime(self.layer_link(name, digest))

    def unlink_blob(self, name: str, digest: Digest) -> bool:
        try:
            os.unlink(self.layer_link(name, digest))
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise os_error("unlink blob", f"{digest} from {name}", exc) from exc
        return True

    def layer_links(self, name: str) -> Iterator[tuple[Digest, float]]:
        """(digest, link mtime) for every blob linked into ``name``."""
        yield from _links(os.path.join(self.repo_dir(name), "_layers"))

    # --- manifests and tags -----------------------------------------------------------------

    def put_manifest(self, name: str, raw: bytes, digest: Digest, media_type: str,
                     tag: str | None, referrer: tuple[Digest, dict[str, Any]] | None) -> None:
        """Store a verified manifest: blob, then revision link, referrer link, and tag last.

        The order matters for other processes: a tag is only ever written once what it names
        is readable.
        """
        path = self.blob_path(digest)
        if not os.path.exists(path):
            self.content.put(raw, digest)
        atomic_write(self.revision_link(name, digest), media_type.encode())
        if referrer is not None:
            subject, desc = referrer
            atomic_write(os.path.join(self.referrers_dir(name, subject),
                                      f"{digest.algorithm}-{digest.hex}"),
                         json.dumps(desc).encode())
        if tag is not None:
            atomic_write(self.tag_path(name, tag), str(digest).encode())

    def manifest_media_type(self, name: str, digest: Digest) -> str:
        data = _read(self.revision_link(name, digest))
        if data is None:
            raise NotFound(f"manifest {digest} in {name}")
        return data.decode()

    def get_manifest(self, name: str, digest: Digest) -> tuple[bytes, str]:
        media_type = self.manifest_media_type(name, digest)
        data = _read(self.blob_path(digest))
        if data is None:
            raise NotFound(f"manifest {digest} in {name}")
        return data, media_type

    def resolve_tag(self, name: str, tag: str) -> Digest:
        data = _read(self.tag_path(name, tag))
        if data is None:
            raise NotFound(f"tag {tag} in {name}")
        return Digest.parse(data.decode().strip())

    def tags(self, name: str) -> list[str]:
        try:
            entries = os.listdir(os.path.join(self.repo_dir(name), "_manifests", "tags"))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise os_error("list tags", name, exc) from exc
        return sorted(t for t in entries if TAG_RE.match(t) and ".tmp-" not in t)

    def delete_tag(self, name: str, tag: str) -> bool:
        try:
            os.unlink(self.tag_path(name, tag))
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise os_error("delete tag", f"{name}:{tag}", exc) from exc
        return True

    def delete_manifest(self, name: str, digest: Digest) -> bool:
        """Remove the revision, every tag naming it and its referrer entry (blobs stay for GC)."""
        link = self.revision_link(name, digest)
        raw = _read(self.blob_path(digest))
        try:
            os.unlink(link)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise os_error("delete manifest", f"{name}@{digest}", exc) from exc
        for tag in self.tags(name):
            with contextlib.suppress(NotFound, InvalidArgument):
                if self.resolve_tag(name, tag) == digest:
                    self.delete_tag(name, tag)
        subject = _subject_of(raw)
        if subject is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.referrers_dir(name, subject),
                                       f"{digest.algorithm}-{digest.hex}"))
        return True

    def revisions(self, name: str) -> Iterator[tuple[Digest, float]]:
        yield from _links(os.path.join(self.repo_dir(name), "_manifests", "revisions"))

    def referrers(self, name: str, subject: Digest) -> list[dict[str, Any]]:
        d = self.referrers_dir(name, subject)
        try:
            entries = sorted(os.listdir(d))
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for e in entries:
            if ".tmp-" in e:
                continue
            data = _read(os.path.join(d, e))
            if data is None:
                continue
            desc = json.loads(data)
            # A referrer whose manifest was deleted meanwhile is not listed.
            if os.path.exists(self.revision_link(name, Digest.parse(desc["digest"]))):
                out.append(desc)
        return out


def _links(base: str) -> Iterator[tuple[Digest, float]]:
    try:
        algos = os.listdir(base)
    except (FileNotFoundError, NotADirectoryError):
        return
    for algo in algos:
        try:
            entries = list(os.scandir(os.path.join(base, algo)))
        except OSError:
            continue
        for e in entries:
            try:
                d = Digest.parse(f"{algo}:{e.name}")
                mtime = e.stat().st_mtime
            except Exception:  # temp files, removed meanwhile
                continue
            yield d, mtime


def _subject_of(raw: bytes | None) -> Digest | None:
    if raw is None:
        return None
    try:
        subject = json.loads(raw).get("subject")
        return Digest.parse(subject["digest"]) if isinstance(subject, dict) else None
    except Exception:
        return None
