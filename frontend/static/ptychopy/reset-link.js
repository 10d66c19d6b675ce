// A password-reset mail links to /accounts/reset/<uid>/#<token>: the token after '#' never reaches a server
// (nor its logs). Post it, after taking it out of the address bar and the history.
(function () {
  "use strict";
  var token = window.location.hash.slice(1);
  var form = document.getElementById("reset-link-form");
  if (!token || !form) return;
  history.replaceState(null, "", window.location.pathname + window.location.search);
  form.elements.token.value = decodeURIComponent(token);
  form.submit();
})();
