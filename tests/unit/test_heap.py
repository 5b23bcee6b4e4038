"""The operator gives freed heap back to the OS (proxmigrate/heap.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from proxmigrate.heap import _malloc_trim
from tests.support.controlplane import REPO_ROOT

# A burst as the operator sees one: a large answer freed (glibc's trim threshold rises), then
# many mid-sized blocks of which every 64th stays, so the freed ones sit below live ones.
BURST = """
import sys, time
sys.path.insert(0, {operator!r})
from proxmigrate.heap import start_trimming
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
{start}
big = bytearray(4 << 20); del big
keep, junk = [], []
for i in range(100_000):
    (keep if i % 64 == 0 else junk).append(b"x" * 1000 + str(i).encode())
before = rss()
del junk
time.sleep(1.0)
print(before, rss())
"""


def _burst(start: str) -> tuple[float, float]:
    script = BURST.format(operator=str(REPO_ROOT / "operator"), start=start)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    before, after = (float(value) for value in out.stdout.split())
    return before, after


@pytest.mark.skipif(_malloc_trim() is None, reason="glibc's malloc_trim only")
def test_freed_heap_goes_back_to_the_os_while_trimming() -> None:
    before, after = _burst("start_trimming(0.1)")
    assert after < before - 50, (before, after)  # ~100 MiB freed, most of it given back


@pytest.mark.skipif(_malloc_trim() is None, reason="glibc's malloc_trim only")
def test_without_trimming_glibc_keeps_it() -> None:
    """What the trimming is for: glibc alone keeps the freed heap (the old operator)."""
    before, after = _burst("")
    assert after > before - 20, (before, after)


def test_the_operator_trims(monkeypatch: pytest.MonkeyPatch) -> None:
    import kopf

    from proxmigrate import runner

    started: list[bool] = []
    monkeypatch.setattr(runner, "start_trimming", lambda: started.append(True))
    monkeypatch.setattr(runner, "start_http_server", lambda *_, **__: None)
    monkeypatch.setattr(kopf, "run", lambda **_: None)
    runner.run_operator(
        namespaces=[],
        metrics_port=0,
        health_port=0,
        bind_address="127.0.0.1",
        peering=None,
        priority=0,
        task_poll_seconds=1.0,
        peering_lifetime_seconds=60,
    )
    assert started == [True]
