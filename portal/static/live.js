// The "Now" page's live values: Server-Sent Events from /live, no library, no inline script.
// The server sends each value already formatted for the page's language ("shown").
(function () {
  "use strict";
  var badge = document.getElementById("live");
  if (!badge || !window.EventSource) { return; }
  var source = new EventSource(badge.getAttribute("data-url"));
  source.addEventListener("reading", function (event) {
    var doc = JSON.parse(event.data);
    document.querySelectorAll("td[data-address]").forEach(function (cell) {
      var address = cell.getAttribute("data-address");
      if (Object.prototype.hasOwnProperty.call(doc.shown, address)) {
        cell.textContent = doc.shown[address];
      }
    });
    var when = document.getElementById("read-at");
    if (when) { when.textContent = doc.read_at_shown; }
    badge.classList.add("on");
  });
  source.onerror = function () { badge.classList.remove("on"); };
}());
