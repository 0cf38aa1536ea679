"""What bench/webhook_backlog.py reads back from the database, checks, and prints."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from bench.harness import Delivery, ms, percentile, rate

TITLES = {"paidup": "PaidUp", "stock": "stock dj-stripe"}
EFFECT = {"paidup": "order fulfilled", "stock": "PaymentIntent mirrored"}


@dataclass
class Variant:
    """One backlog: its orders, their PaymentIntents and events (in delivery order), and what happened."""

    name: str
    server: tuple[int, int]  # gunicorn workers, threads
    orders: list
    payment_intents: list[dict]
    event_ids: list[str]
    bodies: list[bytes]
    duplicate_indexes: list[int]
    run: int = 1  # the same server configuration may be measured more than once, alternating variants
    first: list[Delivery | None] = field(default_factory=list)
    dups: list[Delivery | None] = field(default_factory=list)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # phase -> label -> cores
    before_dups: dict = field(default_factory=dict)
    after_dups: dict = field(default_factory=dict)
    trigger_ids: tuple[int, int] = (0, 0)
    stripe_calls: int = 0
    effects: dict[int, float] = field(default_factory=dict)  # event index -> wall time of the committed effect

    @property
    def server_name(self) -> str:
        return f"{self.server[0]}x{self.server[1]}" + (f"#{self.run}" if self.run > 1 else "")

    @property
    def label(self) -> str:
        return f"{self.name}-{self.server_name}"

    @property
    def title(self) -> str:
        return f"{TITLES[self.name]}, gunicorn {self.server_name}"


# --- what the database says -------------------------------------------------------------


def snapshot(v: Variant) -> dict:
    """Everything a duplicate must not change (the inbox's own trigger rows aside)."""
    from django.db.models import Count, Max
    from django_q.models import OrmQ
    from djstripe import models as dj

    from accounts.models import User
    from billing.models import Order, OrderEvent, OutboundEmail, Subscription

    orders = Order.objects.filter(pk__in=[o.pk for o in v.orders])
    mirror = dj.PaymentIntent.objects.filter(id__in=[pi["id"] for pi in v.payment_intents])
    return {
        "order states": dict(orders.values_list("state").annotate(Count("pk")).order_by()),
        "orders last updated": str(orders.aggregate(m=Max("updated_at"))["m"]),
        "subscriptions": Subscription.objects.count(),
        "outbound emails": OutboundEmail.objects.count(),
        "order events": OrderEvent.objects.count(),
        "users": User.objects.count(),
        "queued tasks": OrmQ.objects.count(),
        "stripe events": dj.Event.objects.count(),
        "mirrored PaymentIntents": dj.PaymentIntent.objects.count(),
        "mirror last updated": str(mirror.aggregate(m=Max("djstripe_updated"))["m"]),
        "customers": dj.Customer.objects.count(),
        "payment methods": dj.PaymentMethod.objects.count(),
    }


def last_trigger_id() -> int:
    from djstripe.models import WebhookEventTrigger

    return WebhookEventTrigger.objects.order_by("-id").values_list("id", flat=True).first() or 0


def read_effects(v: Variant) -> None:
    """When each event's effect was committed: the order's fulfilled_at (set inside the webhook's
    transaction), or the mirror row's creation time for stock dj-stripe."""
    from djstripe.models import PaymentIntent

    from billing.models import Order

    if v.name == "paidup":
        fulfilled = dict(Order.objects.filter(pk__in=[o.pk for o in v.orders]).values_list("pk", "fulfilled_at"))
        times = [fulfilled.get(o.pk) for o in v.orders]
    else:
        ids = [pi["id"] for pi in v.payment_intents]
        mirrored = dict(PaymentIntent.objects.filter(id__in=ids).values_list("id", "djstripe_created"))
        times = [mirrored.get(i) for i in ids]
    v.effects = {i: t.timestamp() for i, t in enumerate(times) if t is not None}


def checks(v: Variant) -> list[tuple[str, bool, str]]:
    from django.db.models import Count
    from djstripe import models as dj

    from billing.models import Order, OrderEvent, OutboundEmail, Subscription

    n, d = len(v.orders), len(v.duplicate_indexes)
    order_ids = [o.pk for o in v.orders]
    out: list[tuple[str, bool, str]] = []

    def check(what: str, ok: bool, detail: str = "") -> None:
        out.append((what, bool(ok), detail))

    for phase, results in (("first deliveries", v.first), ("duplicates", v.dups)):
        statuses = [r.status if r else "not sent" for r in results]
        bad = [s for s in statuses if not (isinstance(s, int) and 200 <= s < 300)]
        five = sum(isinstance(s, int) and s >= 500 for s in statuses)
        check(f"{phase}: every one answered 2xx, no 5xx", not bad, f"{five} × 5xx; {sorted(set(map(str, bad)))}")
    lo, hi = v.trigger_ids
    triggers = dj.WebhookEventTrigger.objects.filter(id__gt=lo, id__lte=hi)
    good = triggers.filter(valid=True, processed=True, exception="").count()
    check("inbox: every delivery stored, valid and processed", good == triggers.count() == n + d, f"{good}/{n + d}")
    check("duplicates changed nothing", v.before_dups == v.after_dups, _diff(v.before_dups, v.after_dups))
    orders = Order.objects.filter(pk__in=order_ids)
    mirrored = dj.PaymentIntent.objects.filter(id__in=[pi["id"] for pi in v.payment_intents])
    if v.name == "paidup":
        done = orders.filter(state=Order.State.FULFILLED, fulfilled_via=Order.Via.WEBHOOK).count()
        check("every order fulfilled, via the webhook", done == n, f"{done}/{n}")
        subs = Subscription.objects.filter(order__in=order_ids)
        check("one subscription per order", subs.values("order").distinct().count() == subs.count() == n)
        access = OutboundEmail.objects.filter(order__in=order_ids, kind__in=OutboundEmail.ACCESS_KINDS)
        once = access.values("order").annotate(c=Count("pk")).filter(c=1).count()
        check("one access email per order", once == access.count() == n, f"{access.count()} emails")
        moves = OrderEvent.objects.filter(order__in=order_ids, kind="state:fulfilled").count()
        check("one 'fulfilled' timeline entry per order", moves == n, f"{moves}")
        check("dj-stripe's mirror stayed off (PaidUp's configuration ran)", not mirrored.exists())
    else:
        events = dj.Event.objects.filter(id__in=v.event_ids).count()
        check("one dj-stripe Event per event id", events == n, f"{events}/{n}")
        ok = sum(pi.stripe_data.get("status") == "succeeded" for pi in mirrored)
        check("every PaymentIntent mirrored, status succeeded", ok == n, f"{ok}/{n}")
        untouched = orders.filter(state=Order.State.PENDING).count()
        check("no order touched (PaidUp's receivers were off)", untouched == n, f"{untouched}/{n} pending")
    return out


def _diff(a: dict, b: dict) -> str:
    return "; ".join(f"{k}: {a.get(k)} → {b.get(k)}" for k in a if a.get(k) != b.get(k))


# --- the report -------------------------------------------------------------------------


def figures(v: Variant) -> list[dict]:
    rows = []
    for phase, results in (("first delivery", v.first), ("duplicates", v.dups)):
        sent = [r for r in results if r]
        ok = [r for r in sent if r.status and 200 <= r.status < 300]
        five = sum(bool(r.status and r.status >= 500) for r in sent)
        start = min((r.sent for r in sent), default=0.0)
        row = {
            "variant": v.name,
            "server": v.server_name,
            "phase": phase,
            "events": len(results),
            "5xx": five,
            "other": len(results) - len(ok) - five,
            "rate_2xx": rate(len(ok), start, max((r.done for r in sent), default=0.0)),
            "p50_2xx": percentile([r.latency for r in ok], 50),
            "p99_2xx": percentile([r.latency for r in ok], 99),
            "max_2xx": max((r.latency for r in ok), default=math.nan),
            "rate_effect": math.nan,
            "p50_effect": math.nan,
            "p99_effect": math.nan,
            "cpu_cores": v.cpu.get(phase, {}),
            "noise": v.cpu.get(phase, {}).get("other processes", math.nan),
        }
        if phase == "first delivery":
            waits = [v.effects[i] - r.sent for i, r in enumerate(results) if r and i in v.effects]
            row["rate_effect"] = rate(len(waits), start, max(v.effects.values(), default=0.0))
            row["p50_effect"], row["p99_effect"] = percentile(waits, 50), percentile(waits, 99)
        rows.append(row)
    return rows


NOISY = 0.2  # cores used by other people's processes above which a phase's numbers are skewed


def per_s(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1f}"


def noisy(row: dict) -> bool:
    return not row["noise"] <= NOISY  # NaN (not measured) counts as noisy


def skewed(*rows: dict) -> str:
    return "  (skewed: other processes were busy, see noise)" if any(noisy(r) for r in rows) else ""


def print_report(args, variants: list[Variant], rows: list[dict], all_checks: dict, setup_s: float, code: str) -> bool:
    """The table, the targets, the checks. Returns whether every check passed."""
    cores = os.cpu_count() or 1
    print()
    print(f"code: {code}")
    print(
        f"Webhook backlog: N={args.events} per variant, {args.duplicates:.0%} delivered twice, "
        f"{args.concurrency} connections, CONN_MAX_AGE={args.conn_max_age}; {cores} CPU cores; setup {setup_s:.0f} s"
    )
    if getattr(args, "proxy", False):
        print(
            "through haproxy (deploy/haproxy/haproxy.cfg) to two gunicorn nodes of the size shown, "
            "each its own process group (--proxy)"
        )
    if args.stripe_latency_ms:
        print(f"localstripe answered every API call {args.stripe_latency_ms:.0f} ms late (--stripe-latency-ms)")
    print(
        "server WxT[#run] = gunicorn workers × threads per worker; non-2xx = 4xx or no answer; effect = the "
        f"event's effect committed;\nnoise = cores other people's processes used meanwhile (of {cores}): "
        f"above {NOISY} the row is skewed by them (marked *)"
    )
    head = (
        f"{'':16} {'server':>7} {'phase':15} {'events':>6} {'5xx':>4} {'non-2xx':>7} {'noise':>6} │ {'2xx/s':>6} "
        f"{'p50':>8} {'p99':>8} {'max':>8} │ {'effect/s':>8} {'p50':>8} {'p99':>8}  effect"
    )
    print(head)
    print("─" * len(head))
    for r in rows:
        effect = EFFECT[r["variant"]] if r["phase"] == "first delivery" else "none expected"
        print(
            f"{TITLES[r['variant']]:16} {r['server']:>7} {r['phase']:15} {r['events']:>6} {r['5xx']:>4} "
            f"{r['other']:>7} {r['noise']:>5.2f}{'*' if noisy(r) else ' '} │ {per_s(r['rate_2xx']):>6} "
            f"{ms(r['p50_2xx']):>8} {ms(r['p99_2xx']):>8} "
            f"{ms(r['max_2xx']):>8} │ {per_s(r['rate_effect']):>8} {ms(r['p50_effect']):>8} "
            f"{ms(r['p99_effect']):>8}  {effect}"
        )
    print(f"\nCPU during each phase: cores in use on average (the machine has {cores}), then ours per event")
    for r in rows:
        used = r["cpu_cores"]
        parts = ", ".join(f"{label} {c:.2f}" for label, c in sorted(used.items()))
        print(f"  {TITLES[r['variant']]:16} {r['server']:>7} {r['phase']:15} {parts}")
        ours = {label: c / r["rate_2xx"] * 1000 for label, c in used.items() if label != "other processes"}
        if ours and not math.isnan(r["rate_2xx"]):
            total = sum(ours.values())
            r["cpu_ms_per_event"] = ours
            per = ", ".join(f"{label} {v:.1f}" for label, v in sorted(ours.items()))
            print(f"  {'':40} ms/event: {per}; total {total:.1f} → ~{cores * 1000 / total:.0f}/s on idle cores")
    for v in variants:
        if v.name == "stock":
            calls = v.stripe_calls / max(1, len(v.bodies))
            print(f"{v.title} called the Stripe API {calls:.1f} times per first delivery (localstripe's log)")
    by = {(r["variant"], r["server"], r["phase"]): r for r in rows}
    print()
    for server in dict.fromkeys(r["server"] for r in rows):
        paidup, stock = by.get(("paidup", server, "first delivery")), by.get(("stock", server, "first delivery"))
        if paidup and stock:
            ratio = paidup["rate_2xx"] / stock["rate_2xx"]
            verdict = ("met" if ratio >= 2 else "NOT MET") + skewed(paidup, stock)
            print(f"target  {server}: PaidUp ≥ 2× stock's first-delivery rate: {ratio:.2f}×  {verdict}")
            if "cpu_ms_per_event" in paidup and "cpu_ms_per_event" in stock:
                mine, theirs = sum(paidup["cpu_ms_per_event"].values()), sum(stock["cpu_ms_per_event"].values())
                print(
                    f"        {server}: our CPU per first delivery, stock {theirs:.1f} ms / PaidUp {mine:.1f} ms = "
                    f"{theirs / mine:.2f}× (the rate ratio if both were CPU-bound on idle cores)"
                )
        for phase in ("first delivery", "duplicates"):
            if r := by.get(("paidup", server, phase)):
                worst = max(r["p99_2xx"], 0 if math.isnan(r["p99_effect"]) else r["p99_effect"])
                verdict = ("met" if worst < 1 else "NOT MET") + skewed(r)
                print(f"target  {server}: PaidUp p99 under 1 s ({phase}): {ms(worst)}  {verdict}")
    ok = True
    for title, results in all_checks.items():
        print(f"\nchecks, {title}:")
        for what, passed, detail in results:
            ok &= passed
            print(f"  {'ok  ' if passed else 'FAIL'} {what}" + (f"  ({detail})" if detail and not passed else ""))
    return ok
