"""A Dockerfile build, step by step, the way Docker's classic builder does it.

The parser gives typed records; this module evaluates them in order: global ARGs, then each
stage up to the target (FROM an image, ``scratch`` or an earlier stage; the base image's
ONBUILD triggers first), with build-arg scoping from :mod:`.buildargs`. Metadata instructions
only change the image config (a history entry marked ``empty_layer``); RUN, COPY, ADD and
WORKDIR change the filesystem through a :class:`Workspace` (the daemon's snapshots, mounts and
runtime), which returns the layer the step added, if any.

Every step's result is a :class:`State`: the image config document and its layers, whose ID is
the digest of the document exactly as stored, like an image ID. Steps are looked up in the
build cache before they run (see :mod:`.cache`); a fully cached build therefore does no
filesystem work at all, only lookups, and yields the same image ID as the first build.

Progress goes to ``out`` as the text lines Docker prints (``Step 2/7 : RUN ...``,
`` ---> Using cache``, `` ---> 1a2b3c4d5e6f``); the daemon wraps them into its JSON stream.
"""

from __future__ import annotations

import contextlib
import copy as copy_module
import functools
import hashlib
import json
import os
import posixpath
import secrets
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from skiff.core.content import Descriptor
from skiff.core.reference import Reference
from skiff.errors import InvalidArgument, SkiffError, os_error

from .buildargs import PROXY_ARGS, BuildArgs, StageScope
from .cache import BuildCache, CacheEntry, cache_key
from .context import BuildContext, Source, find_sources, sources_digest
from .instructions import (
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Instruction,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
    is_url,
)
from .lines import DockerfileError
from .parser import Dockerfile, parse, parse_triggers
from .words import Expander

__all__ = ["Build", "BuildRequest", "CopyPlan", "Output", "RunResult", "State", "Workspace",
           "scratch_state"]

Output = Callable[[str], None]
# ADD <url>: download ``url`` into the file at the given path (the daemon's I/O)
Fetch = Callable[[str, str], None]
"""Receives progress text (whole lines, newline included)."""

DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_NOT_INHERITED = ("comment", "container", "container_config", "docker_version")


def _serialise(doc: Mapping[str, Any]) -> str:
    # the same bytes ImageService.store_image writes, so the ID here is the image ID there
    return json.dumps(doc, separators=(",", ":"))


