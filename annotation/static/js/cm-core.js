/*
 * collabmask — shared core of the review screen components (load before cm-viewer.js / cm-draw.js).
 *
 * DOM contract (fixed; templates code against it):
 *   Viewer: <div data-cm-viewer data-image-url="..." data-width="W" data-height="H">
 *             <figure data-cm-pane data-position="1" data-label="A" data-mask-url="..."></figure> (one per candidate;
 *                     the URL may be a base64 data: URI: the page carries small masks itself)
 *             <figure data-cm-pane data-cm-focus></figure>  (optional large view of the focused candidate)
 *           </div>
 *           window.CM.viewer(el) -> {setMode('fill'|'contour'), setOpacity(0..1), setMasksVisible(bool),
 *                                    setWindow(center, width), resetView(), focus(position)}
 *           A pane click/focus dispatches a bubbling CustomEvent 'cm:focus' {detail: {position}}.
 *   Draw:   <div data-cm-draw data-image-url data-width data-height data-work-width data-work-height
 *                data-initial-mask-url="(optional)" data-draft-url="/api/review/tasks/<token>/draft/" data-draft-key="<token>">
 *           window.CM.draw(el) -> editor {toBlob(), isEmpty(), clear(), undo(), redo(), setTool(), setBrushSize(),
 *                                         discardDraft(), ready}
 *   Script order: cm-core.js, cm-controls.js, then cm-viewer.js and/or cm-raster.js, cm-draft.js, cm-draw.js.
 *   Optional hooks: an element [data-cm-toolbar] inside the root receives the controls.
 *
 * This file: image/mask decoding, window/level lookup tables, the shared view
 * (zoom/pan in image coordinates, so panes of different sizes stay in sync), panes that render on canvases
 * once per animation frame, precomputed mask overlays, the key table + help dialog, and display controls.
 */
