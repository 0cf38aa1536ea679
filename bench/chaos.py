"""The chaos run: PaidUp's production topology under mixed traffic while nodes die (issue 13).

Starts `tools.cluster.Cluster` with its own PostgreSQL and Redis (restarting them never disturbs
anyone else on the machine), then for `--seconds`:

- customers check out through the real form and localstripe's fake Stripe.js tokens: cards that
  pay, decline, or ask for 3-D Secure (passed 80 % of the time, failed otherwise); a lost answer
  is followed by a look at the order and a resubmit of the *same* checkout, as the page does;
- Stripe re-delivers events it already sent, signed, some twice, some batches in reverse order;
- people ask "charged but no access?" with paying and unknown emails;
- a support person signs in (password + authenticator code) and resends access emails and
  refunds part or all of orders through the console's own forms (a full refund asks for a
  fresh code, typed like a person would);
- every `--kill-every` seconds a random node of web1, web2, worker1, worker2 is SIGKILLed and
  restarted after a short pause; once PostgreSQL and once Redis are restarted.

Then it waits for the system to settle (no paid-not-fulfilled order, every succeeded
PaymentIntent fulfilled or refunded, nothing waiting in the outbox), runs
`manage.py check_invariants --since <start> --grace 0 --acknowledged <event ids answered 2xx>`
against the cluster and prints the report (and writes it with `--json FILE`): requests by kind
and outcome, journeys by outcome, kills, restarts, violations, time to settle, and p50/p99 of
checkout and webhook latency for requests that did not overlap a kill or restart window (from a
second before the kill until two seconds after the node answered again). Exit 1 on any
violation or when the system did not settle.

Run it:
    .venv/bin/python bench/chaos.py                 # 300 s of traffic, a kill every 5 s
    .venv/bin/python bench/chaos.py --short --json chaos.json   # CI's version (tests/test_chaos.py)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import chaos_settle as settle  # noqa: E402
from bench.chaos_traffic import DECLINES, PAYS, THREE_DS, Customer, Recorder, Redeliverer, Site, Staff  # noqa: E402

# Settings for the run (through the Cluster's extra_env): reconciliation picks up a stuck order
# after 10 s instead of 60 (it still runs once a minute, the schedule's floor), and a refund
# asks for a fresh code when the last one is older than 30 s, so that the console's
# "confirm it's you" step is exercised in a short run; a self-service check the broker lost is
# queued again after 20 s instead of 120.
RUN_ENV = {"RECONCILE_GRACE_SECONDS": "10", "REFUND_REVERIFY_WINDOW_SECONDS": "30", "SELF_SERVICE_RETRY_SECONDS": "20"}
CARDS = [(PAYS, 0.5), (DECLINES, 0.2), (THREE_DS, 0.3)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300, help="traffic time (default 300)")
    parser.add_argument(
        "--kill-every", type=float, default=5, help="seconds from a node back to the next kill (default 5)"
    )
    parser.add_argument(
        "--short", action="store_true", help="CI's version: 45 s of traffic, a kill 3 s after the last node is back"
    )
    parser.add_argument("--customers", type=int, default=3, help="checkout threads (default 3)")
    parser.add_argument("--settle-timeout", type=float, default=240, help="seconds to wait for settling")
    parser.add_argument("--base-port", type=int, default=8700)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", help="write the report here as JSON")
    parser.add_argument(
        "--workdir", help="the cluster's files (default: a new folder in /tmp); `postgres` must reach it"
    )
    args = parser.parse_args(argv)
    if args.short:
        args.seconds, args.kill_every, args.settle_timeout = 45, 3, 150
    if args.seconds <= 0 or args.kill_every <= 0 or args.customers < 1:
        parser.error("--seconds, --kill-every and --customers must be positive")
    args.seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    return args


class Run:
    """One chaos run: the cluster, the clients' threads, the chaos thread, the record."""

    def __init__(self, args: argparse.Namespace, cluster, site: Site, staff_login: tuple[str, str, str]):
        self.args, self.cluster, self.site, self.staff_login = args, cluster, site, staff_login
        self.rec = Recorder()
        self.stop = threading.Event()
        self.kills: Counter = Counter()
        self.restarts: list[dict] = []
        self.rng = random.Random(args.seed)
        self.tag = f"{args.seed:x}"

    def loop(self, name: str, body, pause: tuple[float, float]) -> threading.Thread:
        """A client thread: `body(rng)` again and again until stop, a pause between."""
        rng = random.Random(f"{self.args.seed}-{name}")

        def run():
            while not self.stop.is_set():
                try:
                    body(rng)
                except Exception as error:  # a client bug must not end the run silently
                    self.rec.journey(name, f"client error: {type(error).__name__}: {error}"[:120])
                self.stop.wait(rng.uniform(*pause))

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    # --- the clients ---------------------------------------------------------------------

    def customer(self, n: int):
        count = iter(range(1 << 30))
        customer_address = f"127.0.{n + 1}."

        def body(rng):
            i = next(count)
            card = rng.choices([c for c, _ in CARDS], [w for _, w in CARDS])[0]
            email = f"chaos-{self.tag}-{n}-{i}@example.org"
            client = Customer(self.site, self.rec, customer_address + str(2 + i % 250))
            outcome = client.checkout(email, card, rng)
            self.rec.journey("checkout", outcome)
            if outcome in ("paid", "3-D Secure passed"):
                self.rec.paid(email)

        return body

    def self_service(self):
        count = iter(range(1 << 30))
        asked: Counter = Counter()

        def body(rng):
            i = next(count)
            with self.rec.lock:
                paid = [e for e in self.rec.paid_emails if asked[e] < 2]
            if paid and rng.random() < 0.6:
                email = rng.choice(paid)
                asked[email] += 1
            else:
                email = f"nobody-{self.tag}-{i}@example.org"
            client = Customer(self.site, self.rec, f"127.0.200.{2 + i % 250}")
            asked_at = datetime.now(UTC)
            outcome = client.self_service(email, rng.choice(["", "4242"]))
            self.rec.journey("self-service", outcome)
            if outcome == "received":  # "we'll email you within a few minutes": a promise to check
                with self.rec.lock:
                    self.rec.promised.setdefault(email, asked_at)

        return body

    def staff(self):
        person = Staff(self.site, self.rec, *self.staff_login)
        refunded: set[str] = set()

        def body(rng):
            with self.rec.lock:
                paid = [e for e in self.rec.paid_emails if e not in refunded]
            if not paid:
                return
            email, roll = rng.choice(paid), rng.random()
            if roll < 0.55:
                self.rec.journey("admin resend", person.resend(email))
            else:
                full = roll > 0.8
                outcome = person.refund(email, full)
                self.rec.journey("admin full refund" if full else "admin partial refund", outcome)
                if full and outcome.startswith("refunded"):
                    refunded.add(email)

        return body

    def webhooks(self):
        sender = Redeliverer(self.site, self.rec)
        return lambda rng: sender.round(rng)

    # --- the chaos -----------------------------------------------------------------------

    def window(self, what: str, down, up) -> None:
        """Break something, bring it back; the time from a second before to two seconds after
        it answers again is a kill window (latency percentiles leave it out)."""
        start = time.monotonic()
        down()
        self.stop.wait(self.rng.uniform(0.5, 2.0))
        up()
        end = time.monotonic()
        with self.rec.lock:
            self.rec.windows.append((start - 1, end + 2))
        print(f"  {time.strftime('%H:%M:%S')} {what}: back after {end - start:.1f} s", flush=True)

    def chaos(self, deadline: float) -> None:
        """Kill a random node every --kill-every seconds until `deadline`; PostgreSQL's restart
        once a third of the way in, Redis's at two thirds (late if a node is still coming back;
        before the traffic stops in any case)."""
        start = time.monotonic()
        services = [
            (start + (deadline - start) / 3, "PostgreSQL restart", self.cluster.restart_postgres),
            (start + 2 * (deadline - start) / 3, "Redis restart", self.cluster.restart_redis),
        ]
        while not self.stop.wait(self.args.kill_every):
            now = time.monotonic()
            if now >= deadline:
                break
            if services and now >= services[0][0]:
                _, what, restart = services.pop(0)
                self.window(what, restart, lambda: None)
                self.restarts.append({"what": what, "at_s": round(now - start, 1)})
                continue
            node = self.rng.choice(self.cluster.node_names)
            self.kills[node] += 1
            self.window(f"kill -9 {node}", partial(self.cluster.kill, node), partial(self.cluster.start_node, node))
        for _, what, restart in services:  # nodes came back slowly: still during the traffic
            self.window(what, restart, lambda: None)
            self.restarts.append({"what": what, "at_s": round(time.monotonic() - start, 1)})

    def traffic(self) -> float:
        """Run every client and the chaos for --seconds; returns when every thread is done."""
        deadline = time.monotonic() + self.args.seconds
        threads = [self.loop(f"customer {n}", self.customer(n), (0.2, 1.0)) for n in range(self.args.customers)]
        threads.append(self.loop("webhooks", self.webhooks(), (1.5, 3.0)))
        threads.append(self.loop("self-service", self.self_service(), (2.0, 4.0)))
        threads.append(self.loop("staff", self.staff(), (2.0, 4.0)))
        self.chaos(deadline)
        time.sleep(max(0.0, deadline - time.monotonic()))
        time.sleep(2)  # the last restart's requests finish inside the traffic
        self.stop.set()
        for thread in threads:  # a customer may still be checking a lost answer (up to ~60 s)
            thread.join(90)
        return deadline


