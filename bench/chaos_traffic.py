"""The chaos run's clients (bench/chaos.py): people and Stripe, talking HTTP to the proxy.

Each client does what its real counterpart does, through the same pages and endpoints:

- `Customer.checkout()`: the checkout page and its script (static/js/checkout.js) with
  localstripe's fake Stripe.js (createToken, and the 3-D Secure dialog of confirmCardPayment);
  after a lost or garbled answer it looks at the order first and resubmits the same checkout
  (same reference cookie) only when the order does not exist, as the page does.
- `Redeliverer`: Stripe re-sending events it already sent (duplicates, batches in reverse
  order), signed with the endpoint's secret; every event id answered 2xx is kept for
  `check_invariants --acknowledged`.
- `Customer.self_service()`: the "charged but no access?" page.
- `Staff`: a support person in the console: password, authenticator code, resend access email,
  partial and full refunds (a large one asks for a fresh code, typed like a person would).

Every HTTP request is counted in the `Recorder` by kind and outcome with its start and end, so
that the report can leave out what overlapped a kill window.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter

PAYS, DECLINES, THREE_DS = "4242424242424242", "4000000000000341", "4000002500003155"
REFERENCE_RE = re.compile(r'class="reference">(PU-[A-Z0-9]{6})<')
ORDER_LINK_RE = re.compile(r'href="/admin/billing/order/([0-9a-f-]{36})/change/')
TIMEOUT = 30  # the page's own limit is 60 s; a killed node answers 502 from the proxy well before
ERRORS = (requests.RequestException, ValueError)


@dataclass
class Recorder:
    """What happened, from every thread: requests (kind, outcome, start, end), journeys (kind,
    outcome), kill windows (start, end), the emails that paid and the event ids answered 2xx."""

    requests: list = field(default_factory=list)
    journeys: Counter = field(default_factory=Counter)
    windows: list = field(default_factory=list)
    paid_emails: list = field(default_factory=list)
    acked: set = field(default_factory=set)
    promised: dict = field(default_factory=dict)  # email -> when the self-service page said "we're on it"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, kind: str, outcome: str, start: float, end: float) -> None:
        with self.lock:
            self.requests.append((kind, outcome, start, end))

    def journey(self, kind: str, outcome: str) -> None:
        with self.lock:
            self.journeys[(kind, outcome)] += 1

    def paid(self, email: str) -> None:
        with self.lock:
            self.paid_emails.append(email)


def outcome_of(response: requests.Response | None) -> str:
    return "connection error" if response is None else f"{response.status_code // 100}xx"


class SourceAdapter(HTTPAdapter):
    """Connections from one loopback address (127.0.0.x): each customer is their own client
    address for the proxy, as on the internet, so per-address rate limits count people."""

    def __init__(self, address: str):
        self.address = address
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        return super().init_poolmanager(*args, **kwargs)


def session_from(address: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", SourceAdapter(address))
    return session


class FormFields(HTMLParser):
    """name -> value of a page's inputs and textareas (the first form's, or all: `all_forms`)."""

    def __init__(self):
        super().__init__()
        self.fields: dict[str, str] = {}
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("name") and a.get("type") not in ("checkbox", "submit"):
            self.fields.setdefault(a["name"], a.get("value") or "")
        elif tag == "textarea" and a.get("name"):
            self._textarea = a["name"]
            self.fields.setdefault(a["name"], "")

    def handle_data(self, data):
        if self._textarea:
            self.fields[self._textarea] += data

    def handle_endtag(self, tag):
        if tag == "textarea":
            self._textarea = None


def form_fields(html: str) -> dict[str, str]:
    parser = FormFields()
    parser.feed(html)
    return parser.fields


@dataclass
class Site:
    """Where the clients go: the proxy, localstripe, the keys the page and Stripe use."""

    url: str
    stripe: str
    publishable_key: str
    webhook_path: str
    webhook_secret: str
    secret_key: str


class Client:
    """A person's browser: one session from one address; every request recorded."""

    kind = "?"

    def __init__(self, site: Site, rec: Recorder, address: str = "127.0.0.1"):
        self.site, self.rec = site, rec
        self.session = session_from(address)

    def call(self, method: str, url: str, kind: str | None = None, **kwargs) -> requests.Response | None:
        """One request; None when the connection failed (a killed node, the proxy's timeout)."""
        start = time.monotonic()
        response = None
        try:
            response = self.session.request(method, url, timeout=TIMEOUT, allow_redirects=False, **kwargs)
        except requests.RequestException:
            pass
        self.rec.request(kind or self.kind, outcome_of(response), start, time.monotonic())
        return response


