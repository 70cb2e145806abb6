/*
 * collabmask — adjudication screen: "Where they differ" (button or D) shows, in the enlarged view,
 * the pixels only the first mask marks, only the second marks, and both mark (with more than two
 * masks: some of them / all of them). Choosing a pane (click, or its number) shows that mask again.
 * Needs cm-core.js and cm-viewer.js first.
 */
(function () {
  "use strict";
  function init() {
    const button = document.querySelector("[data-cm-difference]");
    const root = document.querySelector("[data-cm-viewer]");
    if (!button || !root || !window.CM || !window.CM.viewer) return;
    const viewer = window.CM.viewer(root);
    const show = () => viewer.ready.then(() => viewer.showDifference() && button.setAttribute("aria-pressed", "true"));
    root.addEventListener("cm:focus", () => button.setAttribute("aria-pressed", "false"));
    button.addEventListener("click", show);
    document.addEventListener("keydown", (e) => {
      if (e.key !== "d" && e.key !== "D") return;
      if (e.ctrlKey || e.metaKey || e.altKey || e.target.closest("input, textarea, select, [contenteditable]")) return;
      e.preventDefault();
      show();
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
