// The reply templates' "Copy" buttons on an order's page in the support console
// (templates/admin/billing/order/change_form.html). A static file, not an inline script: the
// Content-Security-Policy runs no inline script without the response's nonce.
document.querySelectorAll("#pu-replies .pu-copy").forEach(function (button) {
  button.addEventListener("click", function () {
    var area = document.getElementById(button.dataset.copy);
    var note = button.parentNode.querySelector(".pu-copied");
    function done(ok) { note.textContent = ok ? "Copied. Paste it into your reply." : "Select the text and copy it (Ctrl+C)."; }
    area.select();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(area.value).then(function () { done(true); }, function () { done(document.execCommand("copy")); });
    } else {
      done(document.execCommand("copy"));
    }
  });
});