class Customer(Client):
    kind = "checkout"

    def open_checkout(self) -> tuple[str, dict] | None:
        """GET /checkout/ until it answers (a person reloads a page that failed), at most 5 times."""
        for attempt in range(5):
            page = self.call("GET", f"{self.site.url}/checkout/", kind="checkout page")
            if page is not None and page.status_code == 200 and (found := REFERENCE_RE.search(page.text)):
                fields = form_fields(page.text)
                keep = ("csrfmiddlewaretoken", "checkout_ref", "plan", "payment_method", "email_checked")
                return found.group(1), {name: fields.get(name, "") for name in keep}
            time.sleep(1 + attempt)
        return None

    def token(self, card: str) -> str | None:
        """The fake Stripe.js createToken(): form data with the publishable key, to localstripe."""
        body = {"card[number]": card, "card[exp_month]": "12", "card[exp_year]": "2034", "card[cvc]": "123"}
        body |= {"key": self.site.publishable_key, "payment_user_agent": "localstripe"}
        response = self.call("POST", f"{self.site.stripe}/v1/tokens", kind="stripe.js", data=body)
        try:
            return response.json()["id"] if response is not None and response.status_code == 200 else None
        except ERRORS + (KeyError,):
            return None

    def order_exists(self, reference: str) -> bool | None:
        response = self.call("GET", f"{self.site.url}/orders/{reference}/", kind="order page", headers=JSON)
        if response is None:
            return None
        return False if response.status_code == 404 else (True if response.ok else None)

    def after_uncertain(self, reference: str) -> bool:
        """The page after a lost answer: True when the order exists (go there), False when it is
        twice not there (nothing reached the bank: press Pay again). Gives up after ~60 s."""
        missing = 0
        for attempt in range(20):
            exists = self.order_exists(reference)
            if exists:
                return True
            if exists is False:
                missing += 1
                if missing >= 2:
                    return False
            time.sleep(min(1.5 * (attempt + 1), 8) if exists is None else 1.5)
        return True  # still can't tell: the customer keeps the order page's link and stops

    def checkout(self, email: str, card: str, rng: random.Random) -> str:
        """One customer's whole checkout; returns its outcome ("paid", "declined", ...)."""
        opened = self.open_checkout()
        if opened is None:
            return "checkout page unreachable"
        reference, fields = opened
        fields["email"] = email
        for _ in range(6):  # Pay pressed again after "you have not been charged"
            tok = self.token(card)
            if tok is None:
                time.sleep(1)
                continue
            start = time.monotonic()
            data = {**fields, "payment_method": tok}
            response = self.call("POST", f"{self.site.url}/checkout/", data=data, headers=JSON)
            data = _json(response)
            if data is None:
                if self.after_uncertain(reference):
                    return self.follow(reference, None, "order made (after a lost answer)")
                continue
            self.rec.request("checkout latency", "answered", start, time.monotonic())
            if data.get("email_suggestion") or data.get("access"):
                fields["email_checked"] = email  # keep what was typed and press Pay again
                continue
            if data.get("requires_action"):
                passed = rng.random() < 0.8
                self.authenticate(data["client_secret"], passed)
                outcome = "3-D Secure passed" if passed else "3-D Secure failed"
                return self.follow(reference, data.get("redirect"), outcome)
            if data.get("redirect"):
                return self.follow(reference, data["redirect"], "paid")
            if response.status_code == 402:
                if card == DECLINES and rng.random() < 0.3:
                    card = PAYS  # "You can try another card."
                    continue
                return "declined"
            time.sleep(1)  # 503 "try again", 429, a form error: the customer tries again
        return "gave up"

    def authenticate(self, client_secret: str, success: bool) -> None:
        """The fake Stripe.js confirmCardPayment(): the dialog's "Complete" / "Fail authentication"."""
        pi = client_secret.split("_secret_")[0]
        for _ in range(3):
            response = self.call(
                "POST",
                f"{self.site.stripe}/v1/payment_intents/{pi}/_authenticate",
                kind="stripe.js",
                params={"success": "true" if success else "false"},
                data=json.dumps({"key": self.site.publishable_key, "client_secret": client_secret}),
            )
            if response is not None and response.status_code < 500:
                return
            time.sleep(1)

    def follow(self, reference: str, url: str | None, outcome: str) -> str:
        """window.location.assign(url): the order page, reloaded until it answers (a few times)."""
        url = urljoin(self.site.url, url or f"/orders/{reference}/")
        for _ in range(5):
            response = self.call("GET", url, kind="order page")
            if response is not None and response.status_code == 200:
                return outcome
            time.sleep(1)
        return outcome + ", order page unreachable"

    def self_service(self, email: str, last4: str = "") -> str:
        """The "charged but no access?" page: GET (CSRF), POST the email (and maybe last four)."""
        self.kind = "self-service"
        page = self.call("GET", f"{self.site.url}/help/charged/")
        if page is None or page.status_code != 200:
            return "page unreachable"
        fields = form_fields(page.text)
        data = {"csrfmiddlewaretoken": fields.get("csrfmiddlewaretoken", ""), "email": email, "card_last4": last4}
        response = self.call("POST", f"{self.site.url}/help/charged/", data={**data, "paid_on": ""})
        if response is None:
            return "connection error"
        return {200: "received", 429: "limited"}.get(response.status_code, f"HTTP {response.status_code}")


