"""Issue 10 item 2: a likely misspelt email domain is asked about before the charge.

The function (billing/email_typos.py), the endpoint the page script asks as you type, and the
checkout POST (the server's own question, the same for the page script and for no script).
Offline: the function is string work only, so nothing here can reach DNS.
"""

import pytest

from billing.email_typos import suggest, suggest_domain
from billing.models import Order
from tests.fixtures.services import CARD, cookie_reference

JSON = {"HTTP_ACCEPT": "application/json"}

SUGGESTED = {
    "ana@gmial.com": "ana@gmail.com",  # two letters swapped: one edit
    "ana@gmal.com": "ana@gmail.com",
    "ana@gnail.com": "ana@gmail.com",
    "ana@gmail.con": "ana@gmail.com",
    "ana@hotmial.com": "ana@hotmail.com",
    "ana@yaho.com": "ana@yahoo.com",
    "ana@outlok.com": "ana@outlook.com",
    "ana@icloud.co": "ana@icloud.com",
    "ana@hotmial.co.uk": "ana@hotmail.co.uk",
    "ana@gmail.co": "ana@gmail.com",
    "ana@company.con": "ana@company.com",  # an unknown domain with a slipped ending
    "Ana.Lovelace+pro@GMIAL.COM": "Ana.Lovelace+pro@gmail.com",  # the part before @ as typed
}
LEFT_ALONE = [
    "ana@gmail.com",
    "ana@mail.com",  # real, one edit from gmail.com
    "ana@gmx.de",
    "ana@live.fr",
    "ana@example.com",
    "ana@exmaple.com",  # not a mail provider we know: we don't guess
    "ana@uni-heidelberg.de",
    "ana@bt.com",
    "",
    "ana",
    "@gmial.com",
    "ana@",
    "ana@gmial",
    "ana@" + "g" * 300 + ".com",
]


@pytest.mark.parametrize("typed", SUGGESTED)
def test_it_suggests_the_likely_address(typed):
    assert suggest(typed) == SUGGESTED[typed]


@pytest.mark.parametrize("typed", LEFT_ALONE)
def test_it_leaves_right_unknown_and_broken_addresses_alone(typed):
    assert suggest(typed) is None


def test_a_suggestion_is_never_suggested_again():
    for typed, suggested in SUGGESTED.items():
        assert suggest(suggested) is None, typed


def test_it_never_raises_on_odd_input():
    for odd in [None, "@", "@@", "a@b@gmial.com", " ana@gmial.com ", "ana@gmial.com.", "\x00@\x00", "ü@gmäil.com"]:
        suggest(odd)
    assert suggest("a@b@gmial.com") == "a@b@gmail.com"
    assert suggest_domain("GMIAL.COM.") == "gmail.com"


# --- the endpoint the page script asks -------------------------------------------------------


def test_the_endpoint_answers_the_same_as_the_function(client):
    for typed, suggested in SUGGESTED.items():
        domain = typed.rpartition("@")[2]
        answer = client.get("/checkout/email-suggestion/", {"domain": domain}).json()
        assert answer == {"suggestion": suggested.rpartition("@")[2]}
    assert client.get("/checkout/email-suggestion/", {"domain": "gmail.com"}).json() == {"suggestion": None}


@pytest.mark.parametrize(
    "query", [{}, {"domain": ""}, {"domain": "x" * 5000}, {"domain": "<script>alert(1)</script>"}, {"domain": "a@b"}]
)
def test_the_endpoint_answers_null_to_bad_input_and_leaks_nothing(client, query):
    response = client.get("/checkout/email-suggestion/", query)
    assert response.status_code == 200 and response.json() == {"suggestion": None}
    assert response["Cache-Control"] == "no-store"


def test_the_endpoint_is_read_only(client):
    assert client.post("/checkout/email-suggestion/", {"domain": "gmial.com"}).status_code == 405


# --- the checkout asks before the charge -------------------------------------------------------


@pytest.fixture
def pay(client, plan, fake_stripe, django_capture_on_commit_callbacks):
    client.get("/checkout/")

    def _pay(**overrides):
        data = {"email": "ana@gmial.com", "payment_method": CARD, **overrides}
        headers = data.pop("headers", {})
        with django_capture_on_commit_callbacks(execute=True):
            return client.post("/checkout/", {k: v for k, v in data.items() if v is not None}, **headers)

    return _pay


