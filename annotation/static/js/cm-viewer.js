/*
 * collabmask — candidate viewer of the review screens (needs cm-core.js and cm-controls.js first).
 *
 * DOM contract (fixed; templates code against it):
 *   <div data-cm-viewer data-image-url="..." data-width="W" data-height="H">
 *     <figure data-cm-pane data-position="1" data-label="A" data-mask-url="..."></figure>   one per candidate
 *     <figure data-cm-pane data-cm-focus></figure>           optional: large view of the focused candidate
 *     <div data-cm-toolbar></div>                             optional: where the display controls go
 *   </div>
 *   The image is a full-resolution 8-bit greyscale PNG; masks are 1-bit, greyscale or palette PNGs at the
 *   working resolution and are scaled to the image with nearest neighbour.
 *   Auto-initialises on DOMContentLoaded (and htmx:load). window.CM.viewer(el) returns the same instance:
 *     setMode('fill'|'contour'), setOpacity(0..1), setMasksVisible(bool), setWindow(center, width),
 *     resetView(), focus(position)  (focus() from code does not dispatch cm:focus),
 *     showDifference() (the enlarged view shows where the masks differ; focus() goes back)
 *     ready: Promise resolved once the image and masks are drawn.
 *   Events (bubbling, on the root): 'cm:focus' {detail: {position}} when a user clicks or focuses a pane.
 *   Keys (never digits 1-9, A, B, R, N, Enter, ArrowLeft/Right, Escape — the page's choice keys):
 *     + - 0 zoom/fit, C fill/contour, [ ] and , . opacity, Space (hold) hide masks, M masks on/off,
 *     W/S window width, Q/E and ; ' level, L reset window, ? help. Wheel zoom, drag pan, right-drag window/level.
 */
