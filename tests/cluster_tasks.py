"""Tasks the q clusters of tests/test_cluster.py run: each appends one line to a file, so that a
task run twice shows twice (django-q2's own Task row would not: a second success of the same
task id leaves the row as it was, django_q/monitor.py `save_task`)."""

import os


def record(path: str, tag: str, intended: str | None = None) -> None:
    """Append "<tag> <intended date or -> <pid>" to `path` (O_APPEND: lines never interleave)."""
    with open(path, "a") as out:
        out.write(f"{tag} {intended or '-'} {os.getpid()}\n")