@dataclass(frozen=True)
class State:
    """An image as the build has it: the config document (as stored) and its layers."""

    raw: str
    layers: tuple[Descriptor, ...]
    media_type: str = OCI_MANIFEST
    doc: dict[str, Any] = field(compare=False, default_factory=dict)

    @classmethod
    def of(cls, doc: Mapping[str, Any], layers: Sequence[Descriptor],
           media_type: str = OCI_MANIFEST) -> State:
        raw = _serialise(doc)
        return cls(raw, tuple(layers), media_type, json.loads(raw))

    @classmethod
    def parse(cls, raw: str, layers: Sequence[Descriptor],
              media_type: str = OCI_MANIFEST) -> State:
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise InvalidArgument(f"image config: not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise InvalidArgument("image config: not a JSON object")
        return cls(raw, tuple(layers), media_type, doc)

    @property
    def id(self) -> str:
        return "sha256:" + hashlib.sha256(self.raw.encode()).hexdigest()

    @property
    def short_id(self) -> str:
        return self.id[7:19]

    @property
    def config(self) -> dict[str, Any]:
        cfg = self.doc.get("config")
        return cfg if isinstance(cfg, dict) else {}

    @property
    def diff_ids(self) -> list[str]:
        rootfs = self.doc.get("rootfs")
        ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        return [str(d) for d in ids] if isinstance(ids, list) else []

    def entry(self) -> CacheEntry:
        return CacheEntry(self.raw, self.layers, self.media_type)


def scratch_state(architecture: str, os_name: str = "linux") -> State:
    """``FROM scratch``: no layers; the classic builder's default PATH."""
    return State.of({"architecture": architecture, "os": os_name,
                     "config": {"Env": [DEFAULT_PATH]},
                     "rootfs": {"type": "layers", "diff_ids": []}, "history": []}, [])


@dataclass(frozen=True)
class CopyPlan:
    """What COPY/ADD puts into the container: ``dest`` is absolute; ``dest_is_dir`` when it
    must be a directory (ends in ``/`` or several sources)."""

    sources: tuple[Source, ...]
    dest: str
    dest_is_dir: bool
    chown: str = ""
    chmod: int | None = None
    extract_archives: bool = False  # ADD: local tar archives are unpacked at dest


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    layer: Descriptor | None
    diff_id: str = ""


@dataclass(frozen=True)
class LayerResult:
    layer: Descriptor
    diff_id: str


class Workspace(Protocol):
    """The filesystem side of a build; every call blocks."""

    def scratch(self) -> State: ...

    def base(self, name: str, *, pull: bool, out: Output) -> State:
        """The image ``name`` as a state (pulled when ``pull`` or when absent locally)."""
        ...

    def run(self, parent: State, argv: Sequence[str], *, container_id: str, env: Sequence[str],
            user: str, workdir: str, network: str, out: Output) -> RunResult:
        """Run ``argv`` on a snapshot of ``parent``; its output goes to ``out``."""
        ...

    def copy(self, parent: State, plan: CopyPlan, *, workdir: str) -> LayerResult | None:
        """Copy ``plan``'s sources into a snapshot of ``parent``; None when nothing changed."""
        ...

    def mkdir(self, parent: State, path: str) -> LayerResult | None:
        """Make directory ``path`` (and its parents) exist; None when it already did."""
        ...

    def stage_root(self, state: State) -> contextlib.AbstractContextManager[str]:
        """A read-only directory showing ``state``'s filesystem (``COPY --from``)."""
        ...

    def store(self, state: State, names: Sequence[Reference]) -> str:
        """Record ``state`` as an image named ``names``; its image ID."""
        ...


@dataclass(frozen=True)
class BuildRequest:
    dockerfile: str  # the Dockerfile's text
    dockerfile_name: str = "Dockerfile"
    tags: tuple[Reference, ...] = ()
    build_args: Mapping[str, str | None] = field(default_factory=dict)
    target: str = ""
    pull: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    network: str = ""  # the build's networkmode: "" / "default" / "none" / "host"
    remove: bool = True  # rm: say so when intermediate containers go (they always go)


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int((now % 1) * 1e9):09d}Z"


def _quoted_list(values: Sequence[str]) -> str:
    """Go's %q of a []string (Docker's history text for CMD, SHELL, ...)."""
    return "[" + " ".join(json.dumps(v) for v in values) + "]"


@dataclass
class _Stage:
    index: int
    state: State
    scope: StageScope
    cmd_set: bool = False


class StepError(SkiffError):
    """A step failed; the message names the Dockerfile line."""