(function () {
  "use strict";
  const CM = (window.CM = window.CM || {});
  const instances = new WeakMap();

  class Viewer {
    constructor(root) {
      this.root = root;
      root.classList.add("cm-viewer");
      const w = Number(root.dataset.width) || 1, h = Number(root.dataset.height) || 1;
      root.style.setProperty("--cm-aspect", `${w} / ${h}`);
      root.style.setProperty("--cm-ar", String(w / h));
      this.display = new CM.Display();
      this.view = new CM.View(w, h);
      this.masks = new Map(); // position -> {fill, contour (lazy)}
      const shared = { view: this.view, display: this.display };
      const figures = [...root.querySelectorAll("[data-cm-pane]")];
      this.panes = figures.filter((f) => !f.hasAttribute("data-cm-focus")).map((el) => new CM.Pane(el, shared));
      const focusEl = figures.find((f) => f.hasAttribute("data-cm-focus"));
      this.focusPane = focusEl ? new CM.Pane(focusEl, shared) : null;
      root.classList.toggle("cm-has-focus", !!focusEl);
      // default layout: the focus view as tall as the candidate grid beside it
      const cols = this.panes.length <= 3 ? 1 : 2, rows = Math.max(1, Math.ceil(this.panes.length / cols));
      root.style.setProperty("--cm-rows", String(rows));
      root.style.setProperty("--cm-cols", String(cols));
      root.style.setProperty("--cm-n", String(Math.max(1, this.panes.length)));
      this.all = this.focusPane ? [...this.panes, this.focusPane] : this.panes;
      for (const p of this.panes) this.setupCandidate(p);
      if (this.focusPane) {
        this.focusPane.el.classList.add("cm-focus-pane");
        this.caption(this.focusPane, "");
        CM.bindGestures(this.focusPane, { ...shared, isPan: (e) => e.button <= 1 });
      }
      const redraw = () => this.all.forEach((p) => p.invalidate());
      this.view.addEventListener("change", redraw);
      this.display.addEventListener("change", redraw);

      this.help = CM.helpDialog(root, "Viewer keys", () => this.keys);
      const keys = CM.displayKeys({ view: this.view, display: this.display, help: this.help });
      const after = (label, ...entries) => keys.splice(keys.findIndex((k) => k.label === label) + 2, 0, ...entries);
      after(",  .", { keys: ["["], label: "[  ]", help: "Mask opacity down / up", repeat: true, run: () => this.stepOpacity(-0.05) },
        { keys: ["]"], repeat: true, run: () => this.stepOpacity(0.05) });
      after(";  '", { keys: ["q"], label: "Q  E", help: "Level down / up", repeat: true, run: () => this.display.set({ center: this.display.center - 8 }) },
        { keys: ["e"], repeat: true, run: () => this.display.set({ center: this.display.center + 8 }) });
      this.keys = [...keys, { label: "Drag", help: "Pan (all panes follow)" }, { label: "Tab", help: "Move between panes and controls" }];
      CM.bindKeys(root, this.keys);
      CM.displayControls(CM.toolbar(root, "Display"), { display: this.display, view: this.view, help: this.help });
      this.ready = this.load();
    }

    caption(pane, text) {
      let cap = pane.el.querySelector("figcaption");
      if (!cap) {
        cap = document.createElement("figcaption");
        pane.el.append(cap);
      }
      cap.className = "cm-label";
      cap.textContent = text;
      return cap;
    }

    setupCandidate(pane) {
      const el = pane.el, pos = Number(el.dataset.position), label = el.dataset.label || String(pos);
      this.caption(pane, label);
      el.setAttribute("aria-label", `Candidate ${label}`);
      pane.overlays = () => this.masks.get(pos);
      CM.bindGestures(pane, { view: this.view, display: this.display, isPan: (e) => e.button <= 1 });
      // Clicking a pane focuses it; a click on the pane that already has focus announces it again.
      el.addEventListener("focus", () => this.userFocus(pos));
      pane.canvas.addEventListener("cm:tap", () => document.activeElement === el && this.userFocus(pos, true));
    }

    async load() {
      const url = this.root.dataset.imageUrl;
      const status = (t) => this.all.forEach((p) => p.el.classList.toggle("cm-loading", t === "loading"));
      status("loading");
      try {
        const bitmap = await CM.fetchBitmap(url);
        const grey = CM.greyOf(bitmap);
        // the real image size wins over the declared one
        Object.assign(this.view, { w: grey.w, h: grey.h });
        this.view.reset();
        const image = new CM.WindowedImage(grey);
        this.all.forEach((p) => (p.image = image));
      } catch (err) {
        this.all.forEach((p) => p.el.classList.add("cm-error"));
        this.all.forEach((p) => p.el.setAttribute("data-cm-error", "The image could not be loaded."));
        throw err;
      } finally {
        status("done");
      }
      await Promise.all(this.panes.map(async (p) => {
        const pos = Number(p.el.dataset.position), url = p.el.dataset.maskUrl;
        if (!url) return;
        try {
          const bmp = await CM.fetchBitmap(url), w = bmp.width, h = bmp.height, bits = CM.bitsOf(bmp, w, h);
          this.masks.set(pos, new CM.MaskOverlay(bits, w, h));
        } catch (err) {
          p.el.setAttribute("data-cm-error", "This mask could not be loaded.");
          p.el.classList.add("cm-error");
        }
        p.invalidate();
      }));
      if (this.focused === undefined && this.panes.length) this.focus(Number(this.panes[0].el.dataset.position));
      else if (this.focusPane) this.focusPane.invalidate();
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      this.root.dispatchEvent(new CustomEvent("cm:ready", { bubbles: true }));
    }

    userFocus(pos, again = false) {
      if (!again && this.focused === pos && this.announced === pos) return;
      this.focus(pos);
      this.announced = pos;
      this.root.dispatchEvent(new CustomEvent("cm:focus", { bubbles: true, detail: { position: pos } }));
    }

    stepOpacity(d) {
      this.display.set({ opacity: Math.round((this.display.opacity + d) * 20) / 20 });
    }

    /* ---------- public API ---------- */
    setMode(mode) {
      if (mode !== "fill" && mode !== "contour") throw new Error(`mode must be 'fill' or 'contour', not ${mode}`);
      this.display.set({ mode });
    }
    setOpacity(value) {
      this.display.set({ opacity: value });
    }
    setMasksVisible(visible) {
      this.display.set({ masksVisible: !!visible });
    }
    setWindow(center, width) {
      this.display.set({ center: Number(center), width: Number(width) });
    }
    resetView() {
      this.view.reset();
    }
    /** The enlarged view shows where the masks differ instead of one mask (adjudication):
     *  with two masks, A only / B only / both in three colours; with more, some / all of them. */
    showDifference() {
      if (!this.focusPane || this.masks.size < 2) return false;
      const masks = [...this.masks.entries()].sort((a, b) => a[0] - b[0]).map(([, m]) => m);
      const { w, h } = masks[0], n = w * h, colours = CM.DIFFERENCE_COLORS.map((c) => rgbaOf(c));
      const canvas = document.createElement("canvas");
      Object.assign(canvas, { width: w, height: h });
      const ctx = canvas.getContext("2d"), img = ctx.createImageData(w, h), out = new Uint32Array(img.data.buffer);
      for (let i = 0; i < n; i++) {
        let count = 0;
        for (const m of masks) count += m.bits[i] ? 1 : 0;
        if (!count) continue;
        if (masks.length === 2) out[i] = count === 2 ? colours[2] : masks[0].bits[i] ? colours[0] : colours[1];
        else out[i] = count === masks.length ? colours[2] : colours[1];
      }
      ctx.putImageData(img, 0, 0);
      this.focusPane.overlays = () => ({ get: () => canvas });
      this.caption(this.focusPane, "Where they differ");
      this.focusPane.el.setAttribute("aria-label", "Where the masks differ, enlarged");
      this.focusPane.invalidate();
      this.root.dispatchEvent(new CustomEvent("cm:difference", { bubbles: true }));
      return true;
    }
    focus(position) {
      const pos = Number(position), pane = this.panes.find((p) => Number(p.el.dataset.position) === pos);
      if (!pane) throw new Error(`no candidate pane at position ${position}`);
      this.focused = pos;
      for (const p of this.panes) {
        const on = p === pane;
        p.el.classList.toggle("cm-focused", on);
        if (on) p.el.setAttribute("aria-current", "true");
        else p.el.removeAttribute("aria-current");
      }
      if (this.focusPane) {
        const label = pane.el.dataset.label || String(pos);
        this.focusPane.overlays = () => this.masks.get(pos);
        this.caption(this.focusPane, label);
        this.focusPane.el.setAttribute("aria-label", `Candidate ${label}, enlarged`);
        this.focusPane.invalidate();
      }
    }
  }

  // Okabe–Ito: the first mask only, the second only (or "some" of several), both (or all).
  CM.DIFFERENCE_COLORS = [[86, 180, 233], [213, 94, 0], [240, 228, 66]];
  function rgbaOf([r, g, b]) {
    return (255 << 24) | (b << 16) | (g << 8) | r; // little-endian RGBA
  }

  CM.viewer = function (el) {
    if (!el || !el.hasAttribute || !el.hasAttribute("data-cm-viewer")) throw new Error("CM.viewer needs a [data-cm-viewer] element");
    if (!instances.has(el)) instances.set(el, new Viewer(el));
    return instances.get(el);
  };
  CM.autoInit("[data-cm-viewer]", CM.viewer);
})();
