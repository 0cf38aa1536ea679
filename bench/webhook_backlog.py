"""The webhook backlog after an outage: PaidUp against stock dj-stripe, in one run.

Stripe comes back and delivers the whole backlog at once. This posts N signed
`payment_intent.succeeded` events (a fraction of them delivered a second time) to the server
as it runs in production — gunicorn, PostgreSQL, DEBUG off, persistent database connections,
localstripe standing in for Stripe — and reports events/s and p50/p99 latency until the 2xx
and until the effect is committed (PaidUp: the order is fulfilled). Then the same with fresh
orders and events against stock dj-stripe processing alone (its own view and PaymentIntent
mirror receiver, PaidUp's receivers off: bench/settings_stock.py) as the baseline.

    .venv/bin/python bench/webhook_backlog.py                 # N=1000, 10 % duplicates
    .venv/bin/python bench/webhook_backlog.py --events 300 --servers 2x4,4x1,6x1   # compare servers
    .venv/bin/python bench/webhook_backlog.py --proxy --servers 2x1   # two nodes behind haproxy

Each order gets a real PaymentIntent in localstripe, created and confirmed through PaidUp's
own gateway, and is left as a crash right after the charge leaves it: pending, never told.
Everything the run starts (a scratch PostgreSQL database, localstripe, gunicorn) is stopped
and removed at the end, on Ctrl-C, and when --timeout passes; --keep keeps the database and
the logs. Exit status 1 when a correctness check fails. A benchmark prints numbers; it has
no time limit to pass (STYLE.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backlog_report import (  # noqa: E402
    TITLES,
    Variant,
    checks,
    figures,
    last_trigger_id,
    print_report,
    read_effects,
    snapshot,
)
from bench.backlog_setup import (  # noqa: E402
    build_event,
    new_orders,
    pay,
    save_orders,
    seed,
    server_env,
    setup_django,
)
from bench.harness import (  # noqa: E402
    Abort,
    CpuMeter,
    Processes,
    Scratch,
    deliver,
    free_port,
    log,
    start_gunicorn,
    start_localstripe,
    start_migrate,
    wait_for_http,
    wait_for_line,
)

SETTINGS = {"paidup": "config.settings", "stock": "bench.settings_stock"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1000, help="first deliveries per variant (N)")
    p.add_argument("--duplicates", type=float, default=0.10, help="fraction of events delivered twice")
    p.add_argument("--concurrency", type=int, default=16, help="sender connections (Stripe's side)")
    p.add_argument(
        "--servers",
        default="4x1",
        help="gunicorn configurations to measure, WORKERSxTHREADS[,…] (threads > 1: gthread worker class); "
        "each gets its own fresh backlog for every variant; repeat one (2x4,2x4) to alternate the variants",
    )
    p.add_argument("--conn-max-age", type=int, default=600, help="CONN_MAX_AGE for the server")
    p.add_argument("--variants", default="paidup,stock", help="which to run, in order")
    p.add_argument(
        "--stripe-latency-ms",
        type=float,
        default=0,
        help="delay each Stripe API answer during the deliveries (localstripe answers on loopback in ms)",
    )
    p.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432"))
    p.add_argument("--timeout", type=int, default=1800, help="bound on the whole run, seconds")
    p.add_argument("--request-timeout", type=float, default=30.0)
    p.add_argument(
        "--start-timeout",
        type=float,
        default=120.0,
        help="seconds gunicorn may take to answer (longer on a busy machine)",
    )
    p.add_argument(
        "--quiet-wait",
        type=int,
        default=300,
        help="before each variant, wait up to this many seconds for other processes to use under 0.2 cores",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--site-port", type=int, help="port for gunicorn (default: any free one)")
    p.add_argument("--stripe-port", type=int, help="port for localstripe (default: any free one)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument(
        "--py-spy",
        type=Path,
        metavar="BIN",
        help="sample the gunicorn workers with this py-spy during each first delivery "
        "(collapsed stacks in the log directory: use with --keep)",
    )
    p.add_argument(
        "--proxy",
        action="store_true",
        help="run each server size as two gunicorn nodes of that size behind haproxy with the deploy's own "
        "configuration (deploy/haproxy/haproxy.cfg), as in production with more than one node, and deliver "
        "through the proxy: 2x1 means two nodes of 2 workers",
    )
    p.add_argument("--keep", action="store_true", help="keep the database and the logs")
    args = p.parse_args(argv)
    if args.proxy and args.py_spy:
        p.error("--py-spy samples one gunicorn: leave out --proxy")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not set(args.variants) <= set(SETTINGS):
        p.error(f"--variants: choose from {', '.join(SETTINGS)}")
    try:
        args.servers = [tuple(int(n) for n in s.split("x")) for s in args.servers.split(",")]
    except ValueError:
        p.error("--servers: e.g. 2x4 or 2x4,4x1")
    return args


def backlog(name: str, server: tuple[int, int], run: int, args, rng: random.Random) -> Variant:
    from djstripe.settings import djstripe_settings

    orders = new_orders(f"{name}-{server[0]}x{server[1]}-{run}", args.events, rng)
    log(f"{TITLES[name]}, server {server[0]}x{server[1]} (run {run}): paying {len(orders)} orders in localstripe")
    pis = pay(orders, concurrency=8)
    ids, bodies = zip(*(build_event(pi, djstripe_settings.STRIPE_API_VERSION) for pi in pis), strict=True)
    order = list(range(len(bodies)))
    rng.shuffle(order)  # a backlog arrives in no particular order
    dups = sorted(rng.sample(range(len(bodies)), round(args.duplicates * len(bodies))))
    pick = lambda seq: [seq[i] for i in order]  # noqa: E731
    return Variant(name, server, pick(orders), pick(pis), pick(ids), pick(bodies), dups, run)


# --- one variant against its own gunicorn -------------------------------------------------


def run_variant(v: Variant, args, procs: Processes, env: dict, port: int, endpoint, workdir: Path, meter_for):
    from django.db import connections

    path = f"/stripe/webhook/{endpoint.djstripe_uuid}/"
    nodes = [(port, "")] if not args.proxy else [(free_port(), "-web1"), (free_port(), "-web2")]
    servers = []
    for node_port, suffix in nodes:
        servers.append(
            start_gunicorn(
                procs,
                ROOT,
                {**env, "DJANGO_SETTINGS_MODULE": SETTINGS[v.name], "NUM_PROXIES": "1" if args.proxy else "0"},
                port=node_port,
                workers=v.server[0],
                threads=v.server[1],
                log_path=workdir / f"gunicorn-{v.label}{suffix}.log",
                app="config.wsgi:application",
                graceful_timeout=5,
            )
        )
    for (node_port, _), server in zip(nodes, servers, strict=True):
        wait_for_http(node_port, path, server, timeout=args.start_timeout)
    if args.proxy:
        servers.append(start_haproxy(procs, env, port, [p for p, _ in nodes], workdir / f"haproxy-{v.label}.log"))
        wait_for_http(port, path, servers[-1], timeout=args.start_timeout)
    time.sleep(2)  # let every worker finish importing Django before the backlog arrives
    meter = meter_for(servers)
    server = servers[0]
    wait_for_quiet(meter, args.quiet_wait)
    ls_log = workdir / "localstripe.log"
    stop = threading.Event()
    send = dict(port=port, path=path, secret=endpoint.secret, concurrency=args.concurrency, stop=stop)
    send["request_timeout"] = args.request_timeout
    try:
        v.trigger_ids = (last_trigger_id(), 0)
        connections.close_all()
        ls_before = ls_log.stat().st_size
        log(f"{v.title}: delivering {len(v.bodies)} events, {args.concurrency} at a time")
        spy = args.py_spy and procs.start(
            [str(args.py_spy), "record", "--pid", str(server.pid), "--subprocesses", "--rate", "50", "--format", "raw"]
            + ["--nonblocking", "--output", str(workdir / f"py-spy-{v.label}.txt")],
            log=workdir / "py-spy.log",
            env=env,
            cwd=ROOT,
        )
        start = meter.sample()
        v.first = deliver(v.bodies, **send)
        v.cpu["first delivery"] = meter.cores(start, meter.sample())
        if spy:
            os.killpg(spy.pid, signal.SIGINT)  # py-spy writes its file on SIGINT
            spy.wait(30)
            procs.stop(spy)
        with ls_log.open("rb") as f:
            f.seek(ls_before)
            v.stripe_calls = sum(b'"GET /v1/' in line or b'"POST /v1/' in line for line in f)
        v.before_dups = snapshot(v)
        connections.close_all()
        log(f"{v.title}: delivering {len(v.duplicate_indexes)} of them a second time")
        start = meter.sample()
        v.dups = deliver([v.bodies[i] for i in v.duplicate_indexes], **send)
        v.cpu["duplicates"] = meter.cores(start, meter.sample())
        v.after_dups = snapshot(v)
        v.trigger_ids = (v.trigger_ids[0], last_trigger_id())
    finally:
        stop.set()
        for proc in reversed(servers):
            procs.stop(proc)
    read_effects(v)


def start_haproxy(procs: Processes, env: dict, port: int, node_ports: list[int], log_path: Path):
    """haproxy on 127.0.0.1:`port` with deploy/haproxy/haproxy.cfg as it is, in front of the two
    gunicorn nodes on `node_ports`, its statistics page on a free port."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        raise RuntimeError("--proxy needs haproxy (apt-get install haproxy; `make cluster` installs it)")
    proxy_env = {
        **env,
        "PAIDUP_PROXY_BIND": f"127.0.0.1:{port}",
        "PAIDUP_STATS_BIND": f"127.0.0.1:{free_port()}",
        "PAIDUP_WEB1": f"127.0.0.1:{node_ports[0]}",
        "PAIDUP_WEB2": f"127.0.0.1:{node_ports[1]}",
        "PAIDUP_CHECK_HOST": "127.0.0.1",  # one of ALLOWED_HOSTS (server_env)
    }
    config = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
    return procs.start([binary, "-db", "-f", str(config)], log=log_path, env=proxy_env, cwd=ROOT)


