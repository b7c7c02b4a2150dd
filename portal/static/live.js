// The "Now" page's live values: Server-Sent Events from /live, no library, no inline script.
(function () {
  "use strict";
  var badge = document.getElementById("live");
  if (!badge || !window.EventSource) { return; }
  var lang = badge.getAttribute("data-lang");
  function show(value) {
    var text = String(value);
    if (lang === "de") { text = text.replace(".", ","); }
    return text;
  }
  var source = new EventSource(badge.getAttribute("data-url"));
  source.addEventListener("reading", function (event) {
    var doc = JSON.parse(event.data);
    document.querySelectorAll("td[data-address]").forEach(function (cell) {
      var address = cell.getAttribute("data-address");
      if (Object.prototype.hasOwnProperty.call(doc.values, address)) {
        cell.textContent = show(doc.values[address]);
      }
    });
    var when = document.getElementById("read-at");
    if (when) { when.textContent = new Date(doc.read_at).toLocaleString(lang); }
    badge.classList.add("on");
  });
  source.onerror = function () { badge.classList.remove("on"); };
}());