def site_of(cluster) -> tuple[Site, tuple[str, str, str]]:
    """The keys and the webhook endpoint as the cluster's settings and database have them."""
    script = (
        "import json; from django.conf import settings; from billing.stripe_setup import LOCAL_ENDPOINT_ID; "
        "from djstripe.models import WebhookEndpoint; e = WebhookEndpoint.objects.get(id=LOCAL_ENDPOINT_ID); "
        "print(json.dumps([settings.STRIPE_PUBLISHABLE_KEY, settings.STRIPE_SECRET_KEY, "
        "f'/stripe/webhook/{e.djstripe_uuid}/', e.secret]))"
    )
    done = cluster.manage("shell", "-c", script)
    if done.returncode != 0:
        raise RuntimeError(f"could not read the cluster's keys: {done.stderr[-2000:]}")
    publishable, secret, path, webhook_secret = json.loads(done.stdout.strip().splitlines()[-1])
    site = Site(cluster.site_url, cluster.stripe_base, publishable, path, webhook_secret, secret)
    return site, settle.staff_login(cluster)


def patient_manage(cluster, *args: str) -> subprocess.CompletedProcess:
    """Cluster.manage with 30 minutes instead of 10: on this shared 2-core machine under a load
    of 12 to 15, `migrate` of the fresh database alone took more than 10 minutes."""
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=1800
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tools.cluster import Cluster

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="paidup-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # the private PostgreSQL runs as `postgres` and logs in here
    print(f"chaos run: seed {args.seed}, {args.seconds:.0f} s of traffic, a kill every {args.kill_every} s")
    print(f"cluster files in {workdir}")
    cluster = Cluster(workdir, base_port=args.base_port, private_services=True, extra_env=settle.env_for(RUN_ENV))
    cluster.manage = partial(patient_manage, cluster)
    load_before = os.getloadavg()
    try:
        t0 = time.monotonic()
        cluster.start()
        print(f"cluster up in {time.monotonic() - t0:.1f} s at {cluster.site_url}", flush=True)
        site, staff_login = site_of(cluster)
        started_at = datetime.now(UTC)
        run = Run(args, cluster, site, staff_login)
        run.traffic()
        print(f"traffic done; {sum(run.kills.values())} kills; settling", flush=True)
        settled_in = settle.wait(cluster, site.secret_key, started_at, args.settle_timeout, run.rec.promised)
        acked = workdir / "acknowledged.txt"
        acked.write_text("".join(f"{event_id}\n" for event_id in sorted(run.rec.acked)))
        check = settle.check_invariants(cluster, started_at, acked)
        lost = settle.unanswered_now(cluster, run.rec.promised)
        report = settle.report(run, check, settled_in, load_before, os.getloadavg(), lost)
    finally:
        cluster.stop()
    settle.print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["violations"] == 0 and report["settled"] and check["exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
