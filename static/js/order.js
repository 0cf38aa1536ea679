// The order page while it waits on a payment: ask the order's JSON every 3 s and, when the
// story changes, swap the page's card in place, say the new headline in the role="status"
// region and put it in the tab's title. No reload: a reload throws a keyboard or
// screen-reader user back to the top of the page every time (WCAG 2.2.1). Without this
// script, the page's <noscript> reloads it slowly instead.
//
// The JSON says only {reference, state, fulfilled}. A pending order can change its story
// without changing state (a bank check failed, a confirm came back declined), so the page
// itself is also fetched every 5th time.
(function () {
  "use strict";
  const POLL_MS = 3000;
  const PAGE_EVERY = 5;
  const live = document.getElementById("order-live");
  let polls = 0;

  function card() {
    return document.querySelector(".card[data-view]");
  }

  async function get(url, accept) {
    try {
      const response = await fetch(url, {headers: {Accept: accept}, credentials: "same-origin", cache: "no-store"});
      return response.ok ? response : null;
    } catch (error) {
      return null; // offline for a moment: the next poll tries again
    }
  }

  async function refreshPage() {
    const response = await get(window.location.pathname, "text/html");
    if (!response) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.querySelector(".card[data-view]");
    const current = card();
    if (!fresh || !current || fresh.dataset.view === current.dataset.view) return;
    const hadFocus = current.contains(document.activeElement);
    current.replaceWith(document.importNode(fresh, true));
    document.title = page.title;
    const heading = card().querySelector("h1");
    if (live && heading) live.textContent = heading.textContent.trim();
    if (hadFocus && heading) {
      // The link or button that had focus is gone: keep the place, at the new headline.
      heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
  }

  async function poll() {
    const current = card();
    if (!current || !current.dataset.poll) return; // the story is final: stop asking
    polls += 1;
    const response = await get(current.dataset.poll, "application/json");
    const data = response ? await response.json().catch(function () { return null; }) : null;
    if ((data && data.state !== current.dataset.state) || polls % PAGE_EVERY === 0) await refreshPage();
    setTimeout(poll, POLL_MS);
  }

  setTimeout(poll, POLL_MS);
})();
