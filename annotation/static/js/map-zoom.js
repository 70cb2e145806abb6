// Zoom of the infection-map panels: the −/Fit/+ buttons, or a click on an image, set the size
// of every panel at once (CSS classes zoom-1 … zoom-4), so the CXR, the map and the accepted
// mask stay side by side at the same scale. Delegated from the document: the result panel is
// replaced by htmx when the job finishes.
(function () {
  "use strict";
  var MAX = 4;

  function setLevel(panels, level) {
    level = Math.max(1, Math.min(MAX, level));
    for (var i = 1; i <= MAX; i++) panels.classList.toggle("zoom-" + i, i === level);
    panels.dataset.zoomLevel = String(level);
  }

  function panelsOf(element) {
    var root = element.closest(".viewer") || document;
    return root.querySelector(".panels.zoomable");
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-zoom]");
    var panels;
    if (button) {
      panels = panelsOf(button);
      if (!panels) return;
      var level = Number(panels.dataset.zoomLevel || "1");
      var how = button.dataset.zoom;
      setLevel(panels, how === "in" ? level + 1 : how === "out" ? level - 1 : 1);
      return;
    }
    var image = event.target.closest(".panels.zoomable figure img");
    if (image) {
      panels = image.closest(".panels.zoomable");
      var next = Number(panels.dataset.zoomLevel || "1") + 1;
      setLevel(panels, next > MAX ? 1 : next);
    }
  });
})();
