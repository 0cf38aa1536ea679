"""One reconciler at a time: a PostgreSQL advisory lock, or a lease row elsewhere."""

import contextlib
import os
import socket
import threading
import zlib
from collections.abc import Iterator
from datetime import timedelta

from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from .models import Lease

# PostgreSQL advisory locks are re-entrant for the session that holds them, so this
# process's own holdings are tracked here too: a second caller in this process is refused.
_held: set[str] = set()
_held_guard = threading.Lock()


@contextlib.contextmanager
def exclusive(name: str, *, lease: timedelta = timedelta(minutes=10)) -> Iterator[bool]:
    """Yields True if this caller holds `name` until the block ends, False if another does.

    On PostgreSQL a session advisory lock: released by the server if the process dies.
    Elsewhere a lease row taken with a conditional UPDATE; it expires after `lease` if the
    holder dies without releasing it.
    """
    with _held_guard:
        mine = name not in _held
        _held.add(name)
    if not mine:
        yield False
        return
    try:
        take = _advisory if connection.vendor == "postgresql" else _lease
        with take(name, lease) as acquired:
            yield acquired
    finally:
        with _held_guard:
            _held.discard(name)


@contextlib.contextmanager
def _advisory(name: str, lease: timedelta) -> Iterator[bool]:
    key = zlib.crc32(name.encode())
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        acquired = cursor.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


@contextlib.contextmanager
def _lease(name: str, lease: timedelta) -> Iterator[bool]:
    holder, now = f"{socket.gethostname()}:{os.getpid()}", timezone.now()
    with contextlib.suppress(IntegrityError), transaction.atomic():
        Lease.objects.get_or_create(name=name)
    acquired = (
        Lease.objects.filter(Q(holder="") | Q(expires_at__lt=now), name=name).update(
            holder=holder, expires_at=now + lease
        )
        == 1
    )
    try:
        yield acquired
    finally:
        if acquired:
            Lease.objects.filter(name=name, holder=holder).update(holder="", expires_at=None)
