"""The build orchestration without a daemon: metadata steps on ``FROM scratch`` (no filesystem
work is needed for them), the cache keys and their invalidation, build-arg scoping, errors
located at their line; and the context: confined lookups, globs, digests, .dockerignore."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from skiff.core.reference import Reference, parse_reference
from skiff.errors import InvalidArgument, NotFound, SkiffError
from skiff.services.builder import load_dockerignore
from skiff.services.builder.build import (
    DEFAULT_PATH,
    Build,
    BuildRequest,
    CopyPlan,
    LayerResult,
    Output,
    RunResult,
    State,
    scratch_state,
)
from skiff.services.builder.cache import CacheEntry, NoCache, cache_key
from skiff.services.builder.context import (
    BuildContext,
    prune_excluded,
    resolve_in_root,
    sources_digest,
)
from skiff.services.builder.lines import DockerfileError


class MemoryCache:
    def __init__(self) -> None:
        self.entries: dict[str, CacheEntry] = {}

    def get(self, key: str) -> CacheEntry | None:
        return self.entries.get(key)

    def put(self, key: str, entry: CacheEntry) -> None:
        self.entries[key] = entry


class ScratchOnly:
    """A workspace for builds FROM scratch with metadata instructions only: filesystem steps
    are a test failure; ``store`` keeps what it was given."""

    def __init__(self) -> None:
        self.stored: list[tuple[State, tuple[Reference, ...]]] = []

    def scratch(self) -> State:
        return scratch_state("amd64")

    def base(self, name: str, *, pull: bool, out: Output) -> State:
        raise NotFound(f"No such image: {name}")

    def run(self, parent: State, argv: Sequence[str], *, container_id: str, env: Sequence[str],
            user: str, workdir: str, network: str, out: Output) -> RunResult:
        raise AssertionError("RUN reached the workspace")

    def copy(self, parent: State, plan: CopyPlan, *, workdir: str) -> LayerResult | None:
        raise AssertionError("COPY reached the workspace")

    def mkdir(self, parent: State, path: str) -> LayerResult | None:
        raise AssertionError("WORKDIR reached the workspace")

    @contextlib.contextmanager
    def stage_root(self, state: State) -> Iterator[str]:
        raise AssertionError("COPY --from reached the workspace")
        yield ""

    def store(self, state: State, names: Sequence[Reference]) -> str:
        self.stored.append((state, tuple(names)))
        return state.id


def build(text: str, cache: Any = None, tmp: Path | None = None,
          **request: Any) -> tuple[str, State, list[str]]:
    ws = ScratchOnly()
    lines: list[str] = []
    context = BuildContext(str(tmp) if tmp is not None else "/nonexistent")
    image_id = Build(ws, cache if cache is not None else MemoryCache(), context,
                     lines.append).run(BuildRequest(text, **request))
    return image_id, ws.stored[-1][0], lines


def step_results(lines: list[str]) -> list[str]:
    """For each step of a stage but its FROM: "cache" or "built" (global ARGs, before the
    first FROM, are only announced)."""
    out = []
    in_stage = False
    for i, line in enumerate(lines):
        if line.startswith("Step ") and " : FROM " in line:
            in_stage = True
        elif line.startswith("Step ") and in_stage:
            out.append("cache" if lines[i + 1] == " ---> Using cache\n" else "built")
    return out


META = """\
ARG BASE_LABEL=base
FROM scratch
ARG BASE_LABEL
ARG V=1
ENV A=a-$V B="x y"
ENV A=again PATH=/bin
LABEL one=$A two=${BASE_LABEL} three=${NOPE:-dflt}
EXPOSE 80 53/udp
VOLUME /data
USER 1000:1000
WORKDIR_PLACEHOLDER
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s CMD true
SHELL ["/bin/bash", "-c"]
CMD echo $A
ENTRYPOINT ["/entry"]
ONBUILD RUN echo child
MAINTAINER someone
""".replace("WORKDIR_PLACEHOLDER\n", "")


def test_metadata_instructions_shape_the_config() -> None:
    image_id, state, lines = build(META, build_args={"V": "2"}, tags=(parse_reference("m:1"),))
    assert image_id == state.id == "sha256:" + hashlib.sha256(state.raw.encode()).hexdigest()
    cfg = state.config
    # ENV replaced A in place, PATH (the scratch default) in place too
    assert cfg["Env"] == ["PATH=/bin", "A=again", "B=x y"]
    assert cfg["Labels"] == {"one": "again", "two": "base", "three": "dflt"}
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert cfg["Volumes"] == {"/data": {}}
    assert cfg["User"] == "1000:1000"
    assert cfg["StopSignal"] == "SIGINT"
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000}
    assert cfg["Shell"] == ["/bin/bash", "-c"]
    assert cfg["Cmd"] == ["/bin/bash", "-c", "echo $A"]  # shell form uses SHELL
    assert cfg["Entrypoint"] == ["/entry"]  # CMD set in this stage survives ENTRYPOINT
    assert cfg["OnBuild"] == ["RUN echo child"]
    assert state.doc["author"] == "someone"
    assert state.layers == ()
    # one history entry per instruction of the stage, all empty layers, Docker's wording
    history = state.doc["history"]
    assert len(history) == META.count("\n") - 2
    assert all(h["empty_layer"] for h in history)
    assert history[2]["created_by"] == "/bin/sh -c #(nop)  ENV A=a-2 B=x y"
    assert "Step 1/17 : ARG BASE_LABEL=base\n" in lines
    assert "Step 2/17 : FROM scratch\n" in lines


def test_entrypoint_clears_an_inherited_cmd() -> None:
    _, state, _ = build("FROM scratch AS a\nCMD [\"x\"]\nFROM a\nENTRYPOINT [\"/e\"]\n")
    assert state.config["Entrypoint"] == ["/e"]
    assert state.config["Cmd"] is None


def test_rebuild_hits_the_cache_and_gives_the_same_id() -> None:
    cache = MemoryCache()
    first, _, lines1 = build(META, cache)
    again, _, lines2 = build(META, cache)
    assert first == again
    assert set(step_results(lines1)) == {"built"}
    assert set(step_results(lines2)) == {"cache"}
    # --no-cache finds nothing (and builds a new image: new timestamps)
    fresh, _, lines3 = build(META, NoCache(cache))
    assert set(step_results(lines3)) == {"built"} and fresh != first


def test_a_change_invalidates_exactly_what_follows() -> None:
    cache = MemoryCache()
    build(META, cache)
    changed = META.replace("EXPOSE 80 53/udp", "EXPOSE 81 53/udp")
    _, _, lines = build(changed, cache)
    results = step_results(lines)
    index = [line for line in lines if line.startswith("Step ")][2:].index(
        "Step 8/17 : EXPOSE 81 53/udp\n")
    assert results[:index] == ["cache"] * index
    assert results[index:] == ["built"] * (len(results) - index)


def test_build_args_change_only_the_steps_that_see_them() -> None:
    cache = MemoryCache()
    text = "FROM scratch\nLABEL a=1\nARG V\nLABEL v=$V\nLABEL b=2\n"
    build(text, cache, build_args={"V": "1"})
    _, state, lines = build(text, cache, build_args={"V": "2"})
    assert step_results(lines) == ["cache", "cache", "built", "built"]
    assert state.config["Labels"] == {"a": "1", "v": "2", "b": "2"}


def test_global_args_reach_from_only_and_unused_args_are_reported() -> None:
    text = "ARG G=glob\nFROM scratch\nLABEL g=${G:-unset}\n"
    _, state, lines = build(text, build_args={"NEVER": "x"})
    assert state.config["Labels"] == {"g": "unset"}
    assert "[Warning] One or more build-args [NEVER] were not consumed\n" in lines


def test_target_and_labels_of_the_request() -> None:
    text = "FROM scratch AS one\nLABEL stage=one\nFROM scratch AS two\nLABEL stage=two\n"
    _, state, lines = build(text, target="one", labels={"req": "yes"})
    assert state.config["Labels"] == {"stage": "one", "req": "yes"}
    assert [line for line in lines if line.startswith("Step")] == [
        "Step 1/3 : FROM scratch AS one\n", "Step 2/3 : LABEL stage=one\n",
        'Step 3/3 : LABEL "req"="yes"\n']
    with pytest.raises(NotFound, match='target stage "nope" could not be found'):
        build(text, target="nope")


def test_errors_name_the_line() -> None:
    with pytest.raises(DockerfileError, match="line 3: unknown instruction: NOPE"):
        build("FROM scratch\nLABEL a=b\nNOPE x\n")
    with pytest.raises(DockerfileError, match="line 2: invalid proto: xyz"):
        build("FROM scratch\nEXPOSE 1/xyz\n")
    with pytest.raises(NotFound, match=r"No such image: missing.*Dockerfile line 1"):
        build("FROM missing\n")


def test_copy_sources_are_looked_up_before_any_filesystem_work(tmp_path: Path) -> None:
    (tmp_path / "present").write_text("x")
    with pytest.raises(NotFound, match=r"COPY failed: file not found in build context.*"
                                       r"Dockerfile line 2"):
        build("FROM scratch\nCOPY absent /x\n", tmp=tmp_path)
    with pytest.raises(InvalidArgument, match="forbidden path outside the build context"):
        build("FROM scratch\nCOPY ../present /x\n", tmp=tmp_path)


def test_state_round_trips_through_a_cache_entry() -> None:
    state = scratch_state("arm64")
    assert state.config["Env"] == [DEFAULT_PATH]
    entry = state.entry()
    again = State.parse(entry.config, entry.layers, entry.media_type)
    assert again.id == state.id and again.doc == state.doc


def test_cache_key_depends_on_every_part() -> None:
    base = cache_key("sha256:a", "RUN", [["sh"], ["V=1"]])
    assert base == cache_key("sha256:a", "RUN", [["sh"], ["V=1"]])
    assert len({base, cache_key("sha256:b", "RUN", [["sh"], ["V=1"]]),
                cache_key("sha256:a", "COPY", [["sh"], ["V=1"]]),
                cache_key("sha256:a", "RUN", [["sh"], ["V=2"]])}) == 4


# --- the context ----------------------------------------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    for rel, data in {"a.txt": "a", "b.txt": "b", "sub/c.txt": "c", "sub/deep/d.txt": "d",
                      "logs/x.log": "x", "logs/keep.log": "k"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(data)
    return root


def test_globs_match_one_component_at_a_time(ctx: Path) -> None:
    context = BuildContext(str(ctx))
    assert [s.name for s in context.sources(["*.txt"])] == ["a.txt", "b.txt"]
    assert [s.name for s in context.sources(["sub/*"])] == ["c.txt", "deep"]
    assert [s.is_dir for s in context.sources(["sub/*"])] == [False, True]
    with pytest.raises(NotFound, match="no source files were specified"):
        context.sources(["*.none"])


def test_symlinks_cannot_leave_the_root(ctx: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("host secret")
    os.symlink("/", ctx / "abs")
    os.symlink("../../outside.txt", ctx / "rel")
    os.symlink("sub/c.txt", ctx / "inside")
    # "/" is the context itself, and ".." stops at it: neither reaches the host's files
    assert resolve_in_root(str(ctx), "abs") == str(ctx)
    with pytest.raises(NotFound):
        resolve_in_root(str(ctx), "rel")
    assert resolve_in_root(str(ctx), "inside") == str(ctx / "sub" / "c.txt")
    assert BuildContext(str(ctx)).sources(["inside"])[0].path == str(ctx / "sub" / "c.txt")


def test_digest_follows_content_and_mode_not_times(ctx: Path) -> None:
    context = BuildContext(str(ctx))
    first = sources_digest(context.sources(["sub"]))
    os.utime(ctx / "sub" / "c.txt", (1, 1))
    assert sources_digest(context.sources(["sub"])) == first
    (ctx / "sub" / "c.txt").write_text("C")
    second = sources_digest(context.sources(["sub"]))
    assert second != first
    os.chmod(ctx / "sub" / "c.txt", 0o600)
    assert sources_digest(context.sources(["sub"])) != second


def test_dockerignore_prunes_the_context(ctx: Path) -> None:
    prune_excluded(str(ctx), load_dockerignore("*.txt\nlogs\n!logs/keep.log\nsub/deep\n"))
    left = sorted(str(p.relative_to(ctx)) for p in ctx.rglob("*"))
    assert left == ["logs", "logs/keep.log", "sub", "sub/c.txt"]


def test_dockerfile_is_read_from_the_context(ctx: Path) -> None:
    (ctx / "build").mkdir()
    (ctx / "build" / "Dockerfile.dev").write_text("FROM scratch\n")
    context = BuildContext(str(ctx))
    assert context.read_text("build/Dockerfile.dev", "Dockerfile") == "FROM scratch\n"
    with pytest.raises(NotFound, match="Cannot locate specified Dockerfile: nope"):
        context.read_text("nope", "Dockerfile")


def test_history_text_matches_docker_for_cmd() -> None:
    _, state, _ = build('FROM scratch\nCMD ["a", "b c"]\n')
    assert json.dumps(state.doc["history"][-1]["created_by"]) == json.dumps(
        '/bin/sh -c #(nop)  CMD ["a" "b c"]')


# --- the daemon's cache and query ------------------------------------------------------------


def test_sqlite_cache_keeps_layers_until_pruned(tmp_path: Path) -> None:
    from skiff.core.content import Descriptor
    from skiff.daemon.builder.cache import SqliteBuildCache
    from skiff.plugins.content.local import LocalContentStore
    from skiff.plugins.metadata.sqlite import SqliteMetadata

    content = LocalContentStore(str(tmp_path / "content"))
    metadata = SqliteMetadata(str(tmp_path / "metadata.db"))
    cache = SqliteBuildCache(str(tmp_path / "builder"), content, metadata)
    try:
        blob = content.put(b"a layer, as far as the cache knows")
        layer = Descriptor("application/vnd.oci.image.layer.v1.tar", blob.digest, blob.size)
        entry = CacheEntry('{"config":{}}', (layer,), "application/vnd.oci.image.manifest.v1+json")
        assert cache.get("k1") is None
        cache.put("k1", entry)
        cache.put("k2", entry)  # the same layer again: one lease is enough
        assert cache.get("k1") == entry
        # no image names the blob, yet garbage collection keeps it: the cache leases it
        assert metadata.gc(content).removed == []
        assert content.exists(blob.digest)
        result = cache.prune()
        assert sorted(result["CachesDeleted"]) == ["k1", "k2"]
        assert result["SpaceReclaimed"] == blob.size
        assert not content.exists(blob.digest)
        assert cache.get("k1") is None
        # an entry whose layer vanished is a miss, not an error
        cache.put("k3", entry)
        assert cache.get("k3") is None
    finally:
        cache.close()
        metadata.close()


def _request(query: str) -> Any:
    from aiohttp.test_utils import make_mocked_request

    return make_mocked_request("POST", f"/build?{query}")


def test_build_query_is_parsed_like_dockerd() -> None:
    from urllib.parse import quote

    from skiff.daemon.routers.build import parse_params

    params = parse_params(_request(
        "t=a:1&t=b&dockerfile=sub/Dockerfile.dev&target=dev&nocache=1&rm=0&forcerm=1"
        f"&buildargs={quote(json.dumps({'A': '1', 'B': None}))}"
        f"&labels={quote(json.dumps({'l': 'v'}))}&networkmode=host"))
    assert [t.familiar() for t in params.tags] == ["a:1", "b:latest"]
    assert params.dockerfile == "sub/Dockerfile.dev" and params.target == "dev"
    assert params.no_cache and params.remove and params.network == "host"
    assert params.build_args == {"A": "1", "B": None} and params.labels == {"l": "v"}
    defaults = parse_params(_request(""))
    assert defaults.dockerfile == "Dockerfile" and defaults.remove and not defaults.no_cache
    for bad, message in (("buildargs=%7Bx", "invalid buildargs query: not JSON"),
                         ("labels=%7B%22a%22%3A1%7D", "the value of 'a' is not a string"),
                         ("t=UPPER:1", "invalid tag 'UPPER:1'"),
                         ("remote=https%3A%2F%2Fexample.com%2Fx.git", "remote build contexts"),
                         ("platform=windows%2Famd64", "linux images only")):
        with pytest.raises(InvalidArgument, match=message):
            parse_params(_request(bad))


def test_recover_removes_what_a_dead_daemon_left(tmp_path: Path) -> None:
    from skiff.daemon.builder.workspace import recover
    from skiff.plugins.snapshots.copy import CopySnapshotter

    snapshotter = CopySnapshotter(str(tmp_path / "snapshots"))
    try:
        snapshotter.prepare("layer", None)
        snapshotter.commit("sha256:committed", "layer")
        snapshotter.prepare("build-step1", "sha256:committed")
        snapshotter.view("build-view-1", "sha256:committed")
        snapshotter.prepare("container-root", "sha256:committed")
        work = tmp_path / "exec" / "build"
        (work / "abc123" / "rootfs").mkdir(parents=True)
        assert sorted(recover(snapshotter, str(work))) == ["build-step1", "build-view-1"]
        assert sorted(i.key for i in snapshotter.walk()) == ["container-root", "sha256:committed"]
        assert not work.exists()
    finally:
        close = getattr(snapshotter, "close", None)
        if close is not None:
            close()


class RecordingRuns(ScratchOnly):
    """RUN steps succeed without changing anything; what they were given is kept."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[tuple[list[str], list[str], str, str]] = []

    def run(self, parent: State, argv: Sequence[str], *, container_id: str, env: Sequence[str],
            user: str, workdir: str, network: str, out: Output) -> RunResult:
        self.runs.append((list(argv), list(env), user, workdir))
        out("step output\n")
        return RunResult(0, None)


