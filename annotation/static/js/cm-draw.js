/*
 * collabmask — mask drawing editor of the review screens.
 * Needs, in this order: cm-core.js, cm-controls.js, cm-raster.js, cm-draft.js, then this file.
 *
 * DOM contract (fixed; templates code against it):
 *   <div data-cm-draw data-image-url="..." data-width="W" data-height="H"
 *        data-work-width="w" data-work-height="h" data-initial-mask-url="(optional: refine a candidate)"
 *        data-draft-url="/review/t/<task token>/draft" data-draft-key="<task token>">
 *     <div data-cm-toolbar></div>   optional: where the tools and display controls go
 *   </div>
 *   Auto-initialises on DOMContentLoaded (and htmx:load). window.CM.draw(el) returns the same editor:
 *     ready: Promise            resolves once image, initial mask and draft are in
 *     toBlob(): Promise<Blob>   PNG, 8-bit greyscale, values 0/255 only, exactly w x h
 *     isEmpty(), clear(), undo(), redo()
 *     setTool('brush'|'eraser'|'polygon'|'fill'), setBrushSize(px)   (px in working pixels)
 *     setPixelSpacing(mm | [row mm, column mm] | null)   spacing of a working pixel: the brush size
 *                               is then shown in mm (else in px)
 *     discardDraft(): Promise   clears the local and the server draft; call it after a successful submit
 *   Click-to-refine (only with data-refine-url="/api/review/tasks/<token>/refine/"): the Click tool (K)
 *     sends the mask, every click so far and the ticked lung zones to the URL and shows the refined
 *     mask; click = positive (infection here), Shift+click = negative (none here); "Undo click"
 *     (Backspace with the Click tool) takes back the last click and the mask it made. The brush and
 *     the other tools touch up the result. refinement() returns {clicks, zones, model} or null.
 *   Events (bubbling, on the root): 'cm:ready', 'cm:change' {detail: {empty}} after every completed edit,
 *     'cm:refined' {detail: {clicks}} after a refined mask arrived.
 *   Drafts: see cm-draft.js (GET/PUT/DELETE data-draft-url, localStorage "cm-draft:<data-draft-key>").
 *   On load the newer of the server and the local draft replaces the initial mask.
 *   Keys: B brush, E eraser, P polygon/lasso, F flood fill, X paint/erase, [ ] brush size,
 *     Ctrl+Z undo, Ctrl+Shift+Z / Ctrl+Y redo, Shift+Delete clear; polygon: Enter or double-click or a click
 *     on the first vertex closes and fills, Backspace drops the last vertex, Escape cancels.
 *     View as in the viewer: + - 0, C, , . opacity, Space (hold) hide mask, M, W/S window, ; ' level, L, ?.
 *     Wheel zooms, middle-drag or Alt/Shift+drag pans, right-drag sets window/level.
 */
