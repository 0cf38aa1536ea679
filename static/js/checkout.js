// The checkout page: card → Stripe (payment method, or a token with localstripe's fake
// Stripe.js), then POST /checkout/ and go where the server says.
//
// The one rule: once the payment request may have reached the server, never invite a second
// payment. A failed, garbled or hung request is followed by a look at the order: if it exists,
// the order page tells the truth; if it doesn't, nothing was sent to the bank and the customer
// may press Pay again (the server would find the same order for this checkout anyway).
(function () {
  "use strict";
  const form = document.getElementById("checkout-form");
  if (!form) return;

  const button = document.getElementById("pay-button");
  const errorBox = document.getElementById("form-error");
  const statusLine = document.getElementById("pay-status");
  const payLabel = button.textContent;
  const orderUrl = form.dataset.orderUrl;
  const reference = form.dataset.reference;
  const supportEmail = form.dataset.supportEmail;
  const REQUEST_TIMEOUT_MS = 60000;
  const SLOW_MS = 8000;

  const stripe = Stripe(form.dataset.stripeKey);
  const card = stripe.elements().create("card", {style: {base: {fontSize: "16px"}}});
  card.mount("#card-element");
  card.on("change", function (event) {
    // Real Stripe.js reports card errors as you type; the dev fake calls this with nothing.
    if (event && event.error) showMessage("error", [event.error.message]);
  });

  let slowTimer = null;

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  function busy(label, note) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    button.textContent = label;
    clearTimeout(slowTimer);
    statusLine.hidden = true;
    slowTimer = setTimeout(function () {
      statusLine.textContent = note || "Still working. Please keep this page open. You will not be charged twice.";
      statusLine.hidden = false;
    }, SLOW_MS);
  }

  function idle() {
    clearTimeout(slowTimer);
    statusLine.hidden = true;
    button.disabled = false;
    button.removeAttribute("aria-busy");
    button.textContent = payLabel;
  }

  // parts: strings and {href, text} links, built as DOM nodes (never HTML).
  function showMessage(kind, parts) {
    errorBox.className = "notice " + kind;
    errorBox.replaceChildren();
    parts.forEach(function (part) {
      if (typeof part === "string") {
        errorBox.append(part);
      } else {
        const link = document.createElement("a");
        link.href = part.href;
        link.textContent = part.text;
        errorBox.append(link);
      }
    });
    errorBox.hidden = false;
    errorBox.scrollIntoView({block: "center"});
  }

  function showError(text) {
    showMessage("error", [text]);
    idle();
  }

  function goToOrder(url) {
    window.location.assign(url || orderUrl);
  }

  async function cardToPaymentMethod() {
    if (form.dataset.cardMode === "token") {
      const result = await stripe.createToken(card);
      if (result.error) throw new Error(result.error.message);
      return result.token.id;
    }
    const result = await stripe.createPaymentMethod({type: "card", card: card});
    if (result.error) throw new Error(result.error.message);
    return result.paymentMethod.id;
  }

  // true: the order exists (the request reached us); false: it doesn't; null: can't tell.
  async function orderExists() {
    try {
      const response = await fetch(orderUrl, {headers: {Accept: "application/json"}, credentials: "same-origin", cache: "no-store"});
      if (response.status === 404) return false;
      return response.ok ? true : null;
    } catch (error) {
      return null;
    }
  }

  async function afterUncertainRequest() {
    busy("Checking your payment…", "Checking whether your payment reached us. Please keep this page open.");
    let missing = 0;
    for (let attempt = 0; ; attempt++) {
      const exists = await orderExists();
      if (exists === true) return goToOrder();
      if (exists === false && ++missing >= 2) {
        // Twice not there (a request still on its way would have created it): nothing was sent to the bank.
        showMessage("error", [
          "We couldn't send your payment, so you have not been charged. Please press Pay again. If it keeps happening, write to ",
          {href: "mailto:" + supportEmail + "?subject=Order%20" + reference, text: supportEmail},
          ".",
        ]);
        idle();
        return;
      }
      if (exists === null && attempt === 1) {
        showMessage("warn", [
          "We lost the connection while sending your payment, so we can't tell yet whether it went through. ",
          "Please don't pay again. This page keeps checking and takes you to your order as soon as it can. ",
          "You can also open it yourself later: ",
          {href: orderUrl, text: "order " + reference},
          ".",
        ]);
      }
      await sleep(exists === null ? Math.min(1500 * (attempt + 1), 8000) : 1500);
    }
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    if (button.disabled) return; // a double click never sends a second payment
    errorBox.hidden = true;
    busy("Paying…");
    let paymentMethod;
    try {
      paymentMethod = await cardToPaymentMethod();
    } catch (error) {
      showError((error.message || "We couldn't read your card details.") + " You have not been charged.");
      return;
    }
    document.getElementById("payment_method").value = paymentMethod;

    let data = null;
    const controller = new AbortController();
    const timeout = setTimeout(function () { controller.abort(); }, REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: {Accept: "application/json"},
        credentials: "same-origin",
        signal: controller.signal,
      });
      data = await response.json().catch(function () { return null; });
    } catch (error) {
      data = null; // network failure or timeout: the request may still have reached us
    } finally {
      clearTimeout(timeout);
    }
    if (!data) return afterUncertainRequest();
    if (data.error) return showError(data.error);
    if (data.requires_action) {
      busy("Waiting for your bank…", "Your bank is checking it's you. Finish the check in the window your bank opened.");
      try {
        // Real Stripe.js returns an error on failure; the dev fake returns the PaymentIntent.
        // Either way the order page asks Stripe for the truth.
        await stripe.confirmCardPayment(data.client_secret);
      } catch (error) {
        // the order page still tells the truth
      }
    }
    if (data.redirect) return goToOrder(data.redirect);
    return afterUncertainRequest();
  });

  // Back from the order page: a page restored from the back/forward cache would still show
  // "Paying…". Reload it; the server sends a paid checkout to its order page.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) window.location.reload();
  });
})();