def test_the_checkout_asks_before_charging_a_likely_typo(pay, fake_stripe, client):
    response = pay()
    assert response.status_code == 409
    html = response.content.decode()
    assert 'id="email-suggestion" class="notice info" role="status" >' in html
    assert 'Did you mean <strong id="suggested-email">ana@gmail.com</strong>?' in html
    assert 'value="suggested"' in html and 'value="typed"' in html and "Keep <span" in html
    assert '<button type="submit" class="secondary" name="email_choice" value="suggested"' in html  # works without JS
    assert not fake_stripe.created and not Order.objects.exists()


def test_with_nothing_to_ask_the_hidden_buttons_never_submit(client, plan):
    html = client.get("/checkout/").content.decode()
    assert 'id="email-suggestion" class="notice info" role="status" hidden' in html
    assert '<button type="button" class="secondary" name="email_choice" value="suggested"' in html


def test_the_page_script_gets_the_same_suggestion_in_json(pay, fake_stripe):
    response = pay(headers=JSON)
    assert response.status_code == 409
    assert response.json()["email_suggestion"] == {"typed": "ana@gmial.com", "suggested": "ana@gmail.com"}
    assert "Did you mean ana@gmail.com?" in response.json()["error"]
    assert not fake_stripe.created


def test_keeping_what_they_typed_pays_with_that_address(pay, fake_stripe, client):
    reference = cookie_reference(client)
    response = pay(email_checked="ana@gmial.com")
    assert response.status_code == 302
    assert Order.objects.get(reference=reference).email == "ana@gmial.com"
    assert len(fake_stripe.created) == 1


def test_a_corrected_address_pays_without_a_question(pay, fake_stripe, client):
    response = pay(email="ana@gmail.com")
    assert response.status_code == 302
    assert Order.objects.get(reference=cookie_reference(client)).email == "ana@gmail.com"


@pytest.mark.parametrize("answer", ["", "yes", "ana@gmail.com", "bob@gmial.com", "x" * 5000, "<b>ana@gmial.com</b>"])
def test_a_keep_answer_for_another_address_is_no_answer(pay, fake_stripe, answer):
    response = pay(email_checked=answer)
    assert response.status_code == 409 and "Did you mean" in response.content.decode()
    assert "<b>ana" not in response.content.decode()
    assert not fake_stripe.created and not Order.objects.exists()


def test_without_the_script_use_puts_the_suggestion_in_the_field(pay, fake_stripe):
    response = pay(email_choice="suggested", payment_method=None)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'value="ana@gmail.com"' in html and 'id="email_checked" value="ana@gmail.com"' in html
    assert 'id="email-suggestion" class="notice info" role="status" hidden' in html
    assert not fake_stripe.created and not Order.objects.exists()


def test_without_the_script_keep_keeps_the_typed_address_checked(pay, fake_stripe):
    response = pay(email_choice="typed", payment_method=None)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="email" name="email"' in html and 'value="ana@gmial.com"' in html
    assert 'id="email_checked" value="ana@gmial.com"' in html
    assert not fake_stripe.created and not Order.objects.exists()


@pytest.mark.parametrize("choice", ["suggested", "typed"])
def test_a_choice_with_a_broken_email_says_what_is_wrong_and_stores_nothing(pay, fake_stripe, choice):
    response = pay(email="ana@", email_choice=choice)
    assert response.status_code == 400
    assert "look like an email address" in response.content.decode()
    assert not fake_stripe.created and not Order.objects.exists()


def test_an_unknown_choice_is_an_ordinary_submit(pay, fake_stripe):
    response = pay(email_choice="<script>")
    assert response.status_code == 409 and "<script>" not in response.content.decode()
    assert not fake_stripe.created


@pytest.mark.parametrize(
    "domain",
    [
        "yahoo.co.jp",
        "yahoo.in",
        "yahoo.gr",
        "hotmail.nl",
        "hotmail.be",
        "yahoo.ca",
        "hotmail.ca",
        "proton.ch",
        "msn.co",
    ],
)
def test_a_real_domain_with_another_ending_is_never_corrected(domain):
    """A different ending is a different real domain: "correcting" yahoo.co.jp to yahoo.co.uk
    would send the customer's sign-in link to a stranger's mailbox (found by a newcomer)."""
    assert suggest_domain(domain) is None