def test_run_sees_env_args_and_proxies_but_history_only_declared_args() -> None:
    text = "FROM scratch\nENV E=1\nUSER 5\nARG V=dflt\nRUN echo $V\n"
    ws = RecordingRuns()
    cache = MemoryCache()
    lines: list[str] = []
    Build(ws, cache, BuildContext("/nonexistent"), lines.append).run(
        BuildRequest(text, build_args={"V": "given", "HTTP_PROXY": "http://127.0.0.1:3128"}))
    argv, env, user, workdir = ws.runs[0]
    assert argv == ["/bin/sh", "-c", "echo $V"] and user == "5" and workdir == "/"
    assert env == [DEFAULT_PATH, "E=1", "HTTP_PROXY=http://127.0.0.1:3128", "V=given"]
    state = ws.stored[-1][0]
    assert state.doc["history"][-1] == {"created": state.doc["history"][-1]["created"],
                                        "created_by": "|1 V=given /bin/sh -c echo $V",
                                        "empty_layer": True}
    assert "step output\n" in lines
    # another proxy does not bust the cache; another value of a declared arg does
    again = RecordingRuns()
    Build(again, cache, BuildContext("/nonexistent"), lines.append).run(
        BuildRequest(text, build_args={"V": "given", "HTTP_PROXY": "http://127.0.0.1:9"}))
    assert again.runs == []
    Build(again, cache, BuildContext("/nonexistent"), lines.append).run(
        BuildRequest(text, build_args={"V": "other"}))
    assert [r[0] for r in again.runs] == [["/bin/sh", "-c", "echo $V"]]


