"""The same bundle under runc and under skiff-runtime gives the same observable results."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tests.integration.support import RuntimeDriver, new_id, read_config, write_config

Bundle = Callable[..., Path]

PROBE_SCRIPT = "; ".join([
    "echo pid=$$", "hostname", "id", "pwd", "ulimit -n",
    "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)|^NoNewPrivs|^Seccomp:' /proc/self/status",
    "ls /dev | sort | tr '\\n' ' '; echo",
    "ls -l /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty | "
    "awk '{print $1, $5, $6, $NF}'",
    "readlink /dev/fd /dev/stdin /dev/ptmx",
    "awk '{print $2, $3}' /proc/mounts | sort",
    "wc -c < /proc/timer_list",
    "touch /proc/sys/x 2>&1 | head -1 | sed 's/.*: //'",
    "cat /proc/sys/kernel/domainname",
])


def _normalise(text: str) -> str:
    # Mount-type details that legitimately differ between implementations are kept; only the
    # runtime's own name (runc puts its default hostname in) is not in the script.
    return re.sub(r"[ \t]+", " ", text).strip()


def test_same_bundle_same_results(runtime: RuntimeDriver, runc: RuntimeDriver,
                                  make_bundle: Bundle) -> None:
    b = make_bundle(["sh", "-c", PROBE_SCRIPT], hostname="same-host")
    cfg = read_config(b)
    cfg["process"]["capabilities"]["ambient"] = []
    cfg["process"]["cwd"] = "/tmp"
    write_config(b, cfg)
    ours = runtime("run", "--bundle", str(b), new_id("cmp"))
    theirs = runc("run", "--bundle", str(b), new_id("cmp"))
    assert _normalise(ours.out).splitlines() == _normalise(theirs.out).splitlines()


def test_same_exit_codes(runtime: RuntimeDriver, runc: RuntimeDriver, make_bundle: Bundle) -> None:
    for args in (["sh", "-c", "exit 5"], ["sh", "-c", "kill -TERM $$"], ["true"]):
        b = make_bundle(args)
        cfg = read_config(b)
        cfg["process"]["capabilities"]["ambient"] = []
        write_config(b, cfg)
        ours = runtime("run", "--bundle", str(b), new_id("rc"), check=False)
        theirs = runc("run", "--bundle", str(b), new_id("rc"), check=False)
        assert ours.code == theirs.code, args


def test_runc_can_run_the_spec_skiff_runtime_writes(runtime: RuntimeDriver, runc: RuntimeDriver,
                                                    make_bundle: Bundle, tmp_path: Path) -> None:
    b = make_bundle(["true"])
    (b / "config.json").unlink()
    runtime("spec", "--bundle", str(b))
    cfg = read_config(b)
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["sh", "-c", "echo hi"]
    write_config(b, cfg)
    assert runc("run", "--bundle", str(b), new_id("spec")).out == "hi\n"
    assert runtime("run", "--bundle", str(b), new_id("spec")).out == "hi\n"