class Build:
    """One build: call :meth:`run` once."""

    def __init__(self, workspace: Workspace, cache: BuildCache, context: BuildContext,
                 out: Output, *, now: Callable[[], str] = _now,
                 fetch: Fetch | None = None) -> None:
        self.fetch = fetch
        self.ws = workspace
        self.cache = cache
        self.context = context
        self.out = out
        self.now = now
        self.df: Dockerfile | None = None
        self.results: dict[int, State] = {}
        self.step_no = 0
        self.total = 0
        self.request = BuildRequest("")

    # --- the whole build ----------------------------------------------------------------

    def run(self, request: BuildRequest) -> str:
        """Build; return the image ID. Errors name the Dockerfile line of the failing step."""
        self.request = request
        df = parse(request.dockerfile, name=request.dockerfile_name)
        self.df = df
        args = BuildArgs(request.build_args, df.escape)
        target = df.target_stage(request.target)
        stages = df.stages[: target.index + 1]
        label_step = self._label_step(request.labels)
        self.total = len(df.meta_args) + sum(len(s.steps()) for s in stages) + \
            (1 if label_step else 0)
        for meta in df.meta_args:
            self._announce(meta)
        meta_env = args.declare_meta(df.meta_args)
        for stage in stages:
            self.results[stage.index] = self._stage(df, stage.index, args, meta_env, label_step
                                                    if stage is target else None)
        final = self.results[target.index]
        unused = args.unused()
        if unused:
            self.out(f"[Warning] One or more build-args [{' '.join(unused)}] were not "
                     "consumed\n")
        image_id = self.ws.store(final, request.tags)
        return image_id

    def _label_step(self, labels: Mapping[str, str]) -> Label | None:
        """``--label``s: Docker appends them to the target stage as one LABEL step."""
        if not labels:
            return None
        pairs = tuple(sorted(labels.items()))
        text = "LABEL " + " ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in pairs)
        return Label(0, 0, text, pairs)

    def _announce(self, ins: Instruction) -> None:
        self.step_no += 1
        self.out(f"Step {self.step_no}/{self.total} : {ins.original}\n")

    def _stage(self, df: Dockerfile, index: int, args: BuildArgs, meta_env: Mapping[str, str],
               extra: Label | None) -> State:
        stage = df.stages[index]
        self._announce(stage.from_)
        from_ = stage.from_.expand(Expander(meta_env, df.escape))
        state = self._located(stage.from_, lambda: self._base(df, index, from_))
        self.out(f" ---> {state.short_id}\n")
        if not any(e.startswith("PATH=") for e in _env_list(state.config)):
            # Docker's rule: a base without PATH gets the default one (no history entry)
            doc = copy_module.deepcopy(state.doc)
            config = doc.get("config")
            if not isinstance(config, dict):
                config = doc["config"] = {}
            config["Env"] = [*_env_list(config), DEFAULT_PATH]
            state = State.of(doc, state.layers, state.media_type)
        st = _Stage(index, state, args.stage(_env_list(state.config)))
        triggers = state.config.get("OnBuild") or []
        if triggers and isinstance(triggers, list):
            self.out(f"# Executing {len(triggers)} build trigger"
                     f"{'s' if len(triggers) != 1 else ''}\n")
            records = self._located(stage.from_, lambda: parse_triggers(
                [str(t) for t in triggers], df.escape))
            # the triggers run now: the new image does not carry them on (Docker clears them)
            doc = copy_module.deepcopy(state.doc)
            doc["config"]["OnBuild"] = None
            st.state = State.of(doc, state.layers, state.media_type)
            for trig in records:  # errors name the FROM line: the triggers come from there
                self._located(stage.from_, functools.partial(self._one, st, trig))
        for ins in stage.instructions:
            self._announce(ins)
            self._dispatch(st, ins)
        if extra is not None:
            self._announce(extra)
            self._dispatch(st, extra)
        return st.state

    def _base(self, df: Dockerfile, index: int, from_: From) -> State:
        earlier = df.stage_ref(from_.image, index)
        if earlier is not None:
            return self.results[earlier.index]
        if from_.is_scratch:
            return self.ws.scratch()
        return self.ws.base(from_.image, pull=self.request.pull, out=self.out)

    # --- steps ----------------------------------------------------------------------------

    def _located(self, ins: Instruction, fn: Callable[[], Any]) -> Any:
        """Run ``fn``; an error from it names the instruction's line (Docker names none)."""
        try:
            return fn()
        except DockerfileError:
            raise
        except SkiffError as exc:
            if isinstance(exc, StepError) or not ins.line:
                raise
            message = exc.message
            if isinstance(ins, (Copy, Add)) and not message.startswith(ins.keyword):
                message = f"{ins.keyword} failed: {message}"  # Docker's prefix
            raise type(exc)(f"{message} (Dockerfile line {ins.line}: "
                            f"{ins.original.splitlines()[0]})") from exc

    def _dispatch(self, st: _Stage, ins: Instruction) -> None:
        self._located(ins, lambda: self._one(st, ins))

    def _one(self, st: _Stage, ins: Instruction) -> None:
        ex = st.scope.expander()
        if isinstance(ins, Run):
            self._run(st, ins)
        elif isinstance(ins, (Copy, Add)):
            self._copy(st, ins.expand(ex))
        elif isinstance(ins, Workdir):
            self._workdir(st, ins.expand(ex))
        elif isinstance(ins, Arg):
            st.scope.declare(ins)
            decls = ins.expand(ex).args
            text = " ".join(d.name if d.default is None else f"{d.name}={d.default}"
                            for d in decls)
            self._meta(st, ins, f"ARG {text}", (), lambda c, d: None)
        elif isinstance(ins, Env):
            pairs = ins.expand(ex).pairs
            for key, value in pairs:
                st.scope.set_env(key, value)
            text = " ".join(f"{k}={v}" for k, v in pairs)
            self._meta(st, ins, f"ENV {text}", (), lambda c, d: _set_env(c, pairs))
        else:
            self._metadata(st, ins, ex)

    def _metadata(self, st: _Stage, ins: Instruction, ex: Expander) -> None:
        shell = tuple(st.state.config.get("Shell") or DEFAULT_SHELL)
        if isinstance(ins, Label):
            pairs = ins.expand(ex).pairs
            text = " ".join(f"{k}={v}" for k, v in pairs)
            self._meta(st, ins, f"LABEL {text}", (),
                       lambda c, d: _dict(c, "Labels").update(dict(pairs)))
        elif isinstance(ins, Expose):
            ports = ins.expand(ex).exposed()
            self._meta(st, ins, f"EXPOSE {' '.join(ports)}", (),
                       lambda c, d: _dict(c, "ExposedPorts").update({p: {} for p in ports}))
        elif isinstance(ins, Volume):
            paths = ins.expand(ex).paths
            self._meta(st, ins, f"VOLUME {_quoted_list(paths)}", (),
                       lambda c, d: _dict(c, "Volumes").update({p: {} for p in paths}))
        elif isinstance(ins, User):
            user = ins.expand(ex).user
            self._meta(st, ins, f"USER {user}", (), lambda c, d: c.__setitem__("User", user))
        elif isinstance(ins, StopSignal):
            sig = ins.expand(ex).signal
            self._meta(st, ins, f"STOPSIGNAL {sig}", (),
                       lambda c, d: c.__setitem__("StopSignal", sig))
        elif isinstance(ins, Healthcheck):
            hc = ins.config()
            self._meta(st, ins, f"HEALTHCHECK &{json.dumps(hc, sort_keys=True)}", (),
                       lambda c, d: c.__setitem__("Healthcheck", hc))
        elif isinstance(ins, Shell):
            new_shell = list(ins.shell)
            self._meta(st, ins, f"SHELL {_quoted_list(new_shell)}", (),
                       lambda c, d: c.__setitem__("Shell", new_shell))
        elif isinstance(ins, Cmd):
            argv = ins.argv(shell)
            st.cmd_set = True
            self._meta(st, ins, f"CMD {_quoted_list(argv)}", (),
                       lambda c, d: c.__setitem__("Cmd", argv))
        elif isinstance(ins, Entrypoint):
            argv = ins.argv(shell)
            keep_cmd = st.cmd_set

            def set_entrypoint(c: dict[str, Any], d: dict[str, Any]) -> None:
                c["Entrypoint"] = argv
                if not keep_cmd:  # a CMD inherited from the base no longer applies
                    c["Cmd"] = None

            self._meta(st, ins, f"ENTRYPOINT {_quoted_list(argv)}", (keep_cmd,),
                       set_entrypoint)
        elif isinstance(ins, Onbuild):
            trigger = ins.trigger
            self._meta(st, ins, f"ONBUILD {trigger}", (),
                       lambda c, d: c.__setitem__("OnBuild", [*(c.get("OnBuild") or []),
                                                              trigger]))
        elif isinstance(ins, Maintainer):
            name = ins.name
            self._meta(st, ins, f"MAINTAINER {name}", (),
                       lambda c, d: d.__setitem__("author", name))
        else:
            raise InvalidArgument(f"{ins.keyword} cannot be used here")

    # --- results --------------------------------------------------------------------------

    def _hit(self, st: _Stage, key: str) -> bool:
        entry = self.cache.get(key)
        if entry is None:
            return False
        st.state = State.parse(entry.config, entry.layers, entry.media_type)
        self.out(" ---> Using cache\n")
        self.out(f" ---> {st.state.short_id}\n")
        return True

    def _commit(self, st: _Stage, key: str, created_by: str,
                mutate: Callable[[dict[str, Any], dict[str, Any]], None],
                layer: LayerResult | None) -> None:
        parent = st.state
        doc = copy_module.deepcopy(parent.doc)
        for stale in _NOT_INHERITED:  # said of the parent (an import, a commit), not of us
            doc.pop(stale, None)
        config = doc.get("config")
        if not isinstance(config, dict):
            config = doc["config"] = {}
        mutate(config, doc)
        created = self.now()
        history = doc.get("history")
        if not isinstance(history, list):
            history = []
        if not history and parent.diff_ids:
            # a base that recorded none: one entry per layer keeps history and layers aligned
            history = [{"created": doc.get("created") or created} for _ in parent.diff_ids]
        entry: dict[str, Any] = {"created": created, "created_by": created_by}
        layers = list(parent.layers)
        if layer is None:
            entry["empty_layer"] = True
        else:
            rootfs = doc.setdefault("rootfs", {"type": "layers", "diff_ids": []})
            rootfs["diff_ids"] = [*parent.diff_ids, layer.diff_id]
            layers.append(layer.layer)
        history.append(entry)
        doc["history"] = history
        doc["created"] = created
        st.state = State.of(doc, layers, parent.media_type)
        self.cache.put(key, st.state.entry())

    def _meta(self, st: _Stage, ins: Instruction, comment: str, extra: Sequence[object],
              mutate: Callable[[dict[str, Any], dict[str, Any]], None]) -> None:
        key = cache_key(st.state.id, comment, extra)
        if self._hit(st, key):
            return
        cid = self._running()
        self._commit(st, key, f"/bin/sh -c #(nop)  {comment}", mutate, None)
        self._done(cid, st)

    def _running(self) -> str:
        cid = secrets.token_hex(32)
        self.out(f" ---> Running in {cid[:12]}\n")
        return cid

    def _done(self, cid: str, st: _Stage) -> None:
        if self.request.remove:
            self.out(f"Removing intermediate container {cid[:12]}\n")
        self.out(f" ---> {st.state.short_id}\n")

    # --- filesystem steps -----------------------------------------------------------------

    def _workdir(self, st: _Stage, ins: Workdir) -> None:
        current = str(st.state.config.get("WorkingDir") or "/")
        path = posixpath.normpath(posixpath.join("/", current, ins.path))
        path = "/" + path.lstrip("/")
        comment = f"WORKDIR {path}"
        key = cache_key(st.state.id, comment)
        if self._hit(st, key):
            return
        cid = self._running()
        layer = self.ws.mkdir(st.state, path)
        self._commit(st, key, f"/bin/sh -c #(nop) {comment}",  # one space here, as Docker
                     lambda c, d: c.__setitem__("WorkingDir", path), layer)
        self._done(cid, st)

    def _run(self, st: _Stage, ins: Run) -> None:
        config = st.state.config
        shell = tuple(config.get("Shell") or DEFAULT_SHELL)
        argv = [*shell, ins.script()] if ins.shell_form else list(ins.command)
        if not argv:
            raise InvalidArgument("RUN requires at least one argument")
        run_env = st.scope.run_env()
        # Proxy build args reach RUN but, unless declared, stay out of history and the key
        # (Docker's rule: a proxy setting must not bust the cache or leak into the image).
        recorded = sorted(f"{k}={v}" for k, v in run_env.items()
                          if k not in PROXY_ARGS or k in st.scope.args)
        created_by = " ".join(argv)
        if recorded:  # Docker records the build args a RUN saw, so they are part of its key
            created_by = f"|{len(recorded)} {' '.join(recorded)} {created_by}"
        network = ins.network or self.request.network or "default"
        key = cache_key(st.state.id, "RUN", [argv, recorded, network])
        if self._hit(st, key):
            return
        cid = self._running()
        env = [*_env_list(config), *(f"{k}={v}" for k, v in sorted(run_env.items()))]
        result = self.ws.run(st.state, argv, container_id=cid, env=env,
                             user=str(config.get("User") or ""),
                             workdir=str(config.get("WorkingDir") or "/"), network=network,
                             out=self.out)
        if result.exit_code != 0:
            raise StepError(f"The command '{' '.join(argv)}' returned a non-zero code: "
                            f"{result.exit_code} (Dockerfile line {ins.line})")
        layer = LayerResult(result.layer, result.diff_id) if result.layer is not None else None
        self._commit(st, key, created_by, lambda c, d: None, layer)
        self._done(cid, st)

    def _copy(self, st: _Stage, ins: Copy | Add) -> None:
        what = ins.keyword
        workdir = str(st.state.config.get("WorkingDir") or "/")
        files = ins.file_sources()
        urls = [f for f in files if is_url(f)] if isinstance(ins, Add) else []
        if urls and (len(urls) != len(files) or ins.heredocs):
            raise InvalidArgument(f"{what} failed: mix of URLs and other sources in one "
                                  "instruction is not supported")
        if urls and self.fetch is None:
            raise InvalidArgument(f"{what} failed: downloading a URL is not possible here")
        dest = ins.dest
        dest_is_dir = dest.endswith("/") or dest.endswith("/.") or len(ins.sources) > 1 or \
            dest in (".", "")
        if not dest.startswith("/"):
            dest = posixpath.join(workdir, dest)
        dest = "/" + posixpath.normpath(dest).lstrip("/")
        chmod = int(ins.chmod, 8) if ins.chmod else None
        from_ = ins.from_ if isinstance(ins, Copy) else ""
        extract = isinstance(ins, Add)
        if from_ and ins.heredocs:
            raise InvalidArgument(f"{what} --from cannot take a here-document source")
        if from_:
            source_state = self._from_state(st, from_)
            key = cache_key(st.state.id, f"{what} --from", [
                source_state.id, list(files), dest, dest_is_dir, ins.chown, ins.chmod])
            if self._hit(st, key):
                return
            with self.ws.stage_root(source_state) as root:
                sources = find_sources(root, files, f"stage or image {from_!r}")
                layer = self._copy_in(st, sources, dest, dest_is_dir, ins, chmod, False, workdir)
            created_by = f"/bin/sh -c #(nop) COPY --from={from_} {' '.join(files)} in " \
                f"{ins.dest} "
        else:
            if urls:
                assert self.fetch is not None
                inline = _InlineSources({}, urls, self.fetch)
                extract = False  # Docker never unpacks a downloaded archive
            else:
                inline = _InlineSources(ins.inline_sources())
            sources = [*self.context.sources([] if urls else files), *inline.sources]
            digest = sources_digest(sources)
            kind = "dir" if len(sources) == 1 and sources[0].is_dir else (
                "file" if len(sources) == 1 else "multi")
            key = cache_key(st.state.id, what, [digest, [s.name for s in sources], dest,
                                                dest_is_dir, ins.chown, ins.chmod])
            if self._hit(st, key):
                inline.close()
                return
            try:
                layer = self._copy_in(st, sources, dest, dest_is_dir, ins, chmod, extract,
                                      workdir)
            finally:
                inline.close()
            created_by = f"/bin/sh -c #(nop) {what} {kind}:{digest[7:]} in {ins.dest} "
        self._commit(st, key, created_by, lambda c, d: None, layer)
        # Docker copies without an intermediate container, so it announces none
        self.out(f" ---> {st.state.short_id}\n")

    def _copy_in(self, st: _Stage, sources: list[Source], dest: str, dest_is_dir: bool,
                 ins: Copy | Add, chmod: int | None, extract: bool,
                 workdir: str) -> LayerResult | None:
        if len(sources) > 1 and not dest_is_dir:
            raise InvalidArgument(f"When using {ins.keyword} with more than one source file, "
                                  "the destination must be a directory and end with a /")
        plan = CopyPlan(tuple(sources), dest, dest_is_dir, ins.chown, chmod, extract)
        return self.ws.copy(st.state, plan, workdir=workdir)

    def _from_state(self, st: _Stage, ref: str) -> State:
        assert self.df is not None
        earlier = self.df.stage_ref(ref, st.index)
        if earlier is not None:
            if earlier.index not in self.results:
                raise InvalidArgument(f"stage {ref!r} was not built")
            return self.results[earlier.index]
        return self.ws.base(ref, pull=False, out=self.out)


