"""Where passkeys live: the relying party ID and the allowed origins, both from SITE_URL.

A passkey is bound by the browser to the relying party ID (a host name) and signs the page's
origin into every answer; the server accepts only its own origin. A look-alike site (a phishing
copy of the console) can neither ask for the passkey nor replay what it gets (WebAuthn Level 2,
sections 5.1.3-5.1.4 and 7.2 step 9: origin and RP ID hash checked by py_webauthn).

Browsers refuse an IP address as the relying party ID and allow plain http only on
`localhost` (a "potentially trustworthy" origin). So the dev default SITE_URL
http://127.0.0.1:8000 gives `localhost` and http://localhost:8000: passkeys are enrolled and
used on http://localhost:8000/ in dev (the same machine, the same server).
"""

from urllib.parse import urlsplit

LOOPBACK_ADDRESSES = {"127.0.0.1", "::1"}


def relying_party(site_url: str) -> tuple[str, list[str]]:
    """Return (RP ID, allowed origins) for the site at `site_url` (scheme://host[:port][/...]).

    A loopback address becomes `localhost` with the same scheme and port. Raises ValueError for
    a URL without a host.
    """
    parts = urlsplit(site_url)
    host = parts.hostname
    if not host:
        raise ValueError(f"SITE_URL {site_url!r} has no host name.")
    if host in LOOPBACK_ADDRESSES:
        host = "localhost"
    port = f":{parts.port}" if parts.port else ""
    return host, [f"{parts.scheme}://{host}{port}"]
