"""A likely misspelt email domain, caught before the charge ("Did you mean ana@gmail.com?").

An access email sent to `ana@gmial.com` goes nowhere, and the customer has paid (issue 10). The
checkout asks once; the customer may keep what they typed.

The rule, after mailcheck's (the JavaScript library most sites use, github.com/mailcheck):
a domain we know to be real is left alone; otherwise the nearest well-known mail name within two
edits among those with the same ending (a mistyped ending such as `.con` fixed first), else the
same domain with its mistyped ending fixed. A different real ending is never "corrected". Edits are
counted by rapidfuzz's optimal string alignment distance, where swapping two neighbouring
letters (`gmial`) is one edit. Pure string work: no DNS, no network, so it is the same offline,
in tests, and for the page script (which asks `/checkout/email-suggestion/`, served from here,
so the page and the server can never disagree).
"""

from rapidfuzz import process
from rapidfuzz.distance import OSA

# Mail domains people type into checkouts, each a real one we suggest.
POPULAR = [
    "gmail.com",
    "googlemail.com",
    "hotmail.com",
    "hotmail.co.uk",
    "hotmail.fr",
    "outlook.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "yahoo.co.uk",
    "yahoo.fr",
    "ymail.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "protonmail.com",
    "proton.me",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "comcast.net",
    "verizon.net",
    "att.net",
    "sbcglobal.net",
    "orange.fr",
    "free.fr",
    "btinternet.com",
]
# Real domains one or two edits away from a popular one: never "corrected".
REAL = {
    *POPULAR,
    "mail.com",
    "email.com",
    "gmx.at",
    "gmx.ch",
    "live.co.uk",
    "live.fr",
    "outlook.fr",
    "yahoo.de",
    "yahoo.es",
    "yahoo.it",
    "hotmail.de",
    "hotmail.es",
    "hotmail.it",
    "mail.ru",
    "ya.ru",
    "me.org",
}
# Endings that are a slip of the finger for .com, .net, .org (never real endings people use).
ENDINGS = {
    "con": "com",
    "cmo": "com",
    "cpm": "com",
    "comm": "com",
    "coom": "com",
    "vom": "com",
    "xom": "com",
    "ocm": "com",
    "cim": "com",
    "clm": "com",
    "ney": "net",
    "nte": "net",
    "nrt": "net",
    "ogr": "org",
    "orh": "org",
    "prg": "org",
}
# Providers whose mail lives under one domain only: another ending after their exact name is a slip.
ONE_DOMAIN = {
    "gmail": "gmail.com",
    "googlemail": "googlemail.com",
    "icloud": "icloud.com",
    "protonmail": "protonmail.com",
}
MAX_EDITS = 2
MAX_LENGTH = 254  # the longest address SMTP carries (RFC 5321); longer is not an address


def suggest_domain(domain: str) -> str | None:
    """A correction for a mail `domain` ("gmial.com" → "gmail.com"), or None when it looks
    right, is unknown but plausible, or is not a domain at all. Case-insensitive; never raises.

    Only the name before the first dot is matched against the well-known names, and only among
    those with the same ending: a different ending is a different, real domain (`yahoo.co.jp`
    is not a slip for `yahoo.co.uk`, nor `hotmail.nl` for `hotmail.fr`), and "correcting" it
    would send the sign-in link to a stranger. An ending is changed only when it is a known
    slip of the finger (`.con`)."""
    domain = (domain or "").strip().lower().rstrip(".")
    if not domain or len(domain) > MAX_LENGTH or "." not in domain or domain in REAL or "@" in domain:
        return None
    name, _, ending = domain.partition(".")
    *rest, last = ending.split(".")
    ending = ".".join([*rest, ENDINGS.get(last, last)])
    same_ending = {p.partition(".")[0]: p for p in POPULAR if p.partition(".")[2] == ending}
    # Short names are too close to too many others: one edit at most for them.
    limit = 1 if len(name) < 5 else MAX_EDITS
    match = process.extractOne(name, list(same_ending), scorer=OSA.distance, score_cutoff=limit) if name else None
    if match is not None and match[1] > 0:
        return same_ending[match[0]]
    if match is None and (only := ONE_DOMAIN.get(name)) and only != domain:
        return only  # a provider with one domain only: any other ending is a slip (icloud.co)
    corrected = f"{name}.{ending}"
    return corrected if name and corrected != domain else None


def suggest(email: str) -> str | None:
    """The whole address with its domain corrected ("ana@gmial.com" → "ana@gmail.com"), or
    None when there is nothing to suggest (see `suggest_domain`). The part before the @ is kept
    as typed. Never raises."""
    email = (email or "").strip()
    if len(email) > MAX_LENGTH or "@" not in email:
        return None
    local, _, domain = email.rpartition("@")
    corrected = suggest_domain(domain) if local else None
    return f"{local}@{corrected}" if corrected else None