class _InlineSources:
    """Here-document sources of COPY/ADD (``COPY <<EOF /x``) as files of a private temporary
    directory, so they are copied like any other file (mode 0644, as BuildKit makes them)."""

    def __init__(self, bodies: Mapping[str, str], urls: Sequence[str] = (),
                 fetch: Fetch | None = None) -> None:
        self.dir: str | None = None
        self.sources: list[Source] = []
        if not bodies and not urls:
            return
        self.dir = tempfile.mkdtemp(prefix="skiff-heredoc-")
        name = ""
        try:
            for name, body in bodies.items():
                path = os.path.join(self.dir, f"{len(self.sources)}")
                with open(path, "w", encoding="utf-8") as f:
                    f.write(body)
                os.chmod(path, 0o644)
                self.sources.append(Source(path, name, False))
            for url in urls:  # ADD <url>: downloaded, named after the URL's last path part
                assert fetch is not None
                name = posixpath.basename(urllib.parse.urlsplit(url).path.rstrip("/"))
                if not name or name in (".", ".."):
                    raise InvalidArgument(f"ADD {url}: cannot tell a file name from the URL")
                path = os.path.join(self.dir, f"{len(self.sources)}")
                fetch(url, path)
                os.chmod(path, 0o600)  # as Docker: a downloaded file is 0600
                self.sources.append(Source(path, name, False))
        except OSError as exc:
            self.close()
            raise os_error("write COPY/ADD source", name, exc) from exc
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


# --- config helpers ---------------------------------------------------------------------------


def _env_list(config: Mapping[str, Any]) -> list[str]:
    env = config.get("Env")
    return [str(e) for e in env] if isinstance(env, list) else []


def _set_env(config: dict[str, Any], pairs: Sequence[tuple[str, str]]) -> None:
    """ENV replaces a variable in place (keeping its position) or appends it, as Docker."""
    env = _env_list(config)
    for key, value in pairs:
        item = f"{key}={value}"
        for i, existing in enumerate(env):
            if existing.partition("=")[0] == key:
                env[i] = item
                break
        else:
            env.append(item)
    config["Env"] = env


def _dict(config: dict[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key)
    if not isinstance(value, dict):
        value = config[key] = {}
    return value

