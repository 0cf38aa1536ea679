// The dev outbox (/dev/emails/<id>/): the email's frame as tall as the email, so nothing is cut off.
// A static file, not an onload= attribute: the Content-Security-Policy runs no inline handler.
(function () {
  var frame = document.getElementById("email-frame");
  function fit() { frame.style.height = (frame.contentDocument.documentElement.scrollHeight + 2) + "px"; }
  frame.addEventListener("load", fit);
  if (frame.contentDocument && frame.contentDocument.readyState === "complete") fit();
})();
