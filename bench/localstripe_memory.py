"""tools/localstripe_server.py for the benchmark: the store in memory, optionally a network delay.

localstripe pickles its whole store to disk on every insert and after every write request,
and every list it builds (a customer's sources, subscriptions, …, exported with each customer)
scans the whole store: creating the backlog gets quadratically slower (measured: 200 orders
took 17 s, and growing), and so does every API call the stock baseline makes, which real
Stripe does not do. Here the store stays in memory (the benchmark never restarts it) and
lists read an index by object type, in the same (insertion) order.

localstripe answers over loopback in a few milliseconds; real Stripe is a network round trip
away. `POST /_config/bench_latency/<ms>` delays every later /v1/ answer by that much, without using
CPU, to show what a baseline that calls Stripe looks like when Stripe is far away.
Otherwise the same arguments as the launcher.
"""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import localstripe_server  # noqa: E402
from aiohttp import web  # noqa: E402
from localstripe import resources, server  # noqa: E402
from localstripe.errors import UserError  # noqa: E402

_redirect_store = localstripe_server.redirect_store


def redirect_store_in_memory(state_dir: Path) -> Path:
    path = _redirect_store(state_dir)
    resources.Store.dump_to_disk = lambda self: None  # type: ignore[method-assign]
    return path


def index_store_by_object() -> None:
    """Keep `{object type: {key: None}}` beside the store; lists read it instead of scanning."""
    index: dict[str, dict[str, None]] = {}
    store_class = resources.Store
    set_item, del_item, clear, update = (
        store_class.__setitem__,
        store_class.__delitem__,
        store_class.clear,
        store_class.update,
    )

    def rebuild(store) -> None:
        index.clear()
        for key in dict.keys(store):
            index.setdefault(key.split(":", 1)[0], {})[key] = None

    def setitem(self, key, value):
        set_item(self, key, value)
        index.setdefault(key.split(":", 1)[0], {})[key] = None

    def delitem(self, key):
        del_item(self, key)
        index.get(key.split(":", 1)[0], {}).pop(key, None)

    def cleared(self):
        clear(self)
        rebuild(self)

    def updated(self, *args, **kwargs):
        update(self, *args, **kwargs)
        rebuild(self)

    def _api_list_all(cls, url, limit=None, starting_after=None, **kwargs):
        if kwargs:
            raise UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
        result = resources.List(url, limit=limit, starting_after=starting_after)
        result._list = [resources.store[key] for key in index.get(cls.object, ())]
        return result

    store_class.__setitem__, store_class.__delitem__ = setitem, delitem
    store_class.clear, store_class.update = cleared, updated
    resources.StripeObject._api_list_all = classmethod(_api_list_all)
    rebuild(resources.store)


LATENCY = {"seconds": 0.0}


@web.middleware
async def network_delay(request, handler):
    if LATENCY["seconds"] and request.path.startswith("/v1/"):
        await asyncio.sleep(LATENCY["seconds"])
    return await handler(request)


async def set_latency(request):
    LATENCY["seconds"] = float(request.match_info["ms"]) / 1000
    return web.json_response(LATENCY)


if __name__ == "__main__":
    localstripe_server.redirect_store = redirect_store_in_memory
    index_store_by_object()
    server.app.middlewares.insert(0, network_delay)
    server.app.router.add_post("/_config/bench_latency/{ms}", set_latency)
    localstripe_server.main()