def code_version() -> str:
    """The commit measured, and which of the server's files differ from it (others work in this tree)."""
    import subprocess

    def git(*args: str) -> str:
        run = subprocess.run(["git", "--no-optional-locks", *args], cwd=ROOT, capture_output=True, text=True)
        return run.stdout

    dirty = git("status", "--porcelain", "--", "billing", "accounts", "config", "support", "templates").splitlines()
    changed = ", ".join(line[3:] for line in dirty)
    return git("rev-parse", "--short", "HEAD").strip() + (f" + uncommitted changes in {changed}" if changed else "")


def wait_for_quiet(meter: CpuMeter, patience: float, threshold: float = 0.2) -> None:
    """Other people's work on a shared 2-core machine skews a benchmark: wait a while for it to stop."""
    deadline = time.monotonic() + patience
    while True:
        start = meter.sample()
        time.sleep(2)
        other = meter.cores(start, meter.sample())["other processes"]
        if other < threshold:
            return
        if time.monotonic() > deadline:
            log(f"other processes still use {other:.2f} cores; measuring anyway (see the CPU lines)")
            return
        log(f"other processes use {other:.2f} cores; waiting for the machine to be quiet")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    run = Scratch(args.pg, args.timeout, prefix="paidup-bench-", db_prefix="paidup_bench")
    procs, workdir, db_name = run.procs, run.workdir, run.db_name
    try:
        t0 = time.monotonic()
        load = os.getloadavg()[0]
        if load > 0.5:
            log(f"the machine is busy (load {load:.1f}): other work skews the numbers; see the CPU lines")
        run.create_database()
        site_port, stripe_port = args.site_port or free_port(), args.stripe_port or free_port()
        env = server_env(args, run.db_url, site_port, stripe_port)
        migrate = start_migrate(procs, ROOT, env, workdir / "migrate.log")
        localstripe = start_localstripe(procs, ROOT, env, stripe_port, workdir)
        log(f"database {db_name} migrating; localstripe on port {stripe_port}; logs in {workdir}")
        setup_django(env)
        wait_for_line(workdir / "localstripe.log", "Running on", localstripe)
        # Paying in localstripe overlaps with the migration: both take tens of seconds.
        variants = [
            backlog(name, server, args.servers[: i + 1].count(server), args, rng)
            for i, server in enumerate(args.servers)
            for name in args.variants
        ]
        while migrate.poll() is None:
            time.sleep(0.2)
        if migrate.returncode:
            raise RuntimeError(f"migrate failed; see {workdir / 'migrate.log'}")
        endpoint = seed()
        for v in variants:
            save_orders(v.orders)
        setup_s = time.monotonic() - t0
        if args.stripe_latency_ms:
            urllib.request.urlopen(
                urllib.request.Request(f"{env['STRIPE_API_BASE']}/_config/bench_latency/{args.stripe_latency_ms}", b"")
            ).read()

        def meter_for(servers: list) -> CpuMeter:
            groups = {proc.pid: "haproxy" if "haproxy" in proc.args[0] else "gunicorn" for proc in servers}
            return CpuMeter({**groups, localstripe.pid: "localstripe"}, db_name)

        for v in variants:
            run_variant(v, args, procs, env, site_port, endpoint, workdir, meter_for)
        rows = [row for v in variants for row in figures(v)]
        all_checks = {v.title: checks(v) for v in variants}
        ok = print_report(args, variants, rows, all_checks, setup_s, code_version())
        if args.json:
            report = {"args": {k: str(a) for k, a in vars(args).items()}, "rows": rows, "checks": all_checks}
            args.json.write_text(json.dumps(report, indent=2, default=str))
        return 0 if ok else 1
    except (Abort, KeyboardInterrupt) as stopped:
        log(f"{stopped or 'interrupted'}; cleaning up")
        return 130
    finally:
        run.end(keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
