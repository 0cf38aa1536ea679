"""Start localstripe (the fake Stripe server used in dev and tests) with its state in a directory of ours.

Why this exists: localstripe 1.15 pickles its whole store to the hard-coded path
``/tmp/localstripe.pickle`` (``localstripe.resources.Store.try_load_from_disk`` /
``dump_to_disk``) and always binds ``::``. Two instances (two test sessions, a test run next
to ``make run``) would overwrite each other's state. This launcher points the store's load
and dump at ``<state-dir>/localstripe.pickle`` (written atomically), lets us pick the host,
and otherwise runs localstripe's own aiohttp app unchanged.

Usage::

    python tools/localstripe_server.py --port 8420 --state-dir .localstripe [--from-scratch]

``--state-dir`` defaults to ``$LOCALSTRIPE_STATE_DIR`` or ``.localstripe``; ``--from-scratch``
ignores (and on the first write replaces) the saved state. Webhook registrations
(``POST /_config/webhooks/<id>``) live in memory only: re-register after every start.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys
import tempfile
from pathlib import Path

from aiohttp import web
from localstripe import resources, server

STATE_FILE = "localstripe.pickle"


def redirect_store(state_dir: Path) -> Path:
    """Make localstripe's store load from and dump to ``state_dir/localstripe.pickle``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STATE_FILE

    def try_load_from_disk(self: resources.Store) -> None:
        try:
            with path.open("rb") as f:
                old = pickle.load(f)
        except FileNotFoundError:
            return
        self.clear()
        self.update(old)

    def dump_to_disk(self: resources.Store) -> None:
        fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".localstripe-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    resources.Store.try_load_from_disk = try_load_from_disk  # type: ignore[method-assign]
    resources.Store.dump_to_disk = dump_to_disk  # type: ignore[method-assign]
    return path


def accept_typed_card_numbers() -> None:
    """Let a card number typed with spaces ("4242 4242 4242 4242", as the README prints it) make a
    token. Stripe's card Element accepts and strips them before anything reaches the API;
    localstripe's fake Element sends the field as typed, and its Token refuses anything but 16
    digits. Only spaces are stripped: a wrong number is refused as before."""
    original = resources.Token.__init__

    def __init__(self, card=None, customer=None, **kwargs):
        if isinstance(card, dict) and isinstance(card.get("number"), str):
            card = {**card, "number": card["number"].replace(" ", "")}
        original(self, card=card, customer=customer, **kwargs)

    resources.Token.__init__ = __init__  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run localstripe with its state in --state-dir.")
    parser.add_argument("--host", default=os.environ.get("LOCALSTRIPE_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("LOCALSTRIPE_PORT", "8420")))
    parser.add_argument("--state-dir", type=Path, default=Path(os.environ.get("LOCALSTRIPE_STATE_DIR", ".localstripe")))
    parser.add_argument("--from-scratch", action="store_true", help="ignore the saved state")
    args = parser.parse_args(argv)

    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # "Running on" must reach a pipe now
    path = redirect_store(args.state_dir)
    accept_typed_card_numbers()
    if not args.from_scratch:
        resources.store.try_load_from_disk()

    # Same access/webhook-delivery logging as `localstripe` itself (webhooks log to aiohttp.access).
    access_log = logging.getLogger("aiohttp.access")
    access_log.setLevel(logging.DEBUG)
    access_log.addHandler(logging.StreamHandler())
    print(f"localstripe: state in {path} ({len(resources.store)} objects)", file=sys.stderr, flush=True)
    web.run_app(server.app, host=args.host, port=args.port, access_log=access_log)


if __name__ == "__main__":
    main()
