"""Money as Stripe counts it, shown one way.

An amount is an integer in the currency's minor unit *as Stripe counts it* plus a lowercase
ISO 4217 code. How many minor units make one major unit is Stripe's rule, not CLDR's
(https://docs.stripe.com/currencies#minor-units):

- zero-decimal currencies (the list below): the amount is whole units, 500 is ¥500;
- three-decimal currencies (bhd, jod, kwd, omr, tnd): thousandths, last digit 0;
- every other currency, ISK and UGX included: hundredths. ISK and UGX are zero-decimal in
  ISO 4217 and CLDR, but Stripe keeps them two-decimal for backwards compatibility and
  requires amounts divisible by 100 ("special cases" on the same page).

Babel (CLDR data) does the rest: symbols, grouping, the locale's pattern, and how many
decimals a person expects to see. CLDR's digits are not Stripe's for 11 Stripe currencies
(afn, all, isk, lak, lbp, mmk, rsd, sos, std, ugx, yer: CLDR 0, Stripe 2), so Babel never
decides what an amount means, only how it looks.
"""

from decimal import Decimal
from functools import lru_cache

from babel import Locale
from babel.numbers import get_currency_precision, get_currency_symbol, parse_pattern
from django.conf import settings
from django.utils.translation import to_locale

# https://docs.stripe.com/currencies#zero-decimal
STRIPE_ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "vnd", "vuv", "xaf", "xof", "xpf"}
)
# https://docs.stripe.com/currencies#three-decimal
STRIPE_THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})

NBSP = "\u00a0"


def minor_unit_exponent(currency: str) -> int:
    """Decimal places in a Stripe amount of `currency`: 0, 2 or 3 (Stripe's rule, module docstring).

    `currency` is an ISO 4217 code in any case. An unknown three-letter code gets 2, Stripe's
    default for any currency it does not list. Raises ValueError for anything that is not three
    ASCII letters (a programming error: every amount here comes from a Plan, an Order or Stripe).
    """
    code = (currency or "").strip().lower()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise ValueError(f"not a currency code: {currency!r}")
    if code in STRIPE_ZERO_DECIMAL:
        return 0
    if code in STRIPE_THREE_DECIMAL:
        return 3
    return 2


def to_major(amount: int, currency: str) -> Decimal:
    """The amount in major units, exactly: `to_major(24900, "usd") == Decimal("249.00")`,
    `to_major(24900, "jpy") == Decimal("24900")`. Raises ValueError like minor_unit_exponent()."""
    exponent = minor_unit_exponent(currency)
    return Decimal(int(amount)).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent))


@lru_cache(maxsize=8)
def _locale(language_code: str) -> Locale:
    return Locale.parse(to_locale(language_code))


def format_money(cents: int, currency: str) -> str:
    """The one way PaidUp shows an amount: `format_money(24900, "usd") == "$249.00"`,
    `format_money(24900, "jpy") == "¥24,900"`, `format_money(1234560, "kwd") == "KWD 1,234.560"`.

    `cents` is an integer in Stripe's minor unit of `currency` (whole yen for jpy, fils for kwd;
    the name stays because every model field calls it that). Formatted with the site's
    LANGUAGE_CODE through Babel. Shows CLDR's usual decimals (none for yen or krónur) unless that
    would hide part of the amount, then Stripe's (ISK 4010 is "ISK 40.10", never "ISK 40").
    A code shown as letters is separated from the digits by a no-break space (CLDR's
    currencySpacing rule, which Babel does not apply). Raises ValueError for a malformed code.
    """
    return _format_money(cents, currency, settings.LANGUAGE_CODE)


# Babel takes most of a millisecond per amount, and one fulfilment shows the same price several
# times (timeline, subject, text and HTML of the email); a shop has few distinct amounts.
@lru_cache(maxsize=1024)
def _format_money(cents: int, currency: str, language_code: str) -> str:
    exponent = minor_unit_exponent(currency)
    code = currency.strip().upper()
    value = to_major(cents, currency)
    locale = _locale(language_code)
    digits = min(get_currency_precision(code), exponent)
    if value != value.quantize(Decimal(1).scaleb(-digits)):
        digits = exponent
    pattern = parse_pattern(locale.currency_formats["standard"].pattern)
    pattern.frac_prec = (digits, digits)
    text = pattern.apply(value, locale, currency=code, currency_digits=False)
    symbol = get_currency_symbol(code, locale)
    if symbol[-1:].isalpha() and (at := text.find(symbol)) >= 0:
        end = at + len(symbol)
        if end < len(text) and text[end].isdigit():
            text = text[:end] + NBSP + text[end:]
    if symbol[:1].isalpha() and (at := text.find(symbol)) > 0 and text[at - 1].isdigit():
        text = text[:at] + NBSP + text[at:]
    return text


# Zero-decimal in ISO 4217 but two-decimal in Stripe's API: amounts must be divisible by 100.
STRIPE_WHOLE_UNITS_ONLY = frozenset({"isk", "ugx"})


def stripe_amount_problem(amount: int, currency: str) -> str | None:
    """Why Stripe would refuse to charge or refund `amount` minor units of `currency`, or None.

    Stripe's rules (https://docs.stripe.com/currencies#special-cases): ISK and UGX amounts must
    be divisible by 100 (whole krónur and shillings), three-decimal amounts must end in 0. The
    message is for a support person and shows the amount through format_money(). Raises
    ValueError for a malformed currency code.
    """
    code = currency.strip().lower()
    if code in STRIPE_WHOLE_UNITS_ONLY and amount % 100:
        return f"{code.upper()} is charged in whole units: {format_money(amount, code)} has a fraction."
    if minor_unit_exponent(code) == 3 and amount % 10:
        return f"Stripe needs {code.upper()} amounts rounded to 0.010: {format_money(amount, code)} is not."
    return None


def is_known_currency(currency: str) -> bool:
    """Whether `currency` (any case) is an ISO 4217 code CLDR knows, so Babel can name it."""
    from babel.numbers import list_currencies

    return currency.strip().upper() in list_currencies()
