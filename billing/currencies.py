"""Currencies PaidUp can sell in, and a price typed by a person turned into minor units.

- STRIPE_CURRENCIES: the presentment currencies Stripe lists at https://docs.stripe.com/currencies
  (lowercase ISO 4217, as Stripe's API wants them).
- Minor units: Stripe's rule, kept once in `billing.money.minor_unit_exponent`.
"""

import re
from decimal import Decimal

from .money import minor_unit_exponent, stripe_amount_problem

STRIPE_CURRENCIES = frozenset(
    """
    usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd bwp byn
    bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd gnf
    gtq gyd hkd hnl htg huf idr ils inr isk jmd jod jpy kes kgs khr kmf krw kwd kyd kzt lak lbp lkr
    lrd lsl mad mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd omr pab pen
    pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sek sgd shp sle sos srd std szl thb tjs tnd
    top try ttd twd tzs uah ugx uyu uzs vnd vuv wst xaf xcd xof xpf yer zar zmw
    """.split()
)
# Stripe's largest amount for one charge in most currencies: 99,999,999 minor units (8 digits).
MAX_MINOR_UNITS = 99_999_999
PRICE_RE = re.compile(r"^\d+(\.\d+)?$")


class PriceError(ValueError):
    """A price or currency PaidUp cannot sell at; the message says why, for the operator."""


def clean_currency(code: str) -> str:
    """The currency as Stripe's API wants it ("USD " -> "usd"). Raises PriceError when Stripe does
    not charge in it (STRIPE_CURRENCIES, from Stripe's list of supported currencies)."""
    currency = (code or "").strip().lower()
    if currency not in STRIPE_CURRENCIES:
        raise PriceError(f"{code!r} is not a currency Stripe charges in (use an ISO code such as usd, eur, jpy).")
    return currency


def minor_units(currency: str) -> int:
    """Digits after the decimal point in `currency`'s amounts as Stripe counts them (0, 2 or 3)."""
    return minor_unit_exponent(clean_currency(currency))


def parse_price(text: str, currency: str) -> int:
    """A price typed in the currency ("249", "249.00", "249.5") -> integer minor units (24900).

    Zero-decimal currencies take whole amounts only ("3000" JPY -> 3000). Raises PriceError for
    anything else: empty, zero, negative, separators ("1,249" is ambiguous: 1249 or 1.249?),
    exponents, more decimals than the currency has, or more than Stripe's 99,999,999 minor units.
    """
    digits = minor_units(currency)
    value = (text or "").strip()
    if not PRICE_RE.match(value):
        raise PriceError(
            f"{text!r} is not a price. Write the amount in {currency.upper()} with a dot for decimals "
            "and no separators, e.g. 249 or 249.00."
        )
    amount = Decimal(value)
    if -amount.as_tuple().exponent > digits:
        shown = "no decimals" if digits == 0 else f"at most {digits} decimals"
        raise PriceError(f"{text!r} has too many decimals: {currency.upper()} amounts have {shown}.")
    minor = int(amount.scaleb(digits))
    if minor <= 0:
        raise PriceError(f"A price must be more than zero, not {text!r}.")
    if minor > MAX_MINOR_UNITS:
        raise PriceError(f"{text!r} {currency.upper()} is more than Stripe accepts for one payment.")
    if problem := stripe_amount_problem(minor, currency):
        raise PriceError(problem)
    return minor


def parse_amount(text: str, currency: str) -> int:
    """An amount of money a support person typed in `currency`'s own units ("50", "50.00",
    " 50.5 " in usd; "500" in jpy) -> integer minor units as Stripe counts them (5000; 500).

    The console's refund form reads its amount here (support/admin_views.py); how many decimals a
    currency has is Stripe's rule (billing.money.minor_unit_exponent). Raises PriceError, with a
    sentence to show next to the field, for: empty or junk ("fifty", "1,000", "$50", "1e3"), a
    negative amount, zero, more decimals than the currency has (any for jpy), more than Stripe
    takes in one payment, and an amount Stripe refuses in that currency (ISK in whole units).
    Whether the amount fits what is left to refund is the caller's check (it needs the order).
    """
    code = clean_currency(currency).upper()
    value = (text or "").strip()
    if value.startswith("-") and PRICE_RE.match(value[1:].strip()):
        raise PriceError("A refund can't be negative. Type the amount to give back, for example 50.")
    if not PRICE_RE.match(value):
        example = "500" if minor_units(currency) == 0 else "50 or 50.00"
        raise PriceError(
            f"Type the amount in {code} as digits, with a dot before any decimals and no symbol or separators, "
            f"for example {example}."
        )
    if -Decimal(value).as_tuple().exponent > (digits := minor_units(currency)):
        shown = "no decimals" if digits == 0 else f"at most {digits} decimals"
        raise PriceError(f"{code} amounts have {shown}, so {value} can't be refunded exactly.")
    minor = int(Decimal(value).scaleb(digits))
    if minor <= 0:
        raise PriceError("The amount must be more than zero.")
    if minor > MAX_MINOR_UNITS:
        raise PriceError(f"{value} {code} is more than Stripe handles in one payment.")
    if problem := stripe_amount_problem(minor, currency):
        raise PriceError(problem)
    return minor
