/*
 * collabmask — radiograph display tools of the review screens: window presets, invert and a loupe,
 * and the brush size in mm on the draw screen. Needs cm-core.js, cm-controls.js and the screen's
 * component (cm-viewer.js or cm-draw.js); it starts once they have (DOMContentLoaded).
 *
 * DOM contract (review/_display_tools.html):
 *   <div data-cm-display-tools data-pixel-spacing-mm="(optional) row col" hidden>
 *     <button data-cm-preset="default|lung|mediastinum|bone">  <button data-cm-control="invert">
 *     <button data-cm-control="loupe">
 *   </div>
 *   The group moves into the toolbar of the screen's [data-cm-viewer] or [data-cm-draw]. Everything
 *   happens in the browser on the 8-bit display image: the stored image and masks never change.
 *   Presets and invert go through the component's shared display settings (CM.Display), so every
 *   pane of a screen shows the same window; the reader's preset and invert are kept in localStorage
 *   ("cm-display") and carried to the next case, a case prerendered ahead included.
 *   Keys (added to the component's key table, so its help lists them): V / Shift+V next / previous
 *   preset, I invert, Z (hold) loupe, Shift+Z loupe on / off.
 */
(function () {
  "use strict";
  const CM = (window.CM = window.CM || {});
  const STORE = "cm-display";
  const LOUPE_SIZE = 240; // CSS px, the loupe's diameter
  const LOUPE_ZOOM = 2.5; // times what the pane shows

  /* Window presets as centre / width on the 0–255 scale of the display image (not Hounsfield units:
   * a radiograph has none). Lungs sit in the dark half, the mediastinum and soft tissue in the upper
   * half, bone at the bright end; each preset spreads its band over the full grey range. */
  CM.WINDOW_PRESETS = {
    default: { center: 127.5, width: 255 }, // the identity: the display image as stored
    lung: { center: 85, width: 170 },
    mediastinum: { center: 170, width: 130 },
    bone: { center: 190, width: 130 },
  };
  const PRESETS = CM.WINDOW_PRESETS, ORDER = Object.keys(PRESETS);

  function stored() {
    let s = {};
    try {
      s = JSON.parse(localStorage.getItem(STORE) || "{}") || {};
    } catch (_) {
      /* unreadable or blocked storage: the defaults */
    }
    return { preset: ORDER.includes(s.preset) ? s.preset : "default", invert: s.invert === true };
  }
  function store(settings) {
    try {
      localStorage.setItem(STORE, JSON.stringify(settings));
    } catch (_) {
      /* private mode or full: the setting lasts for this screen only */
    }
  }
  /** The preset the display's window is at, or null for a window set by hand. */
  function presetOf(display) {
    return ORDER.find((name) => PRESETS[name].center === display.center && PRESETS[name].width === display.width) || null;
  }

  /* ---------- the loupe: a magnified circle of one pane (image and mask) under the cursor ---------- */
  class Loupe {
    constructor(panes, { brushRadius } = {}) {
      Object.assign(this, { panes, brushRadius, held: false, pinned: false, at: null });
      this.el = document.createElement("canvas");
      this.el.className = "cm-loupe";
      this.el.hidden = true;
      this.el.setAttribute("aria-hidden", "true");
      this.el.dataset.zoom = String(LOUPE_ZOOM);
      Object.assign(this.el.style, { width: `${LOUPE_SIZE}px`, height: `${LOUPE_SIZE}px` });
      document.body.append(this.el);
      // The pane's own painter draws the lens: same window, invert, mask mode and opacity.
      this.lens = Object.assign(Object.create(CM.Pane.prototype), { canvas: this.el, ctx: this.el.getContext("2d") });
      this.draw = () => this.render();
      document.addEventListener("pointermove", (e) => this.track(e), { passive: true });
      document.addEventListener("pointerdown", (e) => this.track(e), { passive: true });
      document.documentElement.addEventListener("pointerleave", () => this.track(null));
    }
    get on() {
      return this.held || this.pinned;
    }
    track(e) {
      const pane = e && this.panes.find((p) => p.canvas === e.target);
      this.at = pane ? { pane, x: e.clientX, y: e.clientY } : null;
      if (this.on || !this.el.hidden) this.invalidate();
    }
    invalidate() {
      CM.schedule(this.draw);
    }
    render() {
      const at = this.at, pane = at && at.pane;
      if (!this.on || !pane || !pane.image) {
        this.el.hidden = true;
        return;
      }
      const dpr = window.devicePixelRatio || 1, size = Math.round(LOUPE_SIZE * dpr), v = pane.view;
      if (this.el.width !== size) Object.assign(this.el, { width: size, height: size });
      const p = pane.toImage(at.x, at.y), s = pane.transform().s * LOUPE_ZOOM;
      Object.assign(this.lens, {
        display: pane.display,
        image: pane.image,
        overlays: pane.overlays,
        view: { w: v.w, h: v.h, cx: p.x, cy: p.y, zoom: s / Math.min(size / v.w, size / v.h) },
        decorate: (ctx) => this.mark(ctx, size, s, dpr),
      });
      this.lens.render();
      Object.assign(this.el.style, { left: `${at.x - LOUPE_SIZE / 2}px`, top: `${at.y - LOUPE_SIZE / 2}px` });
      this.el.hidden = false;
    }
    /** The point under the cursor (and the brush's outline on the draw screen), as the pane shows it. */
    mark(ctx, size, s, dpr) {
      const c = size / 2, r = this.brushRadius ? this.brushRadius(s) : 0;
      ctx.beginPath();
      if (r > 0) ctx.arc(c, c, r, 0, Math.PI * 2);
      else for (const [dx, dy] of [[-1, 0], [1, 0], [0, -1], [0, 1]]) {
        ctx.moveTo(c + dx * 4 * dpr, c + dy * 4 * dpr);
        ctx.lineTo(c + dx * 12 * dpr, c + dy * 12 * dpr);
      }
      ctx.lineWidth = 3 * dpr;
      ctx.strokeStyle = "rgba(0,0,0,0.7)";
      ctx.stroke();
      ctx.lineWidth = 1.25 * dpr;
      ctx.strokeStyle = CM.COLORS.accent;
      ctx.stroke();
    }
  }

  /* ---------- one screen's tools ---------- */
  class DisplayTools {
    constructor(group, component, root) {
      Object.assign(this, { group, component, display: component.display, settings: stored() });
      const panes = component.all || [component.pane];
      const editor = root.hasAttribute("data-cm-draw") ? component : null;
      this.loupe = new Loupe(panes, {
        brushRadius: editor && ((s) => (editor.tool === "brush" ? ((editor.size / 2) * editor.view.w * s) / editor.ww : 0)),
      });
      const redraw = () => this.loupe.invalidate();
      component.view.addEventListener("change", redraw);
      this.display.addEventListener("change", () => (this.sync(), this.remember(), redraw()));

      const bar = root.querySelector("[data-cm-toolbar]") || root;
      bar.insertBefore(group, bar.querySelector(":scope > .cm-status"));
      group.hidden = false;
      group.querySelectorAll("[data-cm-preset]").forEach((b) => b.addEventListener("click", () => this.preset(b.dataset.cmPreset)));
      this.button("invert").addEventListener("click", () => this.display.set({ invert: !this.display.invert }));
      this.button("loupe").addEventListener("click", () => this.pin(!this.loupe.pinned));
      for (const b of group.querySelectorAll("button")) b.addEventListener("click", (e) => e.detail > 0 && b.blur());

      const spacing = (group.dataset.pixelSpacingMm || "").split(/\s+/).filter(Boolean).map(Number);
      if (editor && spacing.length) editor.setPixelSpacing(spacing);
      this.addKeys(component.keys);
      this.apply(this.settings, true);
      this.sync();
      // The next case may have been rendered ahead, before the reader changed a setting here.
      const reread = () => this.apply(stored());
      window.addEventListener("storage", (e) => e.key === STORE && reread());
      document.addEventListener("prerenderingchange", reread);
      window.addEventListener("pageshow", (e) => e.persisted && reread());
    }
    button(name) {
      return this.group.querySelector(`[data-cm-control="${name}"]`);
    }
    preset(name) {
      const p = PRESETS[name];
      if (!p) throw new Error(`unknown window preset ${name}; use one of ${ORDER.join(", ")}`);
      this.display.set({ center: p.center, width: p.width });
    }
    step(by) {
      const at = ORDER.indexOf(presetOf(this.display) || this.settings.preset);
      this.preset(ORDER[(at + by + ORDER.length) % ORDER.length]);
    }
    pin(on) {
      this.loupe.pinned = on;
      this.sync();
      this.loupe.invalidate();
    }
    /** Settings from storage. Later on, only what differs: a window set by hand here stays until
     *  the preset itself changes. */
    apply(settings, first = false) {
      const patch = {};
      if (first || settings.preset !== this.settings.preset) {
        const p = PRESETS[settings.preset];
        Object.assign(patch, { center: p.center, width: p.width });
      }
      if (settings.invert !== this.display.invert) patch.invert = settings.invert;
      this.settings = settings;
      if (Object.keys(patch).length) this.display.set(patch);
    }
    remember() {
      const next = { preset: presetOf(this.display) || this.settings.preset, invert: this.display.invert };
      if (next.preset === this.settings.preset && next.invert === this.settings.invert) return;
      this.settings = next;
      store(next);
    }
    sync() {
      const active = presetOf(this.display);
      this.group.querySelectorAll("[data-cm-preset]").forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.cmPreset === active)));
      this.group.dataset.cmWindow = active || "custom";
      this.button("invert").setAttribute("aria-pressed", String(this.display.invert));
      this.button("loupe").setAttribute("aria-pressed", String(this.loupe.pinned));
    }
    /** Into the component's own key table, after its window keys: one table drives keys and help. */
    addKeys(table) {
      const loupe = this.loupe;
      const entries = [
        { keys: ["v"], shift: false, label: "V  ⇧V", help: "Window preset: next / previous (default, lung, mediastinum, bone)", run: () => this.step(1) },
        { keys: ["v"], shift: true, run: () => this.step(-1) },
        { keys: ["i"], label: "I", help: "Invert grey values", run: () => this.display.set({ invert: !this.display.invert }) },
        { keys: ["z"], shift: false, hold: true, label: "Z (hold)", help: `Loupe: ${LOUPE_ZOOM}× under the cursor while held`,
          run: () => ((loupe.held = true), loupe.invalidate()), release: () => ((loupe.held = false), loupe.invalidate()) },
        { keys: ["z"], shift: true, label: "⇧Z", help: "Loupe on / off", run: () => this.pin(!loupe.pinned) },
      ];
      const after = table.findIndex((k) => k.label === "L");
      table.splice(after < 0 ? table.length : after + 1, 0, ...entries);
    }
  }

  function start() {
    for (const group of document.querySelectorAll("[data-cm-display-tools]")) {
      if (group.dataset.cmStarted) continue;
      const scope = group.closest("[data-review-screen]") || document;
      const root = scope.querySelector("[data-cm-viewer],[data-cm-draw]");
      if (!root || !CM.Pane) continue; // no image on this screen, or the components did not load
      const component = root.hasAttribute("data-cm-draw") ? CM.draw(root) : CM.viewer(root);
      group.dataset.cmStarted = "1";
      new DisplayTools(group, component, root);
    }
  }
  // The screen templates load this file before the components' scripts: start once all have run.
  if (document.readyState === "complete") start();
  else {
    document.addEventListener("DOMContentLoaded", start);
    window.addEventListener("load", start);
  }
})();
