// After "Add a passkey": django-otp-webauthn's script announces the new passkey
// (otp_webauthn.register_complete, with its id); send it with the typed name, and the server
// says what comes next (the backup codes on the first day).
// Enter in the name field starts the passkey instead of sending a form with no passkey yet.
(function () {
  "use strict";
  var form = document.getElementById("pu-passkey-name-form");
  if (!form) {
    return;
  }
  var newId = document.getElementById("pu-passkey-new-id");

  form.addEventListener("submit", function (event) {
    if (!newId.value) {
      event.preventDefault();
      var button = document.getElementById("passkey-register-button");
      if (button && !button.disabled) {
        button.click();
      }
    }
  });

  document.addEventListener("otp_webauthn.register_complete", function (event) {
    newId.value = event.detail.id;
    form.submit();
  });
})();
