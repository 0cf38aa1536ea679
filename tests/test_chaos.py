"""The short chaos run (bench/chaos.py --short) as CI's proof that the guarantees hold on the
production topology while nodes die: 0 violations of I1–I7, kills that happened, and traffic of
every kind that got through.

It starts its own cluster (tools/cluster.py) with a private PostgreSQL and Redis, so it needs
PostgreSQL's binaries, redis-server and haproxy: marked `postgres`, so a SQLite run skips it.
`.ci/run` runs it once, on its own with REQUIRE_POSTGRES=1 (it fails rather than skip), after the
SQLite suite: it reads nothing of the suite's database, and the PostgreSQL suite is CI's longer path.
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The run migrates a fresh database first: minutes on a loaded machine, past the 900 s default.
pytestmark = pytest.mark.timeout(2700)


@pytest.fixture(scope="module")
def chaos_report(tmp_path_factory) -> dict:
    report = tmp_path_factory.mktemp("chaos") / "report.json"
    # Not under pytest's temporary root (mode 0700): the private PostgreSQL runs as `postgres`
    # and writes its log in the cluster's folder.
    workdir = Path(tempfile.mkdtemp(prefix="paidup-chaos-test-"))
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--short", "--json", str(report)]
        + ["--workdir", str(workdir), "--base-port", "8750"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=2400,  # a loaded machine migrates the fresh database slowly (10+ min at load 13)
    )
    if not report.exists():
        output = f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        pytest.fail(f"the chaos run wrote no report (exit {done.returncode}; files in {workdir}):\n{output}")
    if done.returncode == 0:
        shutil.rmtree(workdir, ignore_errors=True)  # kept when it failed: the nodes' logs are there
    data = json.loads(report.read_text())
    data["exit"], data["output"] = done.returncode, done.stdout[-6000:]
    return data


def succeeded(report: dict, kind: str, *outcomes: str) -> int:
    return sum(n for outcome, n in report["journeys"].get(kind, {}).items() if outcome in outcomes)


@pytest.mark.postgres
def test_it_ends_with_no_violation_after_kills(chaos_report):
    assert chaos_report["violations"] == 0, chaos_report["output"]
    assert chaos_report["invariants"]["exit"] == 0, chaos_report["output"]
    assert chaos_report["settled"], chaos_report["output"]
    assert chaos_report["exit"] == 0, chaos_report["output"]


@pytest.mark.postgres
def test_it_really_killed_nodes_and_restarted_the_services(chaos_report):
    assert chaos_report["kills_total"] >= 2, chaos_report["kills"]
    assert {r["what"] for r in chaos_report["restarts"]} == {"PostgreSQL restart", "Redis restart"}


@pytest.mark.postgres
def test_every_kind_of_traffic_got_through(chaos_report):
    report = chaos_report
    assert succeeded(report, "checkout", "paid", "3-D Secure passed") >= 1, report["journeys"]
    assert succeeded(report, "checkout", "declined", "3-D Secure failed") >= 1, report["journeys"]
    assert report["webhook_events_acknowledged"] >= 1, report["requests"].get("webhook")
    assert succeeded(report, "self-service", "received") >= 1, report["journeys"]
    assert succeeded(report, "admin resend", "done") >= 1, report["journeys"]
    refunds = ("refunded", "refunded after a fresh code")
    assert succeeded(report, "admin partial refund", *refunds) + succeeded(report, "admin full refund", *refunds) >= 1
