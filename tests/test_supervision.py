"""Stopping the q cluster: a SIGTERM to its whole process group must end it cleanly.

The cluster runs as a real process group on the test's database (the SQLite test database is a
file because these tests use ``live_server``; see tests/fixtures/localstripe.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from billing.management.commands.run_qcluster import Command
from tests.fixtures.crash import database_url
from tools.cluster import tree

ROOT = Path(__file__).resolve().parents[1]
STARTED = b"running."  # django-q2 logs "Q Cluster <name> [paidup] running." once the sentinel guards
START_TIMEOUT = 60.0


@pytest.fixture
def cluster_env(live_server) -> dict[str, str]:
    # DJANGO_ALLOW_ASYNC_UNSAFE is set for Playwright (tests/fixtures/browser.py); the cluster's
    # start-up checks rightly refuse it (async.E001), as they would in production.
    drop = {"DATABASE_URL", "DJANGO_SETTINGS_MODULE", "Q_SYNC", "FAILPOINTS", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    return {
        **{k: v for k, v in os.environ.items() if k not in drop},
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url(),
        "DEBUG": "1",
        "Q_WORKERS": "2",
        "PYTHONUNBUFFERED": "1",
    }


def start_group(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    """`manage.py <command>` as the leader of a new process group; returns once the cluster runs."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while STARTED not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            kill_session(process.pid)
            pytest.fail(f"the cluster did not start (exit {process.poll()}):\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return process


def descendants_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def kill_session(pid: int) -> None:
    for member in tree(pid):
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.django_db(transaction=True)
def test_it_stops_cleanly_within_seconds_when_its_whole_group_gets_sigterm(cluster_env, tmp_path):
    log = tmp_path / "run_qcluster.log"
    launcher = start_group(["run_qcluster"], cluster_env, log)
    processes = tree(launcher.pid)
    assert len(processes) >= 6, "launcher, cluster, sentinel, two workers, monitor, pusher"
    try:
        started = time.monotonic()
        os.killpg(launcher.pid, signal.SIGTERM)  # what honcho, `docker stop` with an init, or kill -TERM -pgid do
        code = launcher.wait(timeout=15)
        took = time.monotonic() - started
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 15 s after SIGTERM to its group:\n{log.read_text()[-3000:]}")
    finally:
        kill_session(launcher.pid)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert took < 10
    assert "has stopped." in text  # django-q2's own clean-stop line: workers got their poison pill
    assert "q cluster stopped cleanly" in text
    assert descendants_alive(processes) == [], "a cluster process outlived the stop"


def a_child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def launcher(child: subprocess.Popen, grace: float) -> Command:
    command = Command()
    command.grace, command.stop_requested_at, command.child = grace, None, child
    return command


def test_it_kills_a_cluster_that_ignores_the_stop_for_longer_than_the_grace():
    child = a_child("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)")
    time.sleep(0.3)  # let it install SIG_IGN
    command = launcher(child, grace=0.5)
    command.on_stop_signal(signal.SIGTERM, None)
    started = time.monotonic()
    assert command.supervise() == 1
    assert time.monotonic() - started < 5
    assert child.returncode == -signal.SIGKILL


def test_a_second_signal_does_not_signal_the_cluster_again():
    child = a_child(
        "import signal, sys, time\n"
        "seen = []\n"
        "signal.signal(signal.SIGTERM, lambda *a: seen.append(1))\n"
        "time.sleep(1.5)\n"
        "sys.exit(len(seen))"
    )
    time.sleep(0.3)
    command = launcher(child, grace=10)
    command.on_stop_signal(signal.SIGTERM, None)
    command.on_stop_signal(signal.SIGINT, None)
    assert command.supervise() == 1  # the child saw exactly one SIGTERM


def test_a_cluster_that_dies_on_its_own_is_a_failure_for_the_supervisor():
    assert launcher(a_child("raise SystemExit(3)"), grace=10).supervise() == 3
    assert launcher(a_child("pass"), grace=10).supervise() == 1


@pytest.mark.parametrize("grace", ["0", "-5"])
def test_it_refuses_a_grace_that_is_not_positive(grace, capsys):
    with pytest.raises(SystemExit) as exit_info:
        call_command("run_qcluster", "--grace", grace)
    assert exit_info.value.code == 2
    assert "--grace must be a positive number of seconds" in capsys.readouterr().err


def test_it_refuses_a_grace_that_is_not_a_number():
    with pytest.raises(CommandError, match="invalid float value: 'soon'"):
        call_command("run_qcluster", "--grace", "soon")


def unit(name: str) -> dict[str, str]:
    """A systemd unit file's [Service]/[Unit]/[Timer] keys (last value wins, as in systemd)."""
    import configparser

    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(ROOT / "deploy" / "systemd" / name)
    return {f"{section}.{key}": value for section in parser.sections() for key, value in parser[section].items()}


@pytest.mark.parametrize("name", ["paidup-web.service", "paidup-qcluster.service"])
def test_the_long_running_units_stop_their_main_process_first_and_come_back(name):
    service = unit(name)
    assert service["Service.KillMode"] == "mixed"
    assert service["Service.Restart"] == "always"
    assert service["Service.EnvironmentFile"] == "/etc/paidup/paidup.env"
    assert service["Service.WorkingDirectory"] == "/srv/paidup"


def test_the_cluster_unit_runs_the_launcher_with_a_grace_shorter_than_systemds_patience():
    service = unit("paidup-qcluster.service")
    command = service["Service.ExecStart"].split()
    assert command[1:3] == ["manage.py", "run_qcluster"]
    grace = float(command[command.index("--grace") + 1])
    assert grace < float(service["Service.TimeoutStopSec"])


def exec_start(name: str) -> list[str]:
    """A unit's ExecStart as systemd splits it: backslash-newline continues the line, quotes group
    words, `%%` is a literal `%` (checked against `systemd-analyze verify`'s "Command Line")."""
    import shlex

    return shlex.split(unit(name)["Service.ExecStart"].replace("\\\n", " ").replace("%%", "%"))


def documented_gunicorn() -> list[str]:
    """The gunicorn command of docs/deploy.md §7, as a shell would split it."""
    import re
    import shlex

    section = (ROOT / "docs" / "deploy.md").read_text().split("## 7. Web")[1].split("\n## ")[0]
    (block,) = re.findall(r"```sh\n(gunicorn .*?)```", section, re.S)
    return shlex.split(block.replace("\\\n", " "))


def options(command: list[str]) -> dict[str, str | None]:
    """`--flag value` / `--flag` pairs of a command line (every value here is one word)."""
    found: dict[str, str | None] = {}
    for word, following in zip(command, [*command[1:], None], strict=True):
        if word.startswith("--"):
            found[word] = None if following is None or following.startswith("--") else following
    return found


def test_the_web_unit_serves_the_wsgi_app_with_gunicorn():
    command = exec_start("paidup-web.service")
    assert command[0].endswith("/gunicorn") and command[1] == "config.wsgi"


def test_the_web_unit_runs_gunicorn_with_the_flags_the_deploy_guide_gives():
    documented, unit_command = documented_gunicorn(), exec_start("paidup-web.service")

    assert documented[:2] == ["gunicorn", "config.wsgi"]
    # What the guide says, and the unit's one addition: its stop lets requests in flight finish.
    assert options(unit_command) == {**options(documented), "--graceful-timeout": "30"}
    for flag in ("--no-control-socket", "--forwarded-allow-ips", "--access-logfile"):
        assert flag in unit_command
    assert options(unit_command)["--access-logformat"].startswith('%({x-forwarded-for}i)s "%(r)s"')
    # The log folder the flags write to is created for the service's user.
    assert unit("paidup-web.service")["Service.LogsDirectory"] == "paidup"


@pytest.mark.parametrize(
    "path", ["deploy/systemd/paidup-web.service", "deploy/systemd/paidup-qcluster.service", "Procfile.dev"]
)
def test_the_docs_that_supervision_files_cite_exist(path):
    import re

    text = (ROOT / path).read_text()
    cited = re.findall(r"(docs/[\w.-]+\.md)", text)
    assert all((ROOT / doc).exists() for doc in cited), cited
    for title in re.findall(r'"((?:Stopping|Supervision)[^"]*)"', text.replace("\n# ", " ")):
        assert title in (ROOT / "docs" / "deploy.md").read_text()


def test_the_health_check_runs_every_minute_without_anyone_polling():
    assert unit("paidup-health.service")["Service.ExecStart"].endswith("manage.py health")
    assert unit("paidup-health.timer")["Timer.OnUnitActiveSec"] == "1min"
