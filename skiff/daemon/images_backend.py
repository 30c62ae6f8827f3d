"""The images router's backend: the image, interchange and distribution services wired to the
daemon's registry client and event bus.

Every method blocks (the services do I/O); the router runs them in worker threads, so events
go out through ``EventBus.publish_threadsafe``. The actions and actor fields are Docker's:
pull/push name the reference, tag names the new reference on the image ID, untag/delete/load/
import/save carry the image ID as both ID and name, with the image's labels as attributes.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Sequence
from typing import IO, Any, BinaryIO, cast

from skiff.core.images import Platform
from skiff.core.progress import ProgressSink
from skiff.core.reference import Reference, parse_reference
from skiff.core.registry import Repository
from skiff.daemon.events import EventBus
from skiff.daemon.registry_allow import RegistryAllowList
from skiff.errors import InvalidArgument, NotFound, SkiffError
from skiff.plugins.registry.client import HttpRegistryClient, RegistryConfig
from skiff.plugins.registry.credentials import (
    DOCKER_HUB_KEY,
    Credentials,
    config_key,
    decode_registry_auth,
)
from skiff.services import distribution
from skiff.services.images import Image, ImageService
from skiff.services.interchange import Interchange
from skiff.services.unpack import Unpacker


def registry_config(insecure: Sequence[str] = (), mirrors: Sequence[str] = ()) -> RegistryConfig:
    """dockerd's ``--insecure-registry`` / ``--registry-mirror`` as the client's settings."""
    return RegistryConfig(insecure=frozenset(insecure), mirrors=tuple(mirrors))


def registry_domain(server: str) -> str:
    """``/auth``'s ``serveraddress`` (``http://host:5000``, ``host:5000/v1/``, Docker Hub's
    legacy URL or empty) -> the domain a reference would name."""
    key = config_key(server.strip()) if server.strip() else DOCKER_HUB_KEY
    if key == DOCKER_HUB_KEY:
        return "docker.io"
    return key.split("/", 1)[0]


def _server_of(header: str) -> str:
    """The ``serveraddress`` inside an X-Registry-Auth header ("" when absent or unreadable;
    decode_registry_auth reports malformed headers)."""
    text = header.strip()
    try:
        obj = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)) or b"{}")
    except (binascii.Error, ValueError):
        return ""
    return str(obj.get("serveraddress") or "") if isinstance(obj, dict) else ""


class ImagesFacade:
    """What ``routers/images.py`` needs, over the services."""

    def __init__(self, images: ImageService, interchange: Interchange, events: EventBus, *,
                 unpack: Unpacker | None = None, registry: RegistryConfig | None = None,
                 allow: RegistryAllowList | None = None) -> None:
        self.images = images
        self.allow = allow or RegistryAllowList(())
        self.interchange = interchange
        self.events = events
        self.unpack = unpack
        # one client for the daemon: its connection pools and scheme probes are shared by
        # every request; each request gets a view with its caller's credentials
        self.client = HttpRegistryClient(registry or RegistryConfig())
        self._close_lock = threading.Lock()

    def close(self) -> None:
        with self._close_lock:
            self.client.close()

    # --- events ------------------------------------------------------------------------

    def _publish(self, action: str, actor: str, name: str, img: Image | None = None) -> None:
        labels = self._labels(img)
        self.events.publish_threadsafe("image", action, actor, {**labels, "name": name})

    @staticmethod
    def _labels(img: Image | None) -> dict[str, str]:
        raw = img.config.config.get("Labels") if img is not None else None
        return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def _image_or_none(self, name: str) -> Image | None:
        try:
            return self.images.get(name)
        except SkiffError:
            return None

    # --- queries -----------------------------------------------------------------------

    def list_images(self, *, dangling: bool | None = None, reference: Sequence[str] = (),
                    label: Sequence[str] = ()) -> list[dict[str, Any]]:
        return self.images.list_images(dangling=dangling, reference=reference, label=label)

    def inspect(self, name: str) -> dict[str, Any]:
        return self.images.inspect(name)

    def history(self, name: str) -> list[dict[str, Any]]:
        return self.images.history(name)

    # --- load / import / save ----------------------------------------------------------

    def load(self, archive: IO[bytes]) -> list[str]:
        # a spooled temp file is a binary file in all but name (typeshed calls it IO[bytes])
        result = self.interchange.load(cast(BinaryIO, archive))
        for img in result.images:
            self._publish("load", str(img.id), str(img.id), img)
        return result.messages

    def import_rootfs(self, stream: IO[bytes], names: list[Reference], changes: list[str],
                      message: str) -> str:
        img = self.interchange.import_rootfs(cast(BinaryIO, stream), names=names,
                                             changes=changes, message=message)
        self._publish("import", str(img.id), str(img.id), img)
        return str(img.id)

    def check_save(self, names: Sequence[str]) -> None:
        """Fail (NotFound, InvalidArgument) before any byte of the archive is written."""
        if not names:
            raise InvalidArgument("save: no images named")
        for name in names:
            self.images.get(name)

    def save(self, names: Sequence[str], out: BinaryIO) -> None:
        self.interchange.save(names, out)
        seen: set[str] = set()
        for name in names:
            img = self._image_or_none(name)
            if img is not None and str(img.id) not in seen:
                seen.add(str(img.id))
                self._publish("save", str(img.id), str(img.id), img)

    # --- tag / remove / prune ----------------------------------------------------------

    def tag(self, source: str, target: Reference) -> None:
        ref = self.images.tag(source, str(target))
        img = self.images.get(str(ref))
        self._publish("tag", str(img.id), ref.familiar(), img)

    def remove(self, name: str, *, force: bool = False,
               noprune: bool = False) -> list[dict[str, str]]:
        img = self.images.get(name)
        out = self.images.remove(name, force=force, prune=not noprune)
        for entry in out:
            if "Untagged" in entry:
                self._publish("untag", str(img.id), str(img.id), img)
            elif "Deleted" in entry:
                self._publish("delete", entry["Deleted"], entry["Deleted"], img)
        return out

    def prune(self, *, all_images: bool, until: float | None,
              label: Sequence[str]) -> dict[str, Any]:
        out = self.images.prune(all_images=all_images, until=until, label=label)
        for entry in out["ImagesDeleted"] or []:
            if "Deleted" in entry:
                self._publish("delete", entry["Deleted"], entry["Deleted"])
        self.events.publish_threadsafe("image", "prune", "",
                                       {"reclaimed": str(out["SpaceReclaimed"])})
        return out

    # --- registries --------------------------------------------------------------------

    def _client(self, registry_auth: str) -> HttpRegistryClient:
        """The shared client with the caller's credentials (X-Registry-Auth), or anonymous."""
        creds = decode_registry_auth(registry_auth)
        if creds.empty:
            return self.client.with_credentials(lambda _host: Credentials())
        server = _server_of(registry_auth)
        wanted = registry_domain(server) if server else None

        def lookup(host: str) -> Credentials:
            # only the registry the credentials were given for sees them (not a mirror or a
            # registry a redirect leads to); no serveraddress means "this request's registry"
            if wanted is None or registry_domain(host) == wanted:
                return creds
            return Credentials()

        return self.client.with_credentials(lookup)

    def pull(self, ref: Reference, *, registry_auth: str = "", platform: str = "",
             progress: ProgressSink, cancel: threading.Event | None = None) -> None:
        """Pull ``ref``; a bare repository means every tag the registry lists (``pull -a``)."""
        self.allow.check(ref.domain, f"pull {ref.familiar()}")
        want = Platform.parse(platform) if platform.strip() else None
        client = self._client(registry_auth)
        refs = [ref]
        if ref.is_name_only:
            tags = client.list_tags(Repository(ref.domain, ref.path))
            if not tags:
                raise NotFound(f"pull {ref.familiar_name()}: the registry lists no tags")
            refs = [ref.with_tag(t) for t in sorted(tags)]
        for one in refs:
            distribution.pull(one, client=client, content=self.images.content,
                              metadata=self.images.metadata, platform=want, progress=progress,
                              unpack=self.unpack, cancel=cancel, images=self.images)
            self._publish("pull", one.familiar(), one.familiar(), self._image_or_none(str(one)))

    def push_targets(self, repo: Reference) -> list[Reference]:
        """The references a push of ``repo`` sends: itself when tagged, else every local tag
        of the repository (Docker's push without a tag); NotFound when there are none."""
        if not repo.is_name_only:
            return [repo]
        tags = sorted({r for img in self.images.images() for _, r in img.named()
                       if r.name == repo.name and r.tag is not None and r.digest is None},
                      key=str)
        if not tags:
            raise NotFound(f"An image does not exist locally with the tag: "
                           f"{repo.familiar_name()}")
        return tags

    def push(self, ref: Reference, *, registry_auth: str = "", progress: ProgressSink,
             cancel: threading.Event | None = None) -> None:
        self.allow.check(ref.domain, f"push {ref.familiar()}")
        client = self._client(registry_auth)
        for one in self.push_targets(ref):
            distribution.push(one, client=client, content=self.images.content,
                              metadata=self.images.metadata, progress=progress, cancel=cancel)
            self._publish("push", one.familiar(), one.familiar(), self._image_or_none(str(one)))

    def login(self, server: str, creds: Credentials) -> None:
        """Check ``creds`` against the registry (PermissionDenied when refused); nothing is
        stored: the client keeps credentials and sends them with each pull and push."""
        self.allow.check(registry_domain(server), f"login to {server or 'Docker Hub'}")
        self.client.ping(registry_domain(server), creds)


def parse_pull_reference(image: str, tag: str) -> Reference:
    """``fromImage`` + ``tag`` as dockerd combines them: a tag that is a digest pins it; no
    tag at all leaves the bare repository (every tag, as the API says of an empty tag)."""
    if not image.strip():
        raise InvalidArgument("pull: fromImage is empty")
    ref = parse_reference(image.strip(), default_tag=False)
    if tag:
        if tag.startswith(("sha256:", "sha512:")):
            try:
                return parse_reference(f"{ref.name}@{tag}")
            except InvalidArgument as exc:
                raise InvalidArgument(f"pull {ref.familiar_name()}: tag {tag!r} is not a "
                                      f"valid digest ({exc.message})") from exc
        ref = ref.name_only().with_tag(tag)
    return ref