def test_a_failing_run_names_its_line() -> None:
    class Failing(ScratchOnly):
        def run(self, parent: State, argv: Sequence[str], *, container_id: str,
                env: Sequence[str], user: str, workdir: str, network: str,
                out: Output) -> RunResult:
            return RunResult(3, None)

    with pytest.raises(SkiffError, match=r"The command '/bin/sh -c exit 3' "
                       r"returned a non-zero code: 3 \(Dockerfile line 3\)"):
        Build(Failing(), MemoryCache(), BuildContext("/nonexistent"), lambda _t: None).run(
            BuildRequest("FROM scratch\n\nRUN exit 3\n"))


class NoChanges(RecordingRuns):
    """Filesystem steps that change nothing; ``base`` is an image without Env."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[CopyPlan] = []

    def base(self, name: str, *, pull: bool, out: Output) -> State:
        return State.of({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": []}}, [])

    def copy(self, parent: State, plan: CopyPlan, *, workdir: str) -> LayerResult | None:
        self.copies.append(plan)
        return None

    def mkdir(self, parent: State, path: str) -> LayerResult | None:
        return None


def test_history_and_progress_read_like_dockers(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    ws = NoChanges()
    lines: list[str] = []
    Build(ws, MemoryCache(), BuildContext(str(tmp_path)), lines.append).run(
        BuildRequest("FROM base\nWORKDIR /w\nCOPY f.txt .\n"))
    state = ws.stored[-1][0]
    assert state.config["Env"] == [DEFAULT_PATH]  # a base without PATH gets Docker's default
    created = [h["created_by"] for h in state.doc["history"]]
    assert created[0] == "/bin/sh -c #(nop) WORKDIR /w"
    assert re.fullmatch(r"/bin/sh -c #\(nop\) COPY file:[0-9a-f]{64} in \. ", created[1])
    assert ws.copies[0].dest == "/w" and ws.copies[0].dest_is_dir
    # COPY runs no container, so none is announced (WORKDIR's is)
    copy_at = lines.index("Step 3/3 : COPY f.txt .\n")
    assert not any("Running in" in line for line in lines[copy_at:])
    assert any("Running in" in line for line in lines[:copy_at])