JSON = {"Accept": "application/json"}


def _json(response: requests.Response | None) -> dict | None:
    if response is None:
        return None
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# --- Stripe's side: re-deliveries ---------------------------------------------------------------


def signature(payload: bytes, secret: str) -> str:
    """Stripe's scheme: t=<unix time>,v1=HMAC-SHA256(secret, "<t>.<body>")."""
    t = int(time.time())
    return f"t={t},v1={hmac.new(secret.encode(), f'{t}.'.encode() + payload, hashlib.sha256).hexdigest()}"


class Redeliverer(Client):
    """Stripe delivering again: events localstripe recorded, some twice, some batches reversed."""

    kind = "webhook"

    def __init__(self, site: Site, rec: Recorder):
        super().__init__(site, rec)
        self.seen: set[str] = set()
        self.since = int(time.time()) - 5

    def new_events(self) -> list[dict]:
        response = self.call(
            "GET",
            f"{self.site.stripe}/v1/events",
            kind="stripe api",
            params={"limit": 100, "created[gte]": self.since},
            auth=(self.site.secret_key, ""),
        )
        data = _json(response) or {}
        events = [e for e in data.get("data", []) if e.get("id") not in self.seen]
        self.seen.update(e["id"] for e in events)
        if events:  # the overlap keeps events of the same second; `seen` drops the repeats
            self.since = max(e.get("created", self.since) for e in events)
        return events

    def deliver(self, event: dict) -> None:
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/json", "Stripe-Signature": signature(body, self.site.webhook_secret)}
        start = time.monotonic()
        response = self.call("POST", self.site.url + self.site.webhook_path, data=body, headers=headers)
        if response is not None and 200 <= response.status_code < 300:
            self.rec.request("webhook latency", "2xx", start, time.monotonic())
            with self.rec.lock:
                self.rec.acked.add(event["id"])

    def round(self, rng: random.Random) -> int:
        """One batch of what is new: maybe reversed, each event maybe twice. Returns how many."""
        events = self.new_events()
        if rng.random() < 0.4:
            events.reverse()
        for event in events:
            self.deliver(event)
            if rng.random() < 0.3:
                self.deliver(event)
        return len(events)


# --- the support person ---------------------------------------------------------------------