(function () {
  "use strict";
  const CM = (window.CM = window.CM || {});
  const R = CM.raster;
  const instances = new WeakMap();
  const TOOLS = { brush: "Brush", eraser: "Eraser", polygon: "Polygon", fill: "Fill" };

  class Editor {
    constructor(root) {
      const d = root.dataset;
      this.ww = Number(d.workWidth);
      this.wh = Number(d.workHeight);
      if (!(this.ww > 0 && this.wh > 0)) throw new Error("data-cm-draw needs data-work-width and data-work-height");
      this.root = root;
      root.classList.add("cm-draw");
      const w = Number(d.width) || this.ww, h = Number(d.height) || this.wh;
      root.style.setProperty("--cm-aspect", `${w} / ${h}`);
      root.style.setProperty("--cm-ar", String(w / h));
      this.bits = new Uint8Array(this.ww * this.wh);
      this.history = new R.History(this.ww, this.wh);
      this.tool = "brush";
      this.erase = false;
      this.size = Math.max(2, Math.round(Math.min(this.ww, this.wh) / 32));
      this.maxSize = Math.max(16, Math.round(Math.min(this.ww, this.wh) / 3));
      this.poly = null;
      this.hover = null;
      this.spacing = null; // mm per working pixel, when the case's pixel spacing is known
      this.seq = 0;
      this.display = new CM.Display();
      this.refineUrl = d.refineUrl || "";
      this.tools = this.refineUrl ? { ...TOOLS, click: "Click" } : TOOLS;
      this.clicks = []; // {x, y, positive} in working pixels, in order
      this.clickMasks = []; // the mask before each click: what undoing that click brings back
      this.zones = new Set();
      this.refineModel = null;
      this.refineSeq = 0;
      this.view = new CM.View(w, h);

      const bar = CM.toolbar(root, "Drawing tools");
      const stage = document.createElement("figure");
      stage.className = "cm-stage cm-loading";
      stage.setAttribute("aria-label", "Drawing area");
      root.append(stage);
      this.pane = new CM.Pane(stage, { view: this.view, display: this.display });
      this.mask = new CM.MaskOverlay(this.bits, this.ww, this.wh);
      this.pane.overlays = () => this.overlay();
      this.pane.decorate = (ctx, t) => this.decorate(ctx, t);
      const redraw = () => this.pane.invalidate();
      this.view.addEventListener("change", redraw);
      this.display.addEventListener("change", redraw);
      CM.bindGestures(this.pane, {
        view: this.view,
        display: this.display,
        // With the Click tool, Shift+click is a negative click, not a pan.
        isPan: (e) => e.button === 1 || (e.button === 0 && (e.altKey || (e.shiftKey && this.tool !== "click"))),
        onPress: (e) => e.button === 0 && this.press(e),
      });
      const c = this.pane.canvas;
      c.addEventListener("pointermove", (e) => this.setHover(e));
      c.addEventListener("pointerleave", () => this.setHover(null));
      c.addEventListener("dblclick", (e) => (e.preventDefault(), this.closePolygon()));

      this.help = CM.helpDialog(root, "Drawing keys", () => this.keys);
      this.keys = [...this.drawKeys(), ...CM.displayKeys({ view: this.view, display: this.display, help: this.help })];
      CM.bindKeys(root, this.keys);
      this.buildTools(bar);
      CM.displayControls(bar, { display: this.display, view: this.view, help: this.help });
      this.statusEl = document.createElement("span");
      this.statusEl.className = "cm-status";
      this.statusEl.setAttribute("role", "status");
      this.statusEl.setAttribute("data-cm-draft-status", "");
      bar.append(this.statusEl);
      this.draft = new CM.Draft({ url: d.draftUrl, key: d.draftKey, statusEl: this.statusEl });
      this.ready = this.load(d);
    }

    drawKeys() {
      const poly = () => !!this.poly;
      const size = (up) => this.setBrushSize(up ? Math.max(this.size + 1, Math.round(this.size * 1.2)) : Math.min(this.size - 1, Math.round(this.size / 1.2)));
      return [
        { keys: ["b"], label: "B", help: "Brush", run: () => this.setTool("brush") },
        { keys: ["e"], label: "E", help: "Eraser", run: () => this.setTool("eraser") },
        { keys: ["p"], label: "P", help: "Polygon: click corners, or drag a lasso", run: () => this.setTool("polygon") },
        { keys: ["f"], label: "F", help: "Flood fill the clicked region", run: () => this.setTool("fill") },
        { keys: ["x"], label: "X", help: "Paint / erase (polygon and fill erase too)", run: () => this.setErase(!this.erase) },
        { keys: ["["], label: "[  ]", help: "Brush smaller / larger", repeat: true, run: () => size(false) },
        { keys: ["]"], repeat: true, run: () => size(true) },
        { keys: ["z"], ctrl: true, shift: false, label: "Ctrl+Z", help: "Undo (while drawing a polygon: last corner)", repeat: true, run: () => this.undo() },
        { keys: ["z"], ctrl: true, shift: true, label: "Ctrl+Shift+Z  Ctrl+Y", help: "Redo", repeat: true, run: () => this.redo() },
        { keys: ["y"], ctrl: true, repeat: true, run: () => this.redo() },
        { keys: ["Delete", "Backspace"], shift: true, label: "Shift+Delete", help: "Clear the mask (undo brings it back)", run: () => this.clear() },
        { keys: ["Enter"], when: poly, label: "Enter", help: "Close and fill the polygon (or double-click, or click its first corner)", run: () => this.closePolygon() },
        { keys: ["Backspace"], shift: false, when: poly, label: "Backspace", help: "Drop the polygon's last corner", repeat: true, run: () => this.popVertex() },
        { keys: ["Escape"], when: poly, label: "Esc", help: "Cancel the polygon", run: () => this.cancelPolygon() },
        ...(this.refineUrl ? [
          { keys: ["k"], label: "K", help: "Click-to-refine: click marks infection, Shift+click marks none", run: () => this.setTool("click") },
          { keys: ["Backspace"], shift: false, when: () => !this.poly && this.tool === "click" && this.clicks.length > 0, label: "Backspace", help: "Undo the last click (Click tool)", run: () => this.undoClick() },
        ] : []),
        { label: "Alt/Shift+drag", help: "Pan (or drag with the middle button)" },
      ];
    }

    buildTools(bar) {
      const group = document.createElement("div");
      group.className = "cm-group";
      this.toolButtons = {};
      for (const [name, text] of Object.entries(this.tools)) {
        const key = { brush: "B", eraser: "E", polygon: "P", fill: "F", click: "K" }[name];
        const b = CM.button(`${text} <kbd>${key}</kbd>`, { "data-cm-tool": name, "aria-pressed": "false" });
        b.addEventListener("click", () => this.setTool(name));
        this.toolButtons[name] = b;
        group.append(b);
      }
      this.eraseButton = CM.button("Erase mode <kbd>X</kbd>", { "data-cm-control": "erase", "aria-pressed": "false", title: "Polygon and fill erase instead of paint (X)" });
      this.eraseButton.addEventListener("click", () => this.setErase(!this.erase));
      const lab = document.createElement("label");
      lab.className = "cm-range";
      lab.innerHTML = `<span>Size</span><input type="range" min="1" max="${this.maxSize}" step="1" data-cm-control="brush-size"><output aria-hidden="true"></output>`;
      this.sizeInput = lab.querySelector("input");
      this.sizeOut = lab.querySelector("output");
      this.sizeInput.setAttribute("aria-label", "Brush size in mask pixels");
      this.sizeInput.addEventListener("input", () => this.setBrushSize(Number(this.sizeInput.value)));
      group.append(this.eraseButton, lab);
      const edit = document.createElement("div");
      edit.className = "cm-group";
      const undo = CM.button("Undo <kbd>Ctrl Z</kbd>", { "data-cm-control": "undo", "aria-keyshortcuts": "Control+Z", title: "Undo (Ctrl+Z)" });
      const redo = CM.button("Redo <kbd>Ctrl Y</kbd>", { "data-cm-control": "redo", "aria-keyshortcuts": "Control+Shift+Z Control+Y", title: "Redo (Ctrl+Shift+Z)" });
      const clear = CM.button("Clear <kbd>⇧ Del</kbd>", { "data-cm-control": "clear", "aria-keyshortcuts": "Shift+Delete", title: "Clear the mask (Shift+Delete)" });
      undo.addEventListener("click", () => this.undo());
      redo.addEventListener("click", () => this.redo());
      clear.addEventListener("click", () => this.clear());
      edit.append(undo, redo, clear);
      bar.append(group, edit);
      if (this.refineUrl) this.buildRefine(bar);
      this.syncTools();
    }

    buildRefine(bar) {
      const group = document.createElement("div");
      group.className = "cm-group cm-refine";
      group.setAttribute("role", "group");
      group.setAttribute("aria-label", "Click-to-refine");
      const zones = document.createElement("fieldset");
      zones.className = "cm-zones";
      zones.innerHTML = "<legend>Zones</legend>";
      // Two columns as on the image: the patient's right lung on the left.
      const names = { right_upper: "R upper", left_upper: "L upper", right_middle: "R middle", left_middle: "L middle", right_lower: "R lower", left_lower: "L lower" };
      for (const [zone, text] of Object.entries(names)) {
        const lab = document.createElement("label");
        lab.title = `${text.replace("R ", "Right ").replace("L ", "Left ")} zone (the patient's ${zone.split("_")[0]} lung)`;
        lab.innerHTML = `<input type="checkbox" data-cm-zone="${zone}"><span>${text.split(" ")[0]}${text.split(" ")[1][0].toUpperCase()}</span>`;
        lab.querySelector("input").addEventListener("change", (e) => {
          if (e.target.checked) this.zones.add(zone);
          else this.zones.delete(zone);
          if (this.clicks.length) this.refine(false);
        });
        zones.append(lab);
      }
      this.undoClickButton = CM.button("Undo click", { "data-cm-control": "undo-click", disabled: "", title: "Take back the last click and the mask it made (Backspace with the Click tool)" });
      this.undoClickButton.addEventListener("click", () => this.undoClick());
      this.clickCount = document.createElement("span");
      this.clickCount.className = "cm-clicks";
      this.clickCount.setAttribute("data-cm-clicks", "0");
      this.clickCount.textContent = "no clicks";
      this.undoClickButton.append(this.clickCount);
      group.append(zones, this.undoClickButton);
      bar.append(group);
    }

    syncClicks() {
      if (!this.clickCount) return;
      const n = this.clicks.length;
      this.clickCount.setAttribute("data-cm-clicks", String(n));
      this.clickCount.textContent = n ? `${n} click${n === 1 ? "" : "s"}` : "no clicks";
      this.root.dataset.cmClicks = String(n);
      if (n) this.undoClickButton.removeAttribute("disabled");
      else this.undoClickButton.setAttribute("disabled", "");
      this.pane.invalidate();
    }

    addClick([wx, wy], positive) {
      const x = Math.min(this.ww - 1, Math.max(0, Math.floor(wx)));
      const y = Math.min(this.wh - 1, Math.max(0, Math.floor(wy)));
      this.clickMasks.push(this.bits.slice());
      this.clicks.push({ x, y, positive });
      this.syncClicks();
      this.refine(true);
    }

    undoClick() {
      if (!this.clicks.length) return;
      this.refineSeq++; // an answer still on its way is for a click that is gone
      this.clicks.pop();
      const before = this.clickMasks.pop();
      this.begin();
      this.bits.set(before);
      this.touch([0, 0, this.ww, this.wh]);
      this.end();
      if (!this.clicks.length) this.refineModel = null;
      this.say("");
      this.syncClicks();
    }

    say(text, error = false) {
      if (error) this.statusEl.dataset.state = "error";
      else delete this.statusEl.dataset.state;
      this.statusEl.textContent = text;
    }

    /** Ask for the mask refined from the mask before the last click and every click so far. */
    async refine(fromClick) {
      const seq = ++this.refineSeq, n = this.clicks.length;
      const start = this.clickMasks[this.clickMasks.length - 1];
      this.root.dataset.cmRefining = "true";
      this.say("Refining…");
      try {
        const empty = start.indexOf(1) === -1;
        const mask = empty ? null : await dataUrlOf(await CM.encodeMaskPNG(start, this.ww, this.wh));
        const r = await fetch(this.refineUrl, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": CM.csrfToken() },
          body: JSON.stringify({ mask, clicks: this.clicks, zones: [...this.zones] }),
        });
        const answer = await r.json().catch(() => ({}));
        if (!r.ok) throw new Error(answer.detail || `the server answered ${r.status}`);
        const bits = CM.bitsOf(await CM.fetchBitmap(blobOf(answer.mask)), this.ww, this.wh);
        if (seq !== this.refineSeq) return;
        this.begin();
        this.bits.set(bits);
        this.touch([0, 0, this.ww, this.wh]);
        this.end();
        this.refineModel = answer.model_version;
        this.say("");
        this.root.dispatchEvent(new CustomEvent("cm:refined", { bubbles: true, detail: { clicks: n } }));
      } catch (err) {
        if (seq !== this.refineSeq) return;
        if (fromClick) {
          this.clicks.pop();
          this.clickMasks.pop();
          this.syncClicks();
        }
        this.say(`Click-to-refine: ${err.message}`, true);
      } finally {
        if (seq === this.refineSeq) delete this.root.dataset.cmRefining;
      }
    }

    syncTools() {
      const active = this.tool === "brush" && this.erase ? "eraser" : this.tool;
      for (const [name, b] of Object.entries(this.toolButtons)) b.setAttribute("aria-pressed", String(name === active));
      this.eraseButton.setAttribute("aria-pressed", String(this.erase));
      this.sizeInput.value = this.size;
      this.sizeOut.textContent = this.sizeLabel();
      this.sizeInput.setAttribute("aria-valuetext", this.sizeLabel());
      this.root.dataset.cmActiveTool = active;
      this.pane.canvas.style.cursor = this.tool === "brush" ? "none" : "crosshair";
      this.pane.invalidate();
    }

    async load(d) {
      const problem = (text) => (this.statusEl.dataset.state = "error", (this.statusEl.textContent = text));
      try {
        const grey = CM.greyOf(await CM.fetchBitmap(d.imageUrl));
        Object.assign(this.view, { w: grey.w, h: grey.h });
        this.view.reset();
        this.pane.image = new CM.WindowedImage(grey);
      } catch (err) {
        this.pane.el.classList.add("cm-error");
        this.pane.el.setAttribute("data-cm-error", "The image could not be loaded.");
      }
      if (d.initialMaskUrl) {
        try {
          this.bits.set(CM.bitsOf(await CM.fetchBitmap(d.initialMaskUrl), this.ww, this.wh));
        } catch (err) {
          problem("The candidate mask could not be loaded — starting blank");
        }
      }
      const draft = await this.draft.load();
      if (draft) {
        try {
          this.bits.set(CM.bitsOf(await CM.fetchBitmap(draft.blob), this.ww, this.wh));
        } catch (err) {
          problem("The saved draft could not be read");
        }
      }
      this.mask.update(null);
      this.pane.el.classList.remove("cm-loading");
      this.pane.invalidate();
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      this.root.dispatchEvent(new CustomEvent("cm:ready", { bubbles: true }));
    }

    /* ---------- coordinates ---------- */
    toWork(e) {
      const p = this.pane.toImage(e.clientX, e.clientY);
      return [(p.x * this.ww) / this.view.w, (p.y * this.wh) / this.view.h];
    }
    workToDevice([x, y], t) {
      return [(x * this.view.w * t.s) / this.ww + t.ox, (y * this.view.h * t.s) / this.wh + t.oy];
    }

    /* ---------- editing ---------- */
    begin() {
      this.before = this.bits.slice();
      this.editRect = null;
    }
    touch(rect) {
      if (!rect) return;
      this.editRect = R.union(this.editRect, rect);
      this.dirty = R.union(this.dirty, rect);
      this.pane.invalidate();
    }
    end() {
      const changed = this.history.record(this.before, this.bits, this.editRect);
      this.before = null;
      if (changed) this.changed();
    }
    changed() {
      const seq = ++this.seq;
      this.root.dispatchEvent(new CustomEvent("cm:change", { bubbles: true, detail: { empty: this.isEmpty() } }));
      CM.encodeMaskPNG(this.bits, this.ww, this.wh).then((blob) => seq === this.seq && this.draft.save(blob));
    }
    overlay() {
      if (this.dirty) this.mask.update(this.dirty); // only the rectangle the last edits touched
      this.dirty = null;
      return this.mask;
    }

    press(e) {
      e.preventDefault();
      this.pane.el.focus({ preventScroll: true });
      const c = this.pane.canvas, value = this.erase ? 0 : 1, start = this.toWork(e);
      c.setPointerCapture(e.pointerId);
      const track = (onMove, onUp) => {
        const move = (ev) => {
          for (const ce of ev.getCoalescedEvents ? ev.getCoalescedEvents() : [ev]) onMove(this.toWork(ce), ce);
          this.setHover(ev);
        };
        const up = (ev) => {
          c.removeEventListener("pointermove", move);
          c.removeEventListener("pointerup", up);
          c.removeEventListener("pointercancel", up);
          onUp(ev);
        };
        c.addEventListener("pointermove", move);
        c.addEventListener("pointerup", up);
        c.addEventListener("pointercancel", up);
      };
      if (this.tool === "click") {
        c.releasePointerCapture(e.pointerId);
        return this.addClick(start, !e.shiftKey);
      }
      if (this.tool === "fill") {
        this.begin();
        this.touch(R.flood(this.bits, this.ww, this.wh, start[0], start[1], value));
        return this.end();
      }
      if (this.tool === "brush") {
        this.begin();
        let last = start;
        this.touch(R.segment(this.bits, this.ww, this.wh, ...last, ...last, this.size, value));
        return track((p) => {
          this.touch(R.segment(this.bits, this.ww, this.wh, ...last, ...p, this.size, value));
          last = p;
        }, () => this.end());
      }
      // polygon: a click adds a corner; a drag adds a freehand run; a drag that starts the polygon is a lasso
      const fresh = !this.poly;
      if (!fresh && this.nearFirst(e)) return this.closePolygon();
      if (fresh) this.poly = { pts: [] };
      this.poly.pts.push(start);
      let dragged = false;
      const sx = e.clientX, sy = e.clientY;
      track((p, ev) => {
        if (!dragged && Math.hypot(ev.clientX - sx, ev.clientY - sy) < 5) return;
        dragged = true;
        const last = this.poly.pts[this.poly.pts.length - 1];
        if (Math.hypot(p[0] - last[0], p[1] - last[1]) >= 0.5) this.poly.pts.push(p);
      }, () => {
        if (fresh && dragged) this.closePolygon();
        else this.pane.invalidate();
      });
    }
    nearFirst(e) {
      if (!this.poly || this.poly.pts.length < 3) return false;
      const t = this.pane.transform(), r = this.pane.canvas.getBoundingClientRect(), dpr = this.pane.canvas.width / r.width;
      const [fx, fy] = this.workToDevice(this.poly.pts[0], t);
      return Math.hypot((e.clientX - r.left) * dpr - fx, (e.clientY - r.top) * dpr - fy) <= 8 * dpr;
    }
    closePolygon() {
      if (!this.poly) return;
      const pts = this.poly.pts;
      this.poly = null;
      this.begin();
      this.touch(R.polygon(this.bits, this.ww, this.wh, pts, this.erase ? 0 : 1));
      this.end();
      this.pane.invalidate();
    }
    cancelPolygon() {
      this.poly = null;
      this.pane.invalidate();
    }
    popVertex() {
      if (!this.poly) return;
      this.poly.pts.pop();
      if (!this.poly.pts.length) this.poly = null;
      this.pane.invalidate();
    }
    setHover(e) {
      this.hover = e ? { x: e.clientX, y: e.clientY } : null;
      if (this.tool === "brush" || this.poly) this.pane.invalidate();
    }

    /** Brush outline and polygon in progress, drawn over the image in device pixels. */
    decorate(ctx, t) {
      const r = this.pane.canvas.getBoundingClientRect(), dpr = this.pane.canvas.width / Math.max(1, r.width);
      const hover = this.hover && [(this.hover.x - r.left) * dpr, (this.hover.y - r.top) * dpr];
      const stroke = (width, color, dash = []) => {
        ctx.lineWidth = width * dpr;
        ctx.strokeStyle = color;
        ctx.setLineDash(dash.map((v) => v * dpr));
        ctx.stroke();
      };
      if (this.tool === "brush" && hover) {
        const radius = Math.max(1.5 * dpr, ((this.size / 2) * this.view.w * t.s) / this.ww);
        ctx.beginPath();
        ctx.arc(hover[0], hover[1], radius, 0, Math.PI * 2);
        stroke(3, "rgba(0,0,0,0.7)");
        stroke(1.25, this.erase ? "#ffffff" : CM.COLORS.accent, this.erase ? [4, 3] : []);
      }
      for (const k of this.clicks) {
        const [x, y] = this.workToDevice([k.x + 0.5, k.y + 0.5], t);
        ctx.beginPath();
        ctx.arc(x, y, 5 * dpr, 0, Math.PI * 2);
        ctx.fillStyle = k.positive ? "#009e73" : "#d55e00"; // Okabe–Ito green / vermilion
        ctx.fill();
        stroke(1.5, "#fff");
      }
      if (this.poly) {
        const pts = this.poly.pts.map((p) => this.workToDevice(p, t));
        ctx.beginPath();
        pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
        if (hover) ctx.lineTo(...hover);
        if (pts.length + (hover ? 1 : 0) >= 3) {
          ctx.fillStyle = this.erase ? "rgba(255,255,255,0.12)" : "rgba(86,180,233,0.16)"; // what closing would fill
          ctx.fill("nonzero");
        }
        stroke(3, "rgba(0,0,0,0.7)");
        stroke(1.5, this.erase ? "#ffffff" : CM.COLORS.accent, this.erase ? [5, 3] : []);
        ctx.setLineDash([]);
        const [fx, fy] = pts[0];
        ctx.beginPath();
        ctx.arc(fx, fy, 5 * dpr, 0, Math.PI * 2);
        ctx.fillStyle = pts.length >= 3 ? CM.COLORS.accent : "rgba(86,180,233,0.4)";
        ctx.fill();
        stroke(1.5, "#000");
      }
    }

    /* ---------- public API ---------- */
    async toBlob() {
      await this.ready;
      return CM.encodeMaskPNG(this.bits, this.ww, this.wh);
    }
    isEmpty() {
      return this.bits.indexOf(1) === -1;
    }
    refinement() {
      if (!this.clicks.length || this.refineModel === null) return null;
      return { clicks: this.clicks.map((k) => ({ ...k })), zones: [...this.zones], model: this.refineModel };
    }
    clear() {
      this.cancelPolygon();
      this.begin();
      this.bits.fill(0);
      this.touch([0, 0, this.ww, this.wh]);
      this.end();
    }
    undo() {
      if (this.poly) return this.popVertex();
      const rect = this.history.undo(this.bits);
      if (rect) (this.touch(rect), this.changed());
    }
    redo() {
      const rect = this.history.redo(this.bits);
      if (rect) (this.touch(rect), this.changed());
    }
    setTool(name) {
      if (!(name in this.tools)) throw new Error(`unknown tool ${name}; use one of ${Object.keys(this.tools).join(", ")}`);
      if (name !== "polygon") this.cancelPolygon();
      if (name === "brush" || name === "eraser") this.erase = name === "eraser";
      this.tool = name === "eraser" ? "brush" : name;
      this.syncTools();
    }
    setErase(on) {
      this.erase = !!on;
      this.syncTools();
    }
    setBrushSize(px) {
      const n = Math.round(Number(px));
      if (!Number.isFinite(n)) throw new Error(`brush size must be a number, not ${px}`);
      this.size = Math.min(this.maxSize, Math.max(1, n));
      this.syncTools();
    }
    discardDraft() {
      return this.draft.discard();
    }
    setPixelSpacing(mm) {
      const values = [].concat(mm ?? []).map(Number);
      if (values.length > 2 || values.some((v) => !(v > 0 && Number.isFinite(v)))) {
        throw new Error(`pixel spacing must be one or two positive numbers of mm, not ${mm}`);
      }
      // A brush is round: its size in mm is taken along the mean of the two pixel spacings.
      this.spacing = values.length ? values.reduce((a, b) => a + b) / values.length : null;
      this.syncTools();
    }
    sizeLabel() {
      if (!this.spacing) return `${this.size}px`;
      const mm = this.size * this.spacing;
      return `${mm < 10 ? mm.toFixed(1) : Math.round(mm)} mm`;
    }
  }

  function dataUrlOf(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
  }
  function blobOf(dataUrl) {
    const bytes = atob(String(dataUrl).split(",", 2)[1] || "");
    const out = new Uint8Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) out[i] = bytes.charCodeAt(i);
    return new Blob([out], { type: "image/png" });
  }

  CM.draw = function (el) {
    if (!el || !el.hasAttribute || !el.hasAttribute("data-cm-draw")) throw new Error("CM.draw needs a [data-cm-draw] element");
    if (!instances.has(el)) instances.set(el, new Editor(el));
    return instances.get(el);
  };
  CM.autoInit("[data-cm-draw]", CM.draw);
})();
