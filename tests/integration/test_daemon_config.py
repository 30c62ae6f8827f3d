"""skiffd's flags and daemon.json end to end: TCP with TLS (docker CLI, docker-py), runtimes per
container, ``/events`` (streaming, since/until), ``/system/df``, ``/info``, live-restore off.

One daemon for the module: a unix socket (the test driver's) plus TCP on 127.0.0.1 with
--tlsverify; TLS files, runtimes and registry settings come from a daemon.json the test writes.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from skiff.devtools.daemon import UnixHTTP
from tests.integration.daemon_support import DOCKER, IMAGE, Skiffd, private_skiffd

RUNC = shutil.which("runc")


# --- certificates -----------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
          usage: x509.ObjectIdentifier | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(hours=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    if usage is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_certs(dest: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, dockerd-style:
    ``ca.pem``, ``server-cert.pem``/``server-key.pem``, ``cert.pem``/``key.pem``."""
    dest.mkdir(parents=True)
    ca_key, srv_key, cli_key = _key(), _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "skiff test CA")])
    ca = _cert("skiff test CA", ca_key, ca_name, ca_key, ca=True)
    srv = _cert("127.0.0.1", srv_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    cli = _cert("client", cli_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    out = {"ca": dest / "ca.pem", "server-cert": dest / "server-cert.pem",
           "server-key": dest / "server-key.pem", "cert": dest / "cert.pem",
           "key": dest / "key.pem"}
    for name, cert in (("ca", ca), ("server-cert", srv), ("cert", cli)):
        out[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(out["server-key"], srv_key)
    _write_key(out["key"], cli_key)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- the module's daemon ----------------------------------------------------------------------


class Env:
    def __init__(self, d: Skiffd, certs: dict[str, Path], port: int) -> None:
        self.d = d
        self.certs = certs
        self.port = port

    def tls_docker(self, *args: str, check: bool = True, cert: bool = True,
                   input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """The docker CLI over TCP with --tlsverify (and our client certificate)."""
        assert DOCKER is not None
        tls = ["--tlsverify", "--tlscacert", str(self.certs["ca"])]
        if cert:
            tls += ["--tlscert", str(self.certs["cert"]), "--tlskey", str(self.certs["key"])]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_CONFIG"] = str(self.d.base / "docker-config")
        res = subprocess.run([DOCKER, *tls, "-H", f"tcp://127.0.0.1:{self.port}", *args],
                             input=input, capture_output=True, env=env, timeout=60,
                             check=False)
        if check:
            assert res.returncode == 0, (args, res.stdout, res.stderr)
        return res


@pytest.fixture(scope="module")
def env(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("skiffd-config")
    certs = make_certs(base / "certs")
    port = free_port()
    config = base / "daemon.json"
    runtimes = {"alt": {"path": sys.executable, "runtimeArgs": ["-m", "skiff.runtime"]}}
    config.write_text(json.dumps({
        "tlsverify": True, "tlscacert": str(certs["ca"]),
        "tlscert": str(certs["server-cert"]), "tlskey": str(certs["server-key"]),
        "insecure-registries": ["127.0.0.1:5999", "10.66.0.0/16"],
        "registry-mirrors": ["https://mirror.invalid"], "runtimes": runtimes,
        "log-level": "debug"}))
    with private_skiffd(busybox_rootfs, "--config-file", str(config), "-H",
                        f"tcp://127.0.0.1:{port}", check_parent_cgroup=False) as d:
        yield Env(d, certs, port)


# --- TCP and TLS ------------------------------------------------------------------------------


def test_docker_cli_over_tls(env: Env) -> None:
    version = json.loads(env.tls_docker("version", "--format", "{{json .Server}}").stdout)
    assert version["ApiVersion"] == "1.44"
    # a container with attached output: the hijacked stream works over TLS too
    out = env.tls_docker("run", "--rm", IMAGE, "echo", "over tls").stdout
    assert out == b"over tls\n"
    # stdin's end reaches the container (TLS close_notify as a half-close) and the output
    # still comes back after it
    out = env.tls_docker("run", "--rm", "-i", IMAGE, "sh", "-c", "cat; echo done",
                         input=b"in\n").stdout
    assert out == b"in\ndone\n"
    # more than any socket buffer: flow control through the TLS endpoint loses nothing
    out = env.tls_docker("run", "--rm", IMAGE, "sh", "-c",
                         "head -c 4000000 /dev/zero | tr '\\0' a").stdout
    assert out == b"a" * 4_000_000


def test_tls_refuses_clients_without_a_certificate_or_without_tls(env: Env) -> None:
    res = env.tls_docker("version", check=False, cert=False)
    assert res.returncode != 0 and b"Server:" not in res.stdout
    # a plain HTTP request on the TLS port gets no API answer
    with socket.create_connection(("127.0.0.1", env.port), timeout=10) as s:
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            reply = s.recv(4096)
        except ConnectionResetError:
            reply = b""
        assert b"OK" not in reply and b"Api-Version" not in reply
    # TLS with the right CA but no client certificate: refused at the handshake
    ctx = ssl.create_default_context(cafile=str(env.certs["ca"]))
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)), \
            socket.create_connection(("127.0.0.1", env.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        if not tls.recv(4096):
            raise ConnectionResetError("closed")


def test_docker_py_over_tls(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    docker = pytest.importorskip("docker")
    # requests lets these override a session's own CA file: ours must be the one used
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)
    tls = docker.tls.TLSConfig(client_cert=(str(env.certs["cert"]), str(env.certs["key"])),
                               ca_cert=str(env.certs["ca"]), verify=True)
    client = docker.DockerClient(base_url=f"https://127.0.0.1:{env.port}", tls=tls)
    try:
        assert client.ping() is True
        assert client.version()["ApiVersion"] == "1.44"
        assert client.containers.run(IMAGE, ["echo", "py"], remove=True) == b"py\n"
    finally:
        client.close()


def _start_daemon(tmp: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "skiff.daemon.main", "--data-root",
                           str(tmp / "data"), "--exec-root", str(tmp / "run"), *flags],
                          capture_output=True, text=True, timeout=60, check=False)


def test_refusals_happen_before_anything_is_made(tmp_path: Path) -> None:
    port = free_port()
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"hosts": [')
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"bogus": 1}')
    clash = tmp_path / "clash.json"
    clash.write_text(json.dumps({"hosts": ["unix:///tmp/never.sock"]}))
    cases = [
        (["-H", f"tcp://0.0.0.0:{port}"], "without TLS"),
        (["--config-file", str(tmp_path / "missing.json")], "missing.json: no such file"),
        (["--config-file", str(bad_json)], f"{bad_json}: invalid JSON"),
        (["--config-file", str(unknown)], "don't match any configuration option: bogus"),
        (["--config-file", str(clash), "-H", f"unix://{tmp_path}/s.sock"],
         "both as a flag and in the configuration file: hosts"),
    ]
    for flags, needle in cases:
        res = _start_daemon(tmp_path, *flags)
        assert res.returncode != 0 and needle in res.stderr, (flags, res.stderr)
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()
    with socket.socket() as s:  # nothing listens on the refused port
        assert s.connect_ex(("127.0.0.1", port)) != 0


# --- /info and daemon.json --------------------------------------------------------------------


def test_info_shows_the_config_file_settings(env: Env) -> None:
    info = json.loads(env.d.out("info", "--format", "{{json .}}"))
    assert info["Runtimes"]["alt"] == {"path": sys.executable,
                                       "runtimeArgs": ["-m", "skiff.runtime"]}
    assert "skiff-runtime" in info["Runtimes"] and "skiff" in info["Runtimes"]
    assert ("runc" in info["Runtimes"]) == (RUNC is not None)
    assert info["DefaultRuntime"] == "skiff-runtime"
    assert info["LiveRestoreEnabled"] is True and info["Debug"] is False
    rc = info["RegistryConfig"]
    assert "10.66.0.0/16" in rc["InsecureRegistryCIDRs"]
    assert rc["IndexConfigs"]["127.0.0.1:5999"]["Secure"] is False
    assert rc["Mirrors"] == ["https://mirror.invalid"]
    assert info["Driver"] in ("overlayfs", "copy")
    text = env.d.out("info")
    assert "Registry Mirrors:" in text and "https://mirror.invalid" in text
    assert "Live Restore Enabled: true" in text


# --- runtimes ---------------------------------------------------------------------------------


def _runtime_dirs(d: Skiffd, cid: str) -> list[str]:
    root = d.run / "runtime"
    return sorted(p.name for p in root.iterdir() if (p / cid).exists()) if root.exists() else []


@pytest.mark.skipif(RUNC is None, reason="runc is not installed (apt-get install runc)")
def test_runtime_per_container(env: Env) -> None:
    d = env.d
    default = d.run_d(IMAGE, "sleep", "60")
    runc = d.run_d("--runtime", "runc", IMAGE, "sleep", "60")
    try:
        assert _runtime_dirs(d, default) == ["skiff-runtime"]
        assert _runtime_dirs(d, runc) == ["runc"]
        # runc's own state file, and the shim told to run runc
        assert (d.run / "runtime" / "runc" / runc / "state.json").exists()
        cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    for pid in d.shim_pids()]
        runc_shims = [c for c in cmdlines if runc.encode() in c and b"skiff.shim" in c]
        assert runc_shims and b"runc" in runc_shims[0][runc_shims[0].index(b"--runtime") + 1]
        assert d.out("inspect", "-f", "{{.HostConfig.Runtime}}", runc).strip() == "runc"
    finally:
        d.docker("rm", "-f", default, runc)
    assert _runtime_dirs(d, default) == [] and _runtime_dirs(d, runc) == []


def test_unknown_runtime_is_a_400(env: Env) -> None:
    d = env.d
    res = d.docker("create", "--runtime", "nosuch", IMAGE, "true", check=False)
    assert res.returncode != 0
    assert b"unknown or invalid runtime name: nosuch" in res.stderr
    status, body = d.api("POST", "/containers/create",
                         {"Image": IMAGE, "Cmd": ["true"], "HostConfig": {"Runtime": "x1"}})
    assert status == 400 and body["message"] == "unknown or invalid runtime name: x1"
    assert d.out("ps", "-aq") == ""


# --- events -----------------------------------------------------------------------------------


def _events_proc(d: Skiffd, *args: str) -> subprocess.Popen[bytes]:
    assert DOCKER is not None
    env = {**os.environ, "DOCKER_HOST": f"unix://{d.sock}",
           "DOCKER_CONFIG": str(d.base / "docker-config")}
    return subprocess.Popen([DOCKER, "events", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)


def _listeners(d: Skiffd) -> int:
    status, info = d.api("GET", "/info")
    assert status == 200
    n: int = info["NEventsListener"]
    return n


def test_docker_events_streams_while_another_command_runs(env: Env) -> None:
    d = env.d
    before = _listeners(d)
    proc = _events_proc(d, "--filter", "container=evstream", "--format",
                        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{.Actor.ID}}")
    try:
        deadline = time.monotonic() + 10
        while _listeners(d) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _listeners(d) == before + 1
        d.docker("run", "--rm", "--name", "evstream", IMAGE, "true")
        lines: list[str] = []
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        while not any(ln.startswith("container destroy evstream") for ln in lines) \
                and time.monotonic() < deadline:
            line = proc.stdout.readline().decode().strip()
            if line:
                lines.append(line)
                d.seen.add(line.split()[-1])  # its id, for the fixture's cgroup check
        actions = [ln.split()[1] for ln in lines]
        for want in ("create", "start", "die", "destroy"):
            assert want in actions, lines
        assert actions.index("create") < actions.index("start") < actions.index("die") \
            < actions.index("destroy")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _listeners(d) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _listeners(d) == before  # the stream's subscription went with the client


def _raw_events(d: Skiffd, query: str) -> tuple[int, list[dict[str, Any]]]:
    """GET /events with a bounded ``until``: the whole stream, one JSON object a line."""
    conn = UnixHTTP(str(d.sock), 30)
    try:
        conn.request("GET", f"/events?{query}")
        resp = conn.getresponse()
        lines = resp.read().decode().splitlines()
        return resp.status, [json.loads(line) for line in lines if line.strip()]
    finally:
        conn.close()


def test_events_since_until_replay(env: Env) -> None:
    d = env.d
    t0 = time.time()
    d.docker("run", "--rm", "--name", "evreplay", IMAGE, "true")
    time.sleep(0.05)
    t1 = time.time()
    fmt = ["--format", "{{.Action}}", "--filter", "container=evreplay"]
    started = time.monotonic()
    out = d.out("events", "--since", f"{t0:.6f}", "--until", f"{t1:.6f}", *fmt, timeout=30)
    assert time.monotonic() - started < 10  # until in the past: the stream ends at once
    actions = out.split()
    assert actions[0] == "create" and actions[-1] == "destroy" and "start" in actions
    # RFC 3339 and relative forms, sent raw to the API (the CLI converts them itself)
    since = datetime.datetime.fromtimestamp(t0, datetime.UTC).isoformat().replace("+00:00", "Z")
    status, replay = _raw_events(d, f"since={since}&until={t1:.9f}"
                                 '&filters={"container":["evreplay"]}')
    assert status == 200 and [ev["Action"] for ev in replay] == actions
    status, replay = _raw_events(d, 'since=1h&until=0.001s&filters={"container":["evreplay"]}')
    assert status == 200 and [ev["Action"] for ev in replay] == actions
    # nothing before t0
    out = d.out("events", "--since", f"{t0 - 3600:.3f}", "--until", f"{t0 - 1:.3f}", *fmt)
    assert out.strip() == ""
    status, body = d.api("GET", "/events?since=garbage")
    assert status == 400 and "since" in body["message"]
    status, body = d.api("GET", '/events?until=1&filters={"nope":["x"]}')
    assert status == 400 and "nope" in body["message"]


def test_events_until_in_the_future_ends_the_stream_then(env: Env) -> None:
    d = env.d
    started = time.monotonic()
    proc = _events_proc(d, "--until", f"{time.time() + 2:.3f}", "--filter",
                        "container=evfuture", "--format", "{{.Action}}")
    try:
        time.sleep(0.5)
        d.docker("create", "--name", "evfuture", IMAGE, "true")
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        d.docker("rm", "-f", "evfuture", check=False)
    assert 1.5 < time.monotonic() - started < 15
    assert out.decode().split() == ["create"]


# --- /system/df -------------------------------------------------------------------------------


def test_system_df(env: Env) -> None:
    d = env.d
    cid = d.out("create", IMAGE, "sh", "-c", "true").strip()
    d.seen.add(cid)
    try:
        status, df = d.api("GET", "/system/df")
        assert status == 200
        assert df["Volumes"] == [] and df["BuildCache"] == [] and df["LayersSize"] > 0
        image = next(i for i in df["Images"] if f"{IMAGE}" in i["RepoTags"])
        assert image["Size"] > 0 and image["Containers"] == 1
        mine = next(c for c in df["Containers"] if c["Id"] == cid)
        assert mine["SizeRw"] >= 0 and mine["SizeRootFs"] >= image["Size"]
        table = d.out("system", "df")
        rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
        assert rows["Images"][1:3] == [str(len(df["Images"])), "1"]
        assert rows["Containers"][1] == str(len(df["Containers"]))
        verbose = d.out("system", "df", "-v")
        assert "busybox" in verbose and cid[:12] in verbose
    finally:
        d.docker("rm", "-f", cid)


# --- live restore off -------------------------------------------------------------------------


def test_live_restore_false_stops_containers_on_shutdown(busybox_rootfs: Path) -> None:
    with private_skiffd(busybox_rootfs, "--live-restore=false",
                        check_parent_cgroup=False) as d:
        info = json.loads(d.out("info", "--format", "{{json .}}"))
        assert info["LiveRestoreEnabled"] is False
        cid = d.run_d(IMAGE, "sleep", "300")
        assert d.stop() == 0
        assert d.shim_pids() == []  # the container went with the daemon
        d.start()
        state = json.loads(d.out("inspect", "-f", "{{json .State}}", cid))
        assert state["Running"] is False and state["Status"] == "exited"
        d.docker("rm", cid)
