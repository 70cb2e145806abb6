/*
 * collabmask — keys, help dialog and display controls shared by the review screen components.
 * Load after cm-core.js and before cm-viewer.js / cm-draw.js. The DOM contract is in cm-core.js.
 *
 * Keys are handled on the document and apply while focus is inside the component or in no other
 * component; inputs that take text keep their keys. One table per screen drives both the key handler
 * and the help dialog, so the help always lists what the keys really do.
 */
(function () {
  "use strict";
  const CM = (window.CM = window.CM || {});

  /* ---------- keys: one table drives both the handler and the help dialog ---------- */
  CM.displayKeys = function ({ view, display, panes, help }) {
    const zoom = (f) => view.zoomAt(view.cx, view.cy, f);
    const opacity = (d) => display.set({ opacity: Math.round((display.opacity + d) * 20) / 20 });
    return [
      { keys: ["+", "="], label: "+", help: "Zoom in", repeat: true, run: () => zoom(1.25) },
      { keys: ["-", "_"], label: "−", help: "Zoom out", repeat: true, run: () => zoom(0.8) },
      { keys: ["0"], label: "0", help: "Fit image (reset zoom and pan)", run: () => view.reset() },
      { keys: ["c"], label: "C", help: "Mask as fill / contour", run: () => display.set({ mode: display.mode === "fill" ? "contour" : "fill" }) },
      { keys: [","], label: ",  .", help: "Mask opacity down / up", repeat: true, run: () => opacity(-0.05) },
      { keys: ["."], repeat: true, run: () => opacity(0.05) },
      { keys: [" "], label: "Space (hold)", help: "Hide masks while held", hold: true,
        run: () => display.set({ held: true }), release: () => display.set({ held: false }) },
      { keys: ["m"], label: "M", help: "Masks on / off", run: () => display.set({ masksVisible: !display.masksVisible }) },
      { keys: ["w"], label: "W  S", help: "Window wider / narrower (less / more contrast)", repeat: true, run: () => display.set({ width: display.width * 1.15 }) },
      { keys: ["s"], repeat: true, run: () => display.set({ width: display.width / 1.15 }) },
      { keys: [";"], label: ";  '", help: "Level down / up (brighter / darker)", repeat: true, run: () => display.set({ center: display.center - 8 }) },
      { keys: ["'"], repeat: true, run: () => display.set({ center: display.center + 8 }) },
      { keys: ["l"], label: "L", help: "Reset window / level", run: () => display.set({ ...CM.DEFAULT_WINDOW }) },
      { keys: ["?"], label: "?", help: "Show / hide this help", run: () => help.toggle() },
      { label: "Wheel", help: "Zoom about the cursor" },
      { label: "Right-drag", help: "Window (left–right) and level (up–down)" },
    ].map((k) => ({ panes, ...k }));
  };
  function editable(t) {
    return t && (t.isContentEditable || /^(TEXTAREA|SELECT)$/.test(t.tagName) ||
      (t.tagName === "INPUT" && !/^(range|checkbox|radio|button|submit)$/.test(t.type)));
  }
  /** Listen on the document; the table applies when focus is in `root` or in no other component. */
  CM.bindKeys = function (root, table) {
    const owns = () => {
      const a = document.activeElement;
      if (!a || a === document.body || root.contains(a)) return true;
      return !a.closest("[data-cm-viewer],[data-cm-draw]");
    };
    const find = (e) => {
      if (e.altKey || editable(e.target) || !owns()) return null;
      const key = e.key.length === 1 ? e.key.toLowerCase() : e.key, ctrl = e.ctrlKey || e.metaKey;
      return table.find((k) => k.keys && k.keys.includes(key) && !!k.ctrl === ctrl &&
        (k.shift === undefined || k.shift === e.shiftKey) && (!k.when || k.when()));
    };
    document.addEventListener("keydown", (e) => {
      if (e.defaultPrevented) return;
      const k = find(e);
      if (!k) return;
      // Space on a focused button or slider keeps its usual meaning.
      if (e.key === " " && e.target.closest && e.target.closest("button,input,a")) return;
      e.preventDefault();
      if (e.repeat && !k.repeat) return; // toggles fire once per press; steps repeat while held
      k.run(e);
    });
    document.addEventListener("keyup", (e) => {
      const k = table.find((t) => t.hold && t.keys.includes(e.key.length === 1 ? e.key.toLowerCase() : e.key));
      if (k) k.release();
    });
    window.addEventListener("blur", () => table.forEach((k) => k.hold && k.release()));
  };

  /* ---------- help dialog ---------- */
  CM.helpDialog = function (root, title, getTable) {
    const dlg = document.createElement("dialog");
    dlg.className = "cm-help";
    dlg.setAttribute("aria-label", title);
    const build = () => {
      const rows = getTable().filter((k) => k.help)
        .map((k) => `<tr><th scope="row"><kbd>${k.label.split(/\s\s+/).join("</kbd> <kbd>")}</kbd></th><td>${k.help}</td></tr>`);
      dlg.innerHTML = `<h2>${title}</h2><table>${rows.join("")}</table>` +
        `<form method="dialog"><button type="submit" class="cm-btn" autofocus>Close <kbd>Esc</kbd></button></form>`;
    };
    // Keys typed inside the dialog belong to it: the page's choice keys must not fire behind it.
    // Once it is closed they are the page's again, also a key pressed so soon after Escape that
    // the browser has not yet moved focus out of the hidden dialog.
    let before = null;
    dlg.addEventListener("keydown", (e) => {
      if (!dlg.open) return;
      e.stopPropagation();
      if (e.key === "?") dlg.close();
    });
    dlg.addEventListener("close", () => {
      const active = document.activeElement;
      if (active && dlg.contains(active)) {
        if (before && before.isConnected && before !== document.body) before.focus();
        else active.blur();
      }
      before = null;
    });
    root.append(dlg);
    return {
      el: dlg,
      toggle() {
        if (dlg.open) return dlg.close();
        before = document.activeElement;
        build();
        dlg.showModal();
      },
    };
  };

  /* ---------- display controls: real, labelled, focusable ---------- */
  CM.button = function (text, attrs = {}) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "cm-btn";
    b.innerHTML = text;
    for (const [k, v] of Object.entries(attrs)) b.setAttribute(k, v);
    // After a mouse click the keys (Space above all) should go back to the image, not re-press the button.
    b.addEventListener("click", (e) => e.detail > 0 && b.blur());
    return b;
  };
  CM.toolbar = function (root, label) {
    let bar = root.querySelector("[data-cm-toolbar]");
    if (!bar) {
      bar = document.createElement("div");
      bar.setAttribute("data-cm-toolbar", "");
      root.prepend(bar);
    }
    bar.classList.add("cm-toolbar");
    bar.setAttribute("role", "group");
    bar.setAttribute("aria-label", label);
    return bar;
  };
  CM.displayControls = function (bar, { display, view, help }) {
    const group = document.createElement("div");
    group.className = "cm-group";
    const contour = CM.button("Contour <kbd>C</kbd>", { "data-cm-control": "contour", "aria-pressed": "false", title: "Show masks as contour instead of fill (C)" });
    contour.addEventListener("click", () => display.set({ mode: display.mode === "fill" ? "contour" : "fill" }));
    const masks = CM.button("Masks <kbd>M</kbd>", { "data-cm-control": "masks", "aria-pressed": "true", title: "Show masks (M; hold Space to hide)" });
    masks.addEventListener("click", () => display.set({ masksVisible: !display.masksVisible }));
    const lab = document.createElement("label");
    lab.className = "cm-range";
    lab.innerHTML = `<span>Opacity</span><input type="range" min="0" max="100" step="5" data-cm-control="opacity">` +
      `<output aria-hidden="true"></output>`;
    const slider = lab.querySelector("input"), out = lab.querySelector("output");
    slider.addEventListener("input", () => display.set({ opacity: slider.value / 100 }));
    const wl = CM.button("", { "data-cm-control": "window", title: "Reset window / level (L). Right-drag on the image to change it." });
    wl.addEventListener("click", () => display.set({ ...CM.DEFAULT_WINDOW }));
    const fit = CM.button("Fit <kbd>0</kbd>", { "data-cm-control": "fit", title: "Fit image (0)" });
    fit.addEventListener("click", () => view.reset());
    const keys = CM.button("Keys <kbd>?</kbd>", { "data-cm-control": "help", "aria-keyshortcuts": "Shift+?", title: "Keyboard shortcuts (?)" });
    keys.addEventListener("click", () => help.toggle());
    group.append(contour, lab, masks, wl, fit, keys);
    bar.append(group);
    const sync = () => {
      contour.setAttribute("aria-pressed", String(display.mode === "contour"));
      masks.setAttribute("aria-pressed", String(display.showMasks));
      slider.value = Math.round(display.opacity * 100);
      out.textContent = `${slider.value}%`;
      wl.innerHTML = `W ${display.width} · L ${display.center} <kbd>L</kbd>`;
      wl.setAttribute("aria-label", `Window ${display.width}, level ${display.center}; reset`);
    };
    display.addEventListener("change", sync);
    sync();
    return group;
  };

  /** Create components for matching elements now and whenever htmx swaps new content in. */
  CM.autoInit = function (selector, make) {
    const scan = (node) => {
      if (!node || !node.querySelectorAll) return;
      if (node.matches && node.matches(selector)) make(node);
      node.querySelectorAll(selector).forEach((el) => make(el));
    };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => scan(document));
    else scan(document);
    document.addEventListener("htmx:load", (e) => scan(e.target));
  };
})();
