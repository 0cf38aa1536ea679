"""Run django-q2's `qcluster` so that a SIGTERM to the whole process group stops it cleanly.

Why: `manage.py qcluster` stops cleanly only when its *main* process alone gets SIGTERM (it
then sets the sentinel's stop event; the sentinel stops the pusher, sends each worker a poison
pill, lets it finish its task, stops the monitor). When every process of the group gets the
signal at once (honcho, `kill -TERM -<pgid>`, a container whose init signals the group), the
sentinel and the workers die on the spot (django_q/cluster.py: `Sentinel.__init__` sets
SIGTERM to SIG_DFL) while the sentinel sleeps in `stop_event.wait()`. The main process's
`stop_event.set()` then waits forever in multiprocessing's `Condition.notify_all()` for the dead
sleeper to acknowledge, and only a SIGKILL ends it (a task in flight is lost either way).

This launcher starts `qcluster` in a session (process group) of its own, so a signal to the
launcher's group reaches only the launcher, and forwards one SIGTERM to the cluster's main
process. If the cluster has not stopped `--grace` seconds later, its whole group is killed.
Under systemd, use it with `KillMode=mixed` (deploy/systemd/paidup-qcluster.service): systemd's
default, `control-group`, signals every process of the unit's cgroup, session or not.
"""

from __future__ import annotations

import logging
import os
import signal

# bandit B404: subprocess starts the q cluster only, a fixed command (start_cluster).
import subprocess  # nosec B404
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Command(BaseCommand):
    help = "Run the q cluster; a SIGTERM to this process or its whole process group stops it cleanly."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--grace",
            type=float,
            default=90.0,
            help="Seconds to let the cluster finish its tasks after the stop signal before killing it "
            "(default 90; keep it below systemd's TimeoutStopSec).",
        )

    def handle(self, *args, grace: float, **options) -> None:
        if grace <= 0:
            self.stderr.write("--grace must be a positive number of seconds")
            raise SystemExit(2)
        self.grace = grace
        self.stop_requested_at: float | None = None
        self.child: subprocess.Popen | None = None
        for signum in STOP_SIGNALS:  # before the start, so that an early signal is not lost
            signal.signal(signum, self.on_stop_signal)
        self.child = self.start_cluster()
        if self.stop_requested_at is not None:
            self.forward_stop()
        code = self.supervise()
        raise SystemExit(code)

    def start_cluster(self) -> subprocess.Popen:
        """`python -m django qcluster` in a new session (its own process group); returns it."""
        # bandit B603: a fixed argv (this Python, -m django qcluster), no shell, nothing from outside.
        child = subprocess.Popen(  # nosec B603
            [sys.executable, "-m", "django", "qcluster"],
            cwd=settings.BASE_DIR,
            start_new_session=True,
        )
        logger.info("q cluster started as pid %s (process group of its own)", child.pid)
        return child

    def on_stop_signal(self, signum: int, frame) -> None:
        """Forward one SIGTERM to the cluster's main process only; later signals change nothing."""
        if self.stop_requested_at is not None:
            return
        self.stop_requested_at = time.monotonic()
        logger.info("%s received: asking the q cluster to stop", signal.Signals(signum).name)
        if self.child is not None:
            self.forward_stop()

    def forward_stop(self) -> None:
        try:
            os.kill(self.child.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def supervise(self) -> int:
        """Wait for the cluster to end; kill its group after the grace period. Returns the exit code:
        the cluster's own (0 after a clean stop), or 1 if it had to be killed."""
        while True:
            try:
                code = self.child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                if self.stop_requested_at is not None and time.monotonic() - self.stop_requested_at > self.grace:
                    logger.error("q cluster still running %.0f s after SIGTERM; killing its processes", self.grace)
                    self.kill_group()
                    self.child.wait()
                    return 1
                continue
            self.kill_group()  # nothing should be left; a leftover worker must not outlive us
            if self.stop_requested_at is None:
                logger.error("q cluster exited on its own with code %s", code)
                return code or 1
            logger.info("q cluster stopped cleanly in %.1f s", time.monotonic() - self.stop_requested_at)
            return code

    def kill_group(self) -> None:
        try:
            os.killpg(self.child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
