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
  const statusLine = document.getElementById("pay-status"); // role="status": read out as it changes
  const emailInput = document.getElementById("email");
  const emailError = document.getElementById("email-error");
  const payLabel = button.textContent;
  const pageTitle = document.title.replace(/^.* · (Checkout · )/, "$1");
  const orderUrl = form.dataset.orderUrl;
  const reference = form.dataset.reference;
  const supportEmail = form.dataset.supportEmail;
  const REQUEST_TIMEOUT_MS = 60000;
  const SLOW_MS = 8000;

  // Stripe.js's own sentences are for customers only for these two types; anything else
  // ("Bad request", "Cannot read properties of undefined…") is ours to say plainly.
  const CUSTOMER_ERROR_TYPES = ["card_error", "validation_error"];
  const UNREADABLE_CARD = "We couldn't read your card details. Please check the card number, expiry date and CVC, then press Pay again. You have not been charged.";

  const stripe = Stripe(form.dataset.stripeKey);
  const card = stripe.elements().create("card", {style: {base: {fontSize: "16px"}}});
  card.mount("#card-element");
  card.on("change", function (event) {
    // Real Stripe.js reports card errors as you type; the dev fake calls this with nothing.
    if (event && event.error) showMessage("error", [cardErrorSentence(event.error)]);
  });
  labelFakeCardInputs();

  // localstripe's fake Stripe.js (dev and tests) mounts bare inputs named only by their
  // placeholder; name them so that a screen reader says what each one wants. Real Stripe.js
  // mounts an iframe that labels its own fields.
  function labelFakeCardInputs() {
    const names = {number: "Card number", exp_month: "Expiry month (MM)", exp_year: "Expiry year (YY)", cvc: "CVC", postal_code: "Postal code"};
    document.querySelectorAll("#card-element input[placeholder]").forEach(function (input) {
      const name = names[input.getAttribute("placeholder")];
      if (name && !input.hasAttribute("aria-label")) input.setAttribute("aria-label", name);
    });
  }

  function cardErrorSentence(error) {
    if (error && CUSTOMER_ERROR_TYPES.indexOf(error.type) !== -1 && error.message) {
      return error.message + " You have not been charged.";
    }
    return UNREADABLE_CARD;
  }

  function setTitle(outcome) {
    document.title = outcome ? outcome + " · " + pageTitle : pageTitle;
  }

  let slowTimer = null;

  // Before any charge, two questions the server also asks (billing/views.py): a likely typo in
  // the email's domain, and access this email already has. The server decides; this only asks sooner.
  const email = document.getElementById("email");
  const emailChecked = document.getElementById("email_checked");
  const suggestionBox = document.getElementById("email-suggestion");
  const accessBox = document.getElementById("access-notice");
  const extendAccess = document.getElementById("extend_access");

  function fill(box, name, text) {
    box.querySelectorAll("[data-fill=" + name + "]").forEach(function (node) { node.textContent = text; });
  }

  function showSuggestion(typed, suggested) {
    document.getElementById("suggested-email").textContent = suggested;
    fill(suggestionBox, "suggested", suggested);
    fill(suggestionBox, "typed", typed);
    suggestionBox.dataset.typed = typed;
    suggestionBox.dataset.suggested = suggested;
    suggestionBox.hidden = false;
  }

  function chooseEmail(value) {
    email.value = value;
    emailChecked.value = value;
    suggestionBox.hidden = true;
    email.focus();
  }

  async function checkEmail() {
    const typed = email.value.trim();
    const at = typed.lastIndexOf("@");
    if (at < 1 || typed === emailChecked.value) return;
    try {
      const url = form.dataset.suggestUrl + "?domain=" + encodeURIComponent(typed.slice(at + 1));
      const response = await fetch(url, {headers: {Accept: "application/json"}, credentials: "same-origin"});
      const data = await response.json();
      if (data.suggestion && email.value.trim() === typed) showSuggestion(typed, typed.slice(0, at + 1) + data.suggestion);
    } catch (error) {
      // no suggestion is no harm: the server asks again before the charge
    }
  }

  function showAccess(info) {
    document.getElementById("access-until").textContent = info.until;
    document.getElementById("access-signin").href = info.signin_url;
    extendAccess.value = info.email;
    extendAccess.checked = false;
    accessBox.hidden = false;
    accessBox.scrollIntoView({block: "center"});
  }

  email.addEventListener("change", checkEmail);
  email.addEventListener("input", function () {
    if (email.value.trim() !== suggestionBox.dataset.typed) suggestionBox.hidden = true;
    if (email.value.trim().toLowerCase() !== extendAccess.value) { accessBox.hidden = true; extendAccess.checked = false; }
  });
  // Never the form's default button: Enter in the email field means Pay, not "Use".
  ["use-suggestion", "keep-typed"].forEach(function (id) { document.getElementById(id).type = "button"; });
  document.getElementById("use-suggestion").addEventListener("click", function (event) {
    event.preventDefault();
    chooseEmail(suggestionBox.dataset.suggested || document.getElementById("suggested-email").textContent);
  });
  document.getElementById("keep-typed").addEventListener("click", function (event) {
    event.preventDefault();
    chooseEmail(suggestionBox.dataset.typed || email.value.trim());
  });

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  // The button says what is happening, and so does the status region, which a screen reader
  // announces (a disabled button's label is not read out when it changes).
  function busy(label, note) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    button.textContent = label;
    statusLine.textContent = label;
    setTitle(label.replace(/…$/, ""));
    clearTimeout(slowTimer);
    slowTimer = setTimeout(function () {
      statusLine.textContent = note || "Still working. Please keep this page open. You will not be charged twice.";
    }, SLOW_MS);
  }

  function idle() {
    clearTimeout(slowTimer);
    statusLine.textContent = "";
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

  function markEmail(text) {
    emailError.textContent = text || "";
    emailError.hidden = !text;
    const describedBy = ["email-hint"].concat(text ? ["email-error"] : []);
    emailInput.setAttribute("aria-describedby", describedBy.join(" "));
    if (text) emailInput.setAttribute("aria-invalid", "true");
    else emailInput.removeAttribute("aria-invalid");
  }

  // After an error, focus goes where the customer must act: the field at fault, else the
  // message (the Pay button they pressed was disabled, so focus would fall to the page).
  function showError(text, fieldErrors) {
    const emailText = (fieldErrors && fieldErrors.email) || "";
    markEmail(emailText);
    if (emailText) {
      if (text) showMessage("error", [text]);
      else errorBox.hidden = true;
    } else {
      showMessage("error", [text]);
    }
    idle();
    setTitle("Not paid yet: please check the form");
    if (emailText) emailInput.focus();
    else errorBox.focus();
  }

  function goToOrder(url) {
    window.location.assign(url || orderUrl);
  }

  async function cardToPaymentMethod() {
    const result = form.dataset.cardMode === "token"
      ? await stripe.createToken(card)
      : await stripe.createPaymentMethod({type: "card", card: card});
    if (result.error) throw new CardError(result.error);
    const made = result.token || result.paymentMethod;
    if (!made || !made.id) throw new CardError(null);
    return made.id;
  }

  function CardError(stripeError) {
    this.sentence = cardErrorSentence(stripeError);
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
        setTitle("Not charged: please press Pay again");
        errorBox.focus();
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
        setTitle("Connection lost: please don't pay again");
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
      // Never Stripe.js's or the browser's own words ("Bad request", "Cannot read properties…").
      showError(error instanceof CardError ? error.sentence : UNREADABLE_CARD);
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
    if (data.email_suggestion) {  // nothing charged: the customer chooses, then presses Pay again
      showSuggestion(data.email_suggestion.typed, data.email_suggestion.suggested);
      idle();
      return suggestionBox.scrollIntoView({block: "center"});
    }
    if (data.access) {  // nothing charged: another year needs the tick
      showAccess(data.access);
      return idle();
    }
    if (data.error) {
      const fieldErrors = data.field_errors || {};
      return showError(fieldErrors.email ? data.form_error || "" : data.error, fieldErrors);
    }
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