def totp(key_hex: str, step: int) -> str:
    """RFC 6238 as django-otp's TOTPDevice computes it (SHA-1, 6 digits, 30 s steps from t0 = 0)."""
    digest = hmac.new(bytes.fromhex(key_hex), struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    return f"{(struct.unpack('>I', digest[offset : offset + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


class Staff(Client):
    """A support person in the console: signs in with password + code, resends and refunds."""

    kind = "admin"

    def __init__(self, site: Site, rec: Recorder, email: str, password: str, key_hex: str):
        super().__init__(site, rec)
        self.email, self.password, self.key_hex = email, password, key_hex
        self.last_step = -1

    def code(self) -> str:
        """The app's code now; django-otp takes each step once (and one either side), so a person
        who just typed one waits for the next."""
        while True:
            now = int(time.time()) // 30
            step = max(now, self.last_step + 1)
            if step <= now + 1:
                self.last_step = step
                return totp(self.key_hex, step)
            time.sleep(2)

    def page(self, path: str) -> requests.Response | None:
        """GET a console page, signing in first when it sends us to sign-in or to the code page."""
        for _ in range(4):
            response = self.call("GET", urljoin(self.site.url, path))
            if response is None or response.status_code >= 500:
                time.sleep(1)
                continue
            where = response.headers.get("Location", "")
            if response.status_code == 302 and "/admin/login/" in where:
                self.sign_in()
            elif response.status_code == 302 and "/admin/confirm/" in where:
                self.confirm(where)
            else:
                return response
        return None

    def sign_in(self) -> bool:
        login = self.call("GET", f"{self.site.url}/admin/login/")
        if login is None or login.status_code != 200:
            return False
        data = {"csrfmiddlewaretoken": form_fields(login.text).get("csrfmiddlewaretoken", "")}
        data |= {"username": self.email, "password": self.password, "next": "/admin/"}
        response = self.call("POST", f"{self.site.url}/admin/login/", data=data)
        if response is None or response.status_code != 302:
            return False
        return self.confirm(response.headers.get("Location", "/admin/confirm/")) is not None

    def confirm(self, where: str) -> str | None:
        """ "Confirm it's you": one code from the app. Where the page sends us next, or None."""
        page = self.call("GET", urljoin(self.site.url, where))
        if page is None or page.status_code != 200 or "id_code" not in page.text:
            return None
        data = {**form_fields(page.text), "code": self.code()}
        response = self.call("POST", urljoin(self.site.url, where), data=data)
        if response is None or response.status_code != 302:
            return None
        return response.headers.get("Location", "/admin/")

    def order_pk(self, email: str) -> str | None:
        response = self.page(f"/admin/billing/order/?q={requests.utils.quote(email)}")
        found = ORDER_LINK_RE.search(response.text) if response is not None and response.status_code == 200 else None
        return found.group(1) if found else None

    def resend(self, email: str) -> str:
        pk = self.order_pk(email)
        if pk is None:
            return "order not found"
        path = f"/admin/billing/order/{pk}/act/resend/"
        form = self.page(path)
        if form is None or form.status_code != 200:
            return "action page unreachable"
        response = self.call("POST", urljoin(self.site.url, path), data=form_fields(form.text))
        return _done(response)

    def refund(self, email: str, full: bool) -> str:
        """Refund part ($10.00) or all of the order; a full one usually asks for a fresh code."""
        pk = self.order_pk(email)
        if pk is None:
            return "order not found"
        path = f"/admin/billing/order/{pk}/act/refund/"
        form = self.page(path)
        if form is None or form.status_code != 200 or "id_amount" not in form.text:
            return "not refundable" if form is not None and form.status_code == 200 else "action page unreachable"
        data = form_fields(form.text)
        if not full:
            data["amount"] = "10"
        data["reason"] = "Chaos run: " + ("full refund asked by the customer" if full else "goodwill, slow access")
        question = self.call("POST", urljoin(self.site.url, path), data=data)
        if question is None or question.status_code != 200 or "pu-question" not in question.text:
            return _done(question, "question")
        response = self.call("POST", urljoin(self.site.url, path), data=form_fields(question.text))
        where = response.headers.get("Location", "") if response is not None else ""
        if response is not None and response.status_code == 302 and "/admin/confirm/" in where:
            back = self.confirm(where)  # a fresh code, then the same question again, one click
            if back is None:
                return "fresh code refused"
            again = self.page(back)
            if again is None or again.status_code != 200 or "pu-question" not in again.text:
                return _done(again, "resumed question")
            response = self.call("POST", urljoin(self.site.url, path), data=form_fields(again.text))
            return "refunded after a fresh code" if _done(response) == "done" else _done(response)
        return "refunded" if _done(response) == "done" else _done(response)


def _done(response: requests.Response | None, step: str = "") -> str:
    """A console action's answer: a redirect to the order is done; 400 is "did nothing" (its reason)."""
    if response is None:
        return f"connection error {step}".strip()
    if response.status_code == 302 and "/change/" in response.headers.get("Location", ""):
        return "done"
    if response.status_code == 400:
        return "refused"
    return f"HTTP {response.status_code} {step}".strip()
