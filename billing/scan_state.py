"""Where reconciliation's Stripe-side scan stands, kept after every page it settles.

The scan reads `payment_intent.succeeded` events page by page (gateway.succeeded_payment_pages).
A run can stop anywhere: its Stripe request budget runs out, the process dies. If the place
were written only at the end, a first scan over more events than one run's budget could read
would start again from the same place forever. So it is written after each page, and it must
never claim a page that was not settled, whichever way the listing runs:

- real Stripe lists events **newest first**: after a page, everything from that page's oldest
  event up to the newest of the listing is settled; what is left is the *older* part. The state
  keeps the listing's bounds: read `[cursor - overlap, upto]` next, then move the cursor to `end`.
- localstripe (and the unit-test fake by default) lists **oldest first**: after a page,
  everything up to that page's newest event is settled; the cursor simply moves there.

The direction is read from the events themselves (the listing's first event against the
page's last), so nothing depends on which Stripe answers. Events of the same second can sit
on both sides of a page break, so every bound is inclusive and the next listing starts the
usual overlap (RECONCILE_SCAN_OVERLAP_SECONDS) before the cursor: a page may be read twice
(settling is idempotent), never skipped.

All times are Unix seconds by Stripe's clock (events' `created`).
"""

from dataclasses import dataclass


@dataclass
class ScanState:
    """`cursor`: the next listing reads events created at or after `cursor - overlap`.
    `upto`: None, or the listing reads only events created at or before it (the older rest of
    a window that was being read newest first). `end`: where the cursor goes once that rest is
    read (the newest event of that window)."""

    cursor: int
    upto: int | None = None
    end: int | None = None

    def since(self, overlap: int) -> int:
        """Where the next listing starts (Unix seconds)."""
        return self.cursor - overlap


@dataclass
class Listing:
    """One listing in progress: what it has seen, so that each page can move the state."""

    state: ScanState
    first: int | None = None  # `created` of the listing's first event
    newest: int | None = None

    def page_settled(self, created: list[int]) -> bool:
        """Move the state past a page whose events (their `created`, in listing order) are all
        settled. Returns whether the state changed (then the caller writes it down)."""
        if not created:
            return False
        if self.first is None:
            self.first = created[0]
        self.newest = max(self.newest or created[0], *created)
        last = created[-1]
        state = self.state
        if last > self.first:  # oldest first: everything up to this page's newest is settled
            if max(created) > state.cursor:
                state.cursor = max(created)
                return True
            return False
        if last < self.first:  # newest first: what is left is older than this page
            state.end = state.end if state.end is not None else self.first
            state.upto = min(created)
            return True
        return False  # all of one second so far: the direction is unknown, claim nothing

    def finished(self) -> None:
        """The listing reached its end: the whole window is settled."""
        candidates = [self.state.cursor, self.state.end, self.newest]
        self.state.cursor = max(c for c in candidates if c is not None)
        self.state.upto = self.state.end = None
