"""How long the q cluster takes to stop when its whole process group gets SIGTERM.

Usage (a migrated database in DATABASE_URL, e.g. the dev one):
    .venv/bin/python bench/qcluster_stop.py run_qcluster   # the launcher (deploy/systemd)
    .venv/bin/python bench/qcluster_stop.py qcluster       # django-q2's own command

Prints the seconds from the group SIGTERM to the exit, or that it was still running after the
limit (then it is SIGKILLed). Not a test: tests/test_supervision.py asserts the behaviour.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIMIT = 30.0
ROOT = Path(__file__).resolve().parents[1]


def main(command: str) -> None:
    log = Path(tempfile.mkdtemp()) / "cluster.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", command],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 120
    while b"running." not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.terminate()  # the launcher stops its cluster; plain qcluster is alone here
                process.wait(LIMIT)
            sys.exit(f"the cluster did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    time.sleep(2)
    started = time.monotonic()
    os.killpg(process.pid, signal.SIGTERM)
    try:
        code = process.wait(timeout=LIMIT)
        print(f"{command}: exited {code} {time.monotonic() - started:.1f} s after SIGTERM to its process group")
    except subprocess.TimeoutExpired:
        print(f"{command}: still running {LIMIT:.0f} s after SIGTERM to its process group (now SIGKILLed)")
        os.killpg(process.pid, signal.SIGKILL)
        # The group's orphans (workers of a hung cluster) go with it.
        process.wait()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "run_qcluster")
