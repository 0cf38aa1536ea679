"""One reconciler at a time: a PostgreSQL advisory lock, or a lease row elsewhere."""

import contextlib
import os
import socket
import zlib
from collections.abc import Iterator
from datetime import timedelta

from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from .models import Lease


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def exclusive(name: str, *, lease: timedelta = timedelta(minutes=10)) -> Iterator[bool]:
    """Yields True if this process holds `name` until the block ends, False if another does.

    On PostgreSQL a session advisory lock: released by the server if the process dies.
    Elsewhere a lease row taken with a conditional UPDATE; it expires after `lease` if the
    holder dies without releasing it.
    """
    if connection.vendor == "postgresql":
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
        return

    holder, now = _holder(), timezone.now()
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
