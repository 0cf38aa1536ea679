"""The chaos run's end (bench/chaos.py): wait for the system to settle, check the invariants,
and build the report. Also the staff login the console client uses."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import psycopg
import requests

STAFF_EMAIL = "chaos@paidup.test"
# outbox.sending.STALE_SENDING: a row left "sending" by a killed worker is taken over after this,
# so settling does not wait for it earlier (check_invariants counts it stuck only after it, too).
STALE_SENDING_SECONDS = 600
LATENCY_KINDS = {"checkout": "checkout latency", "webhook": "webhook latency"}


def env_for(run_env: dict[str, str]) -> dict[str, str]:
    return dict(run_env)


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def staff_login(cluster) -> tuple[str, str, str]:
    """(email, password, TOTP key in hex) of a superuser with a confirmed authenticator app.

    The Cluster's own when it says them (`staff_email`, `staff_password`, `staff_totp_key`);
    otherwise made here through `manage.py shell`: the same person, a password and a key of ours.
    """
    found = tuple(getattr(cluster, name, None) for name in ("staff_email", "staff_password", "staff_totp_key"))
    if all(found):
        return found  # type: ignore[return-value]
    script = (
        "import json, secrets; from django.contrib.auth import get_user_model; "
        "from django_otp.plugins.otp_totp.models import TOTPDevice; U = get_user_model(); "
        f"u = U.objects.filter(email={STAFF_EMAIL!r}).first() or "
        f"U.objects.create_superuser(email={STAFF_EMAIL!r}, password=None); "
        "pw = secrets.token_urlsafe(16); u.set_password(pw); u.is_staff = u.is_superuser = True; u.save(); "
        "d = TOTPDevice.objects.filter(user=u, confirmed=True).first() or "
        "TOTPDevice.objects.create(user=u, name='Authenticator app', confirmed=True); "
        "print(json.dumps([u.email, pw, d.key]))"
    )
    done = cluster.manage("shell", "-c", script)
    if done.returncode != 0:
        raise RuntimeError(f"could not make the staff login: {_text(done.stderr)[-2000:]}")
    email, password, key = json.loads(_text(done.stdout).strip().splitlines()[-1])
    return email, password, key


# --- settling -------------------------------------------------------------------------------


def stripe_succeeded(stripe_base: str, secret_key: str, since: int) -> set[str]:
    """Succeeded PaymentIntents created at or after `since` (localstripe lists oldest first and
    has no `created` filter on PaymentIntents: read them all)."""
    found, after = set(), None
    while True:
        params = {"limit": 100, **({"starting_after": after} if after else {})}
        page = requests.get(f"{stripe_base}/v1/payment_intents", params=params, auth=(secret_key, ""), timeout=30)
        page.raise_for_status()
        data = page.json()
        found |= {pi["id"] for pi in data["data"] if pi["status"] == "succeeded" and pi["created"] >= since}
        if not data.get("has_more") or not data["data"]:
            return found
        after = data["data"][-1]["id"]


def unanswered(conn, promised: dict[str, datetime]) -> list[str]:
    """The emails the self-service page promised an answer to ("within a few minutes we'll
    email you") that got none: no email queued to them and no support case opened since."""
    if not promised:
        return []
    answered = {
        row[0]
        for row in conn.execute(
            "SELECT p.email FROM unnest(%s::text[], %s::timestamptz[]) AS p(email, asked_at) WHERE "
            "EXISTS (SELECT 1 FROM billing_outboundemail e WHERE e.to = p.email AND e.created_at >= p.asked_at) "
            "OR EXISTS (SELECT 1 FROM support_supportcase c WHERE c.email = p.email AND c.created_at >= p.asked_at)",
            (list(promised), list(promised.values())),
        )
    }
    return sorted(set(promised) - answered)


def unanswered_now(cluster, promised: dict[str, datetime]) -> list[str]:
    with psycopg.connect(cluster.database_url, connect_timeout=10) as conn:
        return unanswered(conn, promised)


def unsettled(cluster, secret_key: str, since: datetime, promised: dict[str, datetime]) -> dict[str, int]:
    """What is still in progress: paid-not-fulfilled orders, succeeded payments without a
    fulfilled or refunded order, emails waiting in the outbox (since `since`), self-service
    requests not answered yet."""
    succeeded = stripe_succeeded(cluster.stripe_base, secret_key, int(since.timestamp()))
    with psycopg.connect(cluster.database_url, connect_timeout=10) as conn:
        paid = conn.execute(
            "SELECT count(*) FROM billing_order WHERE created_at >= %s AND state = 'paid'", (since,)
        ).fetchone()[0]
        done = {
            row[0]
            for row in conn.execute(
                "SELECT stripe_payment_intent_id FROM billing_order WHERE state IN ('fulfilled', 'refunded') "
                "AND stripe_payment_intent_id = ANY(%s)",
                (list(succeeded),),
            )
        }
        waiting = conn.execute(
            "SELECT count(*) FROM billing_outboundemail WHERE created_at >= %s AND (status IN ('queued', 'retry') "
            "OR (status = 'sending' AND next_attempt_at < now() - make_interval(secs => %s)))",
            (since, STALE_SENDING_SECONDS),
        ).fetchone()[0]
        asked = len(unanswered(conn, promised))
    return {
        "paid not fulfilled": paid,
        "succeeded without access": len(succeeded - done),
        "emails waiting": waiting,
        "self-service unanswered": asked,
    }


def wait(cluster, secret_key: str, since: datetime, timeout: float, promised: dict) -> float | None:
    """Seconds until nothing is in progress (polled every 2 s), or None after `timeout`."""
    start = time.monotonic()
    last = None
    while time.monotonic() - start < timeout:
        try:
            state = unsettled(cluster, secret_key, since, promised)
        except (psycopg.Error, requests.RequestException) as error:
            state = {"unreadable": str(error)[:200]}
        if state != last:
            print(f"  +{time.monotonic() - start:5.1f} s {state}", flush=True)
            last = state
        if not any(v for v in state.values()):
            return time.monotonic() - start
        time.sleep(2)
    return None


def check_invariants(cluster, since: datetime, acknowledged: Path) -> dict:
    """`manage.py check_invariants` over the run, every settled thing due (grace 0)."""
    done = cluster.manage(
        "check_invariants",
        "--since",
        since.isoformat(),
        "--grace",
        "0",
        "--budget",
        "20000",
        "--acknowledged",
        str(acknowledged),
    )
    lines = _text(done.stdout).strip().splitlines()
    head = lines[0] if lines else _text(done.stderr).strip()[-500:]
    counted = re.search(r"(\d+) violations", head)
    return {
        "exit": done.returncode,
        "summary": head,
        "violations": int(counted.group(1)) if counted else -1,
        "lines": lines[1:],
    }


# --- the report -----------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def latencies(rec, kind: str) -> dict:
    """p50/p99 in ms of `kind`'s requests outside every kill window, and how many were left out."""
    spans = [(s, e) for k, _, s, e in rec.requests if k == kind]
    calm = [e - s for s, e in spans if not any(s < w_end and e > w_start for w_start, w_end in rec.windows)]
    ms = lambda v: None if v is None else round(v * 1000, 1)  # noqa: E731
    return {
        "p50_ms": ms(percentile(calm, 50)),
        "p99_ms": ms(percentile(calm, 99)),
        "n": len(calm),
        "left_out": len(spans) - len(calm),
    }


def errors_outside_windows(rec) -> dict[str, int]:
    """5xx answers and failed connections per kind that overlapped no kill window: each one is
    a failure the chaos does not explain (a bug, or an overloaded machine)."""
    found: Counter = Counter()
    for kind, outcome, s, e in rec.requests:
        if outcome in ("5xx", "connection error") and not any(s < w1 and e > w0 for w0, w1 in rec.windows):
            found[kind] += 1
    return dict(sorted(found.items()))


def report(run, check: dict, settled_in: float | None, load_before, load_after, lost: list[str]) -> dict:
    """The run's report as a dict (JSON-able). `violations` counts check_invariants' violations
    and the self-service requests that were promised an answer and got none (`lost`)."""
    rec = run.rec
    by_kind: dict[str, dict[str, int]] = {}
    for (kind, outcome), n in sorted(Counter((k, o) for k, o, _, _ in rec.requests).items()):
        if kind not in LATENCY_KINDS.values():
            by_kind.setdefault(kind, {})[outcome] = n
    journeys: dict[str, dict[str, int]] = {}
    for (kind, outcome), n in sorted(rec.journeys.items()):
        journeys.setdefault(kind, {})[outcome] = n
    return {
        "seed": run.args.seed,
        "traffic_seconds": run.args.seconds,
        "kill_every_seconds": run.args.kill_every,
        "requests": by_kind,
        "journeys": journeys,
        "kills": dict(sorted(run.kills.items())),
        "kills_total": sum(run.kills.values()),
        "restarts": run.restarts,
        "webhook_events_acknowledged": len(rec.acked),
        "errors_outside_kill_windows": errors_outside_windows(rec),
        "settled": settled_in is not None,
        "settle_seconds": None if settled_in is None else round(settled_in, 1),
        "violations": (check["violations"] if check["violations"] >= 0 else 1) + len(lost),
        "self_service_promised": len(rec.promised),
        "self_service_unanswered": lost,
        "invariants": check,
        "latency": {name: latencies(rec, kind) for name, kind in LATENCY_KINDS.items()},
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
    }


def print_report(r: dict) -> None:
    print("\n=== chaos run report ===")
    print(f"seed {r['seed']}; {r['traffic_seconds']:.0f} s of traffic; a kill every {r['kill_every_seconds']} s")
    print("requests (kind: outcome count):")
    for kind, outcomes in r["requests"].items():
        print(f"  {kind:<14} " + ", ".join(f"{o} {n}" for o, n in outcomes.items()))
    print("journeys:")
    for kind, outcomes in r["journeys"].items():
        print(f"  {kind:<20} " + ", ".join(f"{o}: {n}" for o, n in outcomes.items()))
    print(f"kills: {r['kills_total']} ({', '.join(f'{k} {n}' for k, n in r['kills'].items())})")
    print("restarts: " + (", ".join(f"{x['what']} at {x['at_s']} s" for x in r["restarts"]) or "none"))
    print(f"webhook events answered 2xx (acknowledged): {r['webhook_events_acknowledged']}")
    print(f"5xx or failed connections outside kill windows: {r['errors_outside_kill_windows'] or 'none'}")
    print(f"settled: in {r['settle_seconds']} s" if r["settled"] else "settled: NO (timed out)")
    for name, lat in r["latency"].items():
        print(
            f"{name} latency outside kill windows: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms "
            f"(n={lat['n']}, {lat['left_out']} left out)"
        )
    print(f"load average before {r['load_average']['before']}, after {r['load_average']['after']}")
    print(f"check_invariants (exit {r['invariants']['exit']}): {r['invariants']['summary']}")
    for line in r["invariants"]["lines"]:
        print(f"  {line}")
    print(
        f"self-service requests promised an answer: {r['self_service_promised']}, "
        f"never answered: {len(r['self_service_unanswered'])} {r['self_service_unanswered'][:10]}"
    )
    print(f"violations: {r['violations']}")
