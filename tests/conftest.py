"""Shared test fixtures: where ../shared lives, the root/namespace capability check, and
several lab runs at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NATLENS_SHARED", REPO.parent / "shared"))
ZEEK_TRACES = SHARED / "data" / "zeek-traces"


@pytest.fixture(scope="session")
def zeek_traces() -> Path:
    if not ZEEK_TRACES.is_dir():
        pytest.skip(f"{ZEEK_TRACES} is missing: ../shared is not beside the checkout")
    return ZEEK_TRACES


def netns_unavailable_reason(*tools: str) -> str | None:
    """Why network-namespace tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", *tools):
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian package: see .ci/run)"
    probe = f"natlens-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def run_labs(base: Path, runs: dict[str, dict]) -> dict[str, Path]:
    """natlens.lab.run.run(base / name, **kwargs) for every run at once (threads: each lab waits
    on its client and captures, not on the CPU); the bundles by name. Any run's error fails the
    caller, named."""
    from natlens.lab.run import run

    errors: dict[str, BaseException] = {}

    def one(name: str) -> None:
        try:
            run(base / name, **runs[name])
        except BaseException as exc:  # reported below, in the caller's thread
            errors[name] = exc

    threads = [threading.Thread(target=one, args=(name,)) for name in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return {name: base / name for name in runs}