(function () {
  "use strict";
  const CM = (window.CM = window.CM || {});

  // Okabe–Ito orange: tells apart for the common colour-vision deficiencies and stands out on grey.
  CM.COLORS = { fill: [230, 159, 0], contour: [255, 194, 26], halo: [0, 0, 0], accent: "#56b4e9" };

  /* ---------- the CSRF token for fetch() posts (base.html puts it in hx-headers) ---------- */
  CM.csrfToken = function () {
    try {
      const h = JSON.parse(document.body.getAttribute("hx-headers") || "{}");
      if (h["X-CSRFToken"]) return h["X-CSRFToken"];
    } catch (_) {
      /* fall through to the cookie */
    }
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  };

  /* ---------- one redraw per animation frame, whatever asked for it ---------- */
  const pending = new Set();
  let frameRequested = false;
  CM.schedule = function (fn) {
    pending.add(fn);
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(() => {
      frameRequested = false;
      const jobs = [...pending];
      pending.clear();
      for (const job of jobs) job();
    });
  };

  /* ---------- decoding ---------- */
  /** The bytes of a data: URI (a mask the page carries), without fetch(): the page's CSP lets
   *  fetch() reach this site only. */
  function dataBlob(uri) {
    const comma = uri.indexOf(","), head = uri.slice(5, comma);
    if (comma < 0 || !head.endsWith(";base64")) throw new Error("not a base64 data: URI");
    const text = atob(uri.slice(comma + 1)), bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return new Blob([bytes], { type: head.slice(0, -";base64".length) });
  }
  CM.fetchBitmap = async function (source) {
    const blob = source instanceof Blob ? source
      : source.startsWith("data:") ? dataBlob(source)
      : await (await CM.fetchOk(source)).blob();
    // No colour management: grey values must reach the lookup table as stored in the file.
    return createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  };
  CM.fetchOk = async function (url) {
    const r = await fetch(url, { credentials: "same-origin" });
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return r;
  };
  function pixelsOf(bitmap, w, h) {
    const c = document.createElement("canvas");
    c.width = w;
    c.height = h;
    const ctx = c.getContext("2d", { willReadFrequently: true });
    ctx.imageSmoothingEnabled = false; // masks scale with nearest neighbour
    ctx.drawImage(bitmap, 0, 0, w, h);
    return ctx.getImageData(0, 0, w, h).data;
  }
  /** Greyscale bytes (one per pixel) of an 8-bit image at its own size. */
  CM.greyOf = function (bitmap) {
    const w = bitmap.width, h = bitmap.height, rgba = pixelsOf(bitmap, w, h);
    const grey = new Uint8Array(w * h);
    for (let i = 0; i < grey.length; i++) grey[i] = rgba[i * 4];
    return { grey, w, h };
  };
  /** Binary mask (0/1 bytes) at w x h. 0/255, 0/1 and palette masks all work: "on" is any value above
   *  half of the brightest value in the file, transparent pixels are off. */
  CM.bitsOf = function (bitmap, w, h) {
    const rgba = pixelsOf(bitmap, w, h), n = w * h, bits = new Uint8Array(n);
    let top = 0;
    for (let i = 0; i < n; i++) {
      const o = i * 4, v = Math.max(rgba[o], rgba[o + 1], rgba[o + 2]);
      if (rgba[o + 3] >= 128 && v > top) top = v;
    }
    const threshold = top >= 128 ? 128 : 1;
    for (let i = 0; i < n; i++) {
      const o = i * 4;
      bits[i] = rgba[o + 3] >= 128 && Math.max(rgba[o], rgba[o + 1], rgba[o + 2]) >= threshold ? 1 : 0;
    }
    return bits;
  };

  /* ---------- window/level: a 256-entry table, a cached canvas per setting, a small pyramid ---------- */
  CM.DEFAULT_WINDOW = { center: 127.5, width: 255 };
  CM.windowLUT = function (center, width, invert = false) {
    // DICOM PS3.3 C.11.2.1.2 linear function, 8-bit in and out; (127.5, 255) is the identity.
    // `invert` shows the windowed values as a negative (after the window, as a viewer's invert does).
    const lut = new Uint32Array(256), w = Math.max(1, width);
    for (let v = 0; v < 256; v++) {
      const lin = Math.round(Math.min(255, Math.max(0, ((v - (center - 0.5)) / Math.max(1, w - 1) + 0.5) * 255)));
      const y = invert ? 255 - lin : lin;
      lut[v] = 0xff000000 | (y << 16) | (y << 8) | y; // little-endian RGBA
    }
    return lut;
  };
  /** The greyscale image at full size and halved again and again (2 x 2 means, computed once). A window
   *  setting is applied only to the level a pane needs, so dragging the window stays smooth on full-size
   *  images; results are cached per setting and level. */
  CM.WindowedImage = class {
    constructor({ grey, w, h }) {
      Object.assign(this, { w, h });
      this.grey = [{ grey, w, h }];
      for (let g = this.grey[0]; g.w >= 128 && g.h >= 128; ) {
        const nw = g.w >> 1, nh = g.h >> 1, out = new Uint8Array(nw * nh), src = g.grey;
        for (let y = 0; y < nh; y++) {
          const r0 = 2 * y * g.w, r1 = r0 + g.w;
          for (let x = 0; x < nw; x++) out[y * nw + x] = (src[r0 + 2 * x] + src[r0 + 2 * x + 1] + src[r1 + 2 * x] + src[r1 + 2 * x + 1] + 2) >> 2;
        }
        g = { grey: out, w: nw, h: nh };
        this.grey.push(g);
      }
      this.cache = new Map(); // "center|width|invert|level" -> canvas
    }
    /** The level whose resolution is just above `scale` (screen px per image px): sharp and fast. */
    source(center, width, scale, invert = false) {
      let i = 0;
      while (i + 1 < this.grey.length && scale * 2 ** (i + 1) <= 1) i++;
      const key = `${center}|${width}|${invert ? 1 : 0}|${i}`;
      let c = this.cache.get(key);
      if (c) {
        this.cache.delete(key); // LRU: move to the end
        this.cache.set(key, c);
        return c;
      }
      const { grey, w, h } = this.grey[i];
      c = document.createElement("canvas");
      c.width = w;
      c.height = h;
      const ctx = c.getContext("2d"), img = ctx.createImageData(w, h);
      const out = new Uint32Array(img.data.buffer), lut = CM.windowLUT(center, width, invert);
      for (let k = 0; k < grey.length; k++) out[k] = lut[grey[k]];
      ctx.putImageData(img, 0, 0);
      this.cache.set(key, c);
      if (this.cache.size > 12) this.cache.delete(this.cache.keys().next().value);
      return c;
    }
  };

  /* ---------- mask overlays, computed once per mask ---------- */
  function rgba([r, g, b], a = 255) {
    return ((a << 24) | (b << 16) | (g << 8) | r) >>> 0;
  }
  CM.fillOverlay = function (bits, w, h, canvas) {
    const c = canvas || document.createElement("canvas");
    if (c.width !== w || c.height !== h) Object.assign(c, { width: w, height: h });
    const ctx = c.getContext("2d"), img = ctx.createImageData(w, h), out = new Uint32Array(img.data.buffer);
    const on = rgba(CM.COLORS.fill);
    for (let i = 0; i < bits.length; i++) if (bits[i]) out[i] = on;
    ctx.putImageData(img, 0, 0);
    return c;
  };
  /** Update one rectangle of a fill overlay in place (drawing). */
  CM.fillOverlayRect = function (canvas, bits, w, x0, y0, x1, y1) {
    const rw = x1 - x0, rh = y1 - y0;
    if (rw <= 0 || rh <= 0) return;
    const ctx = canvas.getContext("2d"), img = ctx.createImageData(rw, rh), out = new Uint32Array(img.data.buffer);
    const on = rgba(CM.COLORS.fill);
    for (let y = 0; y < rh; y++) for (let x = 0; x < rw; x++) if (bits[(y0 + y) * w + x0 + x]) out[y * rw + x] = on;
    ctx.putImageData(img, x0, y0);
  };
  /** Contour drawn k x finer than the mask: a bright band `band` sub-pixels wide just inside the edge and a
   *  dark rim just outside, so the line reads on dark and on bright lung alike. */
  function contourCanvas(bits, w, h, k, band) {
    const W = w * k, H = h * k, c = document.createElement("canvas");
    Object.assign(c, { width: W, height: H });
    const ctx = c.getContext("2d"), img = ctx.createImageData(W, H), out = new Uint32Array(img.data.buffer);
    const line = rgba(CM.COLORS.contour), halo = rgba(CM.COLORS.halo, 220);
    const at = (x, y) => (x < 0 || y < 0 || x >= w || y >= h ? 0 : bits[y * w + x]);
    const paint = (px, py, x0, y0, x1, y1, v) => {
      for (let y = py * k + y0; y < py * k + y1; y++) for (let x = px * k + x0; x < px * k + x1; x++) out[y * W + x] = v;
    };
    const r = 1; // rim width in sub-pixels
    for (let pass = 0; pass < 2; pass++) {
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const inside = bits[y * w + x];
          if (pass === 0 && !inside) {
            if (at(x - 1, y)) paint(x, y, 0, 0, r, k, halo);
            if (at(x + 1, y)) paint(x, y, k - r, 0, k, k, halo);
            if (at(x, y - 1)) paint(x, y, 0, 0, k, r, halo);
            if (at(x, y + 1)) paint(x, y, 0, k - r, k, k, halo);
          } else if (pass === 1 && inside) {
            const l = !at(x - 1, y), rt = !at(x + 1, y), t = !at(x, y - 1), b = !at(x, y + 1);
            if (l) paint(x, y, 0, 0, band, k, line);
            if (rt) paint(x, y, k - band, 0, k, k, line);
            if (t) paint(x, y, 0, 0, k, band, line);
            if (b) paint(x, y, 0, k - band, k, k, line);
            // inner corners keep the line closed where only a diagonal neighbour is outside
            if (!l && !t && !at(x - 1, y - 1)) paint(x, y, 0, 0, band, band, line);
            if (!rt && !t && !at(x + 1, y - 1)) paint(x, y, k - band, 0, k, band, line);
            if (!l && !b && !at(x - 1, y + 1)) paint(x, y, 0, k - band, band, k, line);
            if (!rt && !b && !at(x + 1, y + 1)) paint(x, y, k - band, k - band, k, k, line);
          }
        }
      }
    }
    ctx.putImageData(img, 0, 0);
    return c;
  }
  /** A contour about 1.5 device pixels wide at `q` device pixels per mask pixel. A mask larger than the
   *  screen is first reduced (a pixel is on if any pixel it covers is), so thin lines do not vanish. */
  function contourAt(bits, w, h, q) {
    if (q < 1) {
      const f = 2 ** Math.ceil(Math.log2(1 / q)), pw = Math.ceil(w / f), ph = Math.ceil(h / f);
      const pooled = new Uint8Array(pw * ph);
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) if (bits[y * w + x]) pooled[((y / f) | 0) * pw + ((x / f) | 0)] = 1;
      const c = contourCanvas(pooled, pw, ph, 1, 1);
      return Object.assign(c, { coverX: (pw * f) / w, coverY: (ph * f) / h });
    }
    const k = Math.max(1, Math.min(Math.ceil(q), Math.floor(2048 / Math.max(w, h))));
    return contourCanvas(bits, w, h, k, Math.max(1, Math.min(k, Math.round((1.5 * k) / q))));
  }
  /** The overlays of one mask: a fill (updated in place while drawing) and contours per screen scale,
   *  cached in steps of a factor of 1.41, so zooming and panning only draw precomputed canvases. */
  CM.MaskOverlay = class {
    constructor(bits, w, h) {
      Object.assign(this, { bits, w, h, contours: new Map() });
      this.fill = CM.fillOverlay(bits, w, h);
    }
    update(rect) {
      if (rect) CM.fillOverlayRect(this.fill, this.bits, this.w, ...rect);
      else CM.fillOverlay(this.bits, this.w, this.h, this.fill);
      this.contours.clear();
    }
    /** `q`: device pixels per mask pixel in the pane that asks. */
    get(mode, q) {
      if (mode !== "contour") return this.fill;
      const step = Math.round(Math.log2(Math.max(1 / 64, q)) * 2);
      let c = this.contours.get(step);
      if (!c) {
        c = contourAt(this.bits, this.w, this.h, 2 ** (step / 2));
        this.contours.set(step, c);
        if (this.contours.size > 3) this.contours.delete(this.contours.keys().next().value);
      }
      return c;
    }
  };

  /* ---------- display settings shared by every pane of a screen ---------- */
  CM.Display = class extends EventTarget {
    constructor() {
      super();
      Object.assign(this, { mode: "fill", opacity: 0.45, masksVisible: true, held: false, invert: false }, CM.DEFAULT_WINDOW);
    }
    set(patch) {
      if ("invert" in patch) patch.invert = !!patch.invert;
      if ("opacity" in patch) patch.opacity = Math.min(1, Math.max(0, Number(patch.opacity)));
      if ("width" in patch) patch.width = Math.round(Math.min(512, Math.max(2, patch.width)));
      if ("center" in patch) patch.center = Math.round(Math.min(383, Math.max(-128, patch.center)) * 2) / 2;
      Object.assign(this, patch);
      this.dispatchEvent(new Event("change"));
    }
    get showMasks() {
      return this.masksVisible && !this.held;
    }
  };

  /* ---------- view: zoom relative to "fit", and the image point shown at each pane's centre ---------- */
  CM.View = class extends EventTarget {
    constructor(w, h) {
      super();
      Object.assign(this, { w, h });
      this.reset();
    }
    reset() {
      Object.assign(this, { zoom: 1, cx: this.w / 2, cy: this.h / 2 });
      this.dispatchEvent(new Event("change"));
    }
    /** Zoom by `factor` keeping image point (ix, iy) under the same screen point of the pane. */
    zoomAt(ix, iy, factor) {
      const z = Math.min(64, Math.max(0.25, this.zoom * factor)), f = this.zoom / z;
      this.cx = ix + (this.cx - ix) * f;
      this.cy = iy + (this.cy - iy) * f;
      this.zoom = z;
      this.dispatchEvent(new Event("change"));
    }
    panBy(dix, diy) {
      this.cx -= dix;
      this.cy -= diy;
      this.dispatchEvent(new Event("change"));
    }
  };

  /* ---------- a pane: one canvas showing the image, optionally an overlay, optionally a tool layer ---------- */
  CM.Pane = class {
    constructor(el, { view, display }) {
      Object.assign(this, { el, view, display, image: null, overlays: null, decorate: null });
      el.tabIndex = 0;
      this.canvas = document.createElement("canvas");
      this.canvas.className = "cm-canvas";
      el.prepend(this.canvas);
      this.ctx = this.canvas.getContext("2d");
      this.draw = () => this.render();
      new ResizeObserver(() => this.resize()).observe(el);
      this.resize();
    }
    resize() {
      const dpr = window.devicePixelRatio || 1;
      const w = Math.max(1, Math.round(this.el.clientWidth * dpr)), h = Math.max(1, Math.round(this.el.clientHeight * dpr));
      if (this.canvas.width !== w || this.canvas.height !== h) Object.assign(this.canvas, { width: w, height: h });
      this.invalidate();
    }
    invalidate() {
      CM.schedule(this.draw);
    }
    /** Device pixels per image pixel, and where image (0, 0) lands on the canvas. */
    transform() {
      const { canvas: c, view: v } = this;
      const s = Math.min(c.width / v.w, c.height / v.h) * v.zoom;
      return { s, ox: c.width / 2 - v.cx * s, oy: c.height / 2 - v.cy * s };
    }
    toImage(clientX, clientY) {
      const r = this.canvas.getBoundingClientRect(), dpr = this.canvas.width / Math.max(1, r.width);
      const { s, ox, oy } = this.transform();
      return { x: ((clientX - r.left) * dpr - ox) / s, y: ((clientY - r.top) * dpr - oy) / s };
    }
    render() {
      const { ctx, canvas, display: d } = this, t = this.transform();
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.globalAlpha = 1;
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      if (!this.image) return;
      const src = this.image.source(d.center, d.width, t.s, d.invert);
      ctx.setTransform(t.s, 0, 0, t.s, t.ox, t.oy);
      ctx.imageSmoothingEnabled = t.s * (this.view.w / src.width) < 6; // show image pixels only when zoomed far in
      ctx.drawImage(src, 0, 0, this.view.w, this.view.h);
      const mask = this.overlays && d.showMasks && this.overlays();
      const overlay = mask && mask.get(d.mode, (t.s * this.view.w) / mask.w);
      if (overlay) {
        ctx.globalAlpha = d.mode === "contour" ? 0.5 + d.opacity / 2 : d.opacity; // a contour never fades out
        // nearest neighbour when enlarging (crisp mask pixels); smoothing only when shrinking a fine contour
        ctx.imageSmoothingEnabled = (t.s * this.view.w) / overlay.width < 1;
        ctx.drawImage(overlay, 0, 0, this.view.w * (overlay.coverX || 1), this.view.h * (overlay.coverY || 1));
        ctx.globalAlpha = 1;
      }
      if (this.decorate) {
        ctx.setTransform(1, 0, 0, 1, 0, 0);
        this.decorate(ctx, t);
      }
    }
  };

  /* ---------- pointer gestures common to both screens ---------- */
  /** wheel: zoom about the cursor; pan drag (when `isPan(e)`); right drag: window (x) / level (y). */
  CM.bindGestures = function (pane, { view, display, isPan, onPress }) {
    const c = pane.canvas;
    c.addEventListener("contextmenu", (e) => e.preventDefault());
    c.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault();
        const p = pane.toImage(e.clientX, e.clientY), unit = e.deltaMode === 1 ? 33 : e.deltaMode === 2 ? 400 : 1;
        view.zoomAt(p.x, p.y, Math.exp(-e.deltaY * unit * 0.0015));
      },
      { passive: false },
    );
    c.addEventListener("pointerdown", (e) => {
      const mode = e.button === 2 ? "window" : isPan(e) ? "pan" : null;
      if (!mode) return onPress && onPress(e);
      e.preventDefault();
      pane.el.focus({ preventScroll: true });
      c.setPointerCapture(e.pointerId);
      const start = { x: e.clientX, y: e.clientY, center: display.center, width: display.width };
      let last = pane.toImage(e.clientX, e.clientY), moved = false;
      const move = (ev) => {
        if (Math.abs(ev.clientX - start.x) + Math.abs(ev.clientY - start.y) > 3) moved = true;
        if (mode === "pan") {
          const p = pane.toImage(ev.clientX, ev.clientY);
          view.panBy(p.x - last.x, p.y - last.y);
          last = pane.toImage(ev.clientX, ev.clientY);
        } else {
          display.set({ width: start.width + (ev.clientX - start.x), center: start.center + (ev.clientY - start.y) });
        }
      };
      const up = (ev) => {
        c.removeEventListener("pointermove", move);
        c.removeEventListener("pointerup", up);
        c.removeEventListener("pointercancel", up);
        if (!moved && mode === "pan" && ev.type === "pointerup") c.dispatchEvent(new CustomEvent("cm:tap", { bubbles: true }));
      };
      c.addEventListener("pointermove", move);
      c.addEventListener("pointerup", up);
      c.addEventListener("pointercancel", up);
    });
  };
})();
