/*
 * collabmask — binary mask rasterisation and undo history for the draw screen (needs cm-core.js).
 * The DOM contract is in cm-core.js and cm-draw.js.
 *
 * Masks are Uint8Array(w * h) of 0/1 at the working resolution. Everything here writes exact 0/1 values
 * (no anti-aliasing): a pixel belongs to a shape when its centre (x + 0.5, y + 0.5) does.
 * Every function returns the rectangle it may have changed, [x0, y0, x1, y1) or null.
 * CM.encodeMaskPNG(bits, w, h) writes the 8-bit greyscale 0/255 PNG that toBlob() returns.
 */
(function () {
  "use strict";
  const CM = (window.CM = window.CM || {});
  const R = (CM.raster = {});

  const clampRect = (x0, y0, x1, y1, w, h) => {
    x0 = Math.max(0, x0); y0 = Math.max(0, y0); x1 = Math.min(w, x1); y1 = Math.min(h, y1);
    return x1 > x0 && y1 > y0 ? [x0, y0, x1, y1] : null;
  };
  R.union = (a, b) => (!a ? b : !b ? a : [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[2], b[2]), Math.max(a[3], b[3])]);

  /** Round brush of diameter `size` swept from (ax, ay) to (bx, by): a capsule. */
  R.segment = function (bits, w, h, ax, ay, bx, by, size, value) {
    const r = Math.max(0.5, size / 2), r2 = r * r;
    const rect = clampRect(Math.floor(Math.min(ax, bx) - r), Math.floor(Math.min(ay, by) - r),
      Math.ceil(Math.max(ax, bx) + r) + 1, Math.ceil(Math.max(ay, by) + r) + 1, w, h);
    if (!rect) return null;
    const dx = bx - ax, dy = by - ay, len2 = dx * dx + dy * dy;
    for (let y = rect[1]; y < rect[3]; y++) {
      for (let x = rect[0]; x < rect[2]; x++) {
        const px = x + 0.5 - ax, py = y + 0.5 - ay;
        const t = len2 ? Math.max(0, Math.min(1, (px * dx + py * dy) / len2)) : 0;
        const ex = px - t * dx, ey = py - t * dy;
        if (ex * ex + ey * ey <= r2) bits[y * w + x] = value;
      }
    }
    // A thin brush always marks the pixels under the pointer, even between pixel centres.
    for (const [x, y] of [[ax, ay], [bx, by]]) {
      const ix = Math.floor(x), iy = Math.floor(y);
      if (ix >= 0 && iy >= 0 && ix < w && iy < h) bits[iy * w + ix] = value;
    }
    return rect;
  };

  /** Fill a closed polygon (non-zero winding, so a lasso that crosses itself stays filled). */
  R.polygon = function (bits, w, h, pts, value) {
    if (pts.length < 3) return null;
    let minY = Infinity, maxY = -Infinity, minX = Infinity, maxX = -Infinity;
    for (const [x, y] of pts) {
      minY = Math.min(minY, y); maxY = Math.max(maxY, y); minX = Math.min(minX, x); maxX = Math.max(maxX, x);
    }
    const rect = clampRect(Math.floor(minX), Math.floor(minY), Math.ceil(maxX) + 1, Math.ceil(maxY) + 1, w, h);
    if (!rect) return null;
    const cross = [];
    for (let y = rect[1]; y < rect[3]; y++) {
      const yc = y + 0.5;
      cross.length = 0;
      for (let i = 0; i < pts.length; i++) {
        const [x0, y0] = pts[i], [x1, y1] = pts[(i + 1) % pts.length];
        if ((y0 <= yc && y1 > yc) || (y1 <= yc && y0 > yc)) {
          cross.push([x0 + ((yc - y0) / (y1 - y0)) * (x1 - x0), y1 > y0 ? 1 : -1]);
        }
      }
      cross.sort((a, b) => a[0] - b[0]);
      let wind = 0;
      for (let i = 0; i < cross.length - 1; i++) {
        wind += cross[i][1];
        if (!wind) continue;
        // pixels whose centre lies in [xa, xb)
        const xa = Math.max(0, Math.ceil(cross[i][0] - 0.5)), xb = Math.min(w, Math.ceil(cross[i + 1][0] - 0.5));
        for (let x = xa; x < xb; x++) bits[y * w + x] = value;
      }
    }
    return rect;
  };

  /** 4-connected flood fill of the region around (x, y) with `value`. */
  R.flood = function (bits, w, h, x, y, value) {
    x = Math.floor(x); y = Math.floor(y);
    if (x < 0 || y < 0 || x >= w || y >= h) return null;
    const from = bits[y * w + x];
    if (from === value) return null;
    let stack = new Int32Array(1024), top = 0;
    let x0 = x, y0 = y, x1 = x + 1, y1 = y + 1;
    const push = (i) => {
      if (top === stack.length) {
        const bigger = new Int32Array(stack.length * 2);
        bigger.set(stack);
        stack = bigger;
      }
      stack[top++] = i;
    };
    bits[y * w + x] = value;
    push(y * w + x);
    while (top) {
      const i = stack[--top], px = i % w, py = (i - px) / w;
      if (px < x0) x0 = px; if (px >= x1) x1 = px + 1; if (py < y0) y0 = py; if (py >= y1) y1 = py + 1;
      if (px > 0 && bits[i - 1] === from) { bits[i - 1] = value; push(i - 1); }
      if (px < w - 1 && bits[i + 1] === from) { bits[i + 1] = value; push(i + 1); }
      if (py > 0 && bits[i - w] === from) { bits[i - w] = value; push(i - w); }
      if (py < h - 1 && bits[i + w] === from) { bits[i + w] = value; push(i + w); }
    }
    return [x0, y0, x1, y1];
  };

  /* ---------- undo history: each step keeps the changed rectangle before and after, bit-packed ---------- */
  function pack(bits, w, [x0, y0, x1, y1]) {
    const rw = x1 - x0, out = new Uint8Array(Math.ceil((rw * (y1 - y0)) / 8));
    let k = 0;
    for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++, k++) if (bits[y * w + x]) out[k >> 3] |= 1 << (k & 7);
    return out;
  }
  function unpack(packed, bits, w, [x0, y0, x1, y1]) {
    let k = 0;
    for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++, k++) bits[y * w + x] = (packed[k >> 3] >> (k & 7)) & 1;
  }
  /** Steps are dropped oldest first beyond `maxSteps` or `maxBytes`; a whole-mask step of a 1024 x 1024
   *  mask costs 256 KiB, so the default keeps well over 50 of even the largest steps. */
  R.History = class {
    constructor(w, h, { maxSteps = 200, maxBytes = 32 << 20 } = {}) {
      Object.assign(this, { w, h, maxSteps, maxBytes, done: [], undone: [], bytes: 0 });
    }
    /** Record the change between `before` (a copy taken when the edit began) and `bits` inside `rect`. */
    record(before, bits, rect) {
      if (!rect) return false;
      const [x0, y0, x1, y1] = rect, w = this.w;
      let changed = false;
      for (let y = y0; y < y1 && !changed; y++) for (let x = x0; x < x1; x++) if (before[y * w + x] !== bits[y * w + x]) { changed = true; break; }
      if (!changed) return false;
      const step = { rect, before: pack(before, w, rect), after: pack(bits, w, rect) };
      this.done.push(step);
      this.bytes += step.before.length * 2;
      this.undone = [];
      while (this.done.length > this.maxSteps || (this.bytes > this.maxBytes && this.done.length > 1)) {
        this.bytes -= this.done.shift().before.length * 2;
      }
      return true;
    }
    undo(bits) {
      const step = this.done.pop();
      if (!step) return null;
      unpack(step.before, bits, this.w, step.rect);
      this.undone.push(step);
      this.bytes -= step.before.length * 2;
      return step.rect;
    }
    redo(bits) {
      const step = this.undone.pop();
      if (!step) return null;
      unpack(step.after, bits, this.w, step.rect);
      this.done.push(step);
      this.bytes += step.before.length * 2;
      return step.rect;
    }
  };

  /* ---------- 8-bit greyscale PNG (colour type 0) with values 0/255, exact size ---------- */
  const CRC = new Uint32Array(256).map((_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  function chunk(type, data) {
    const out = new Uint8Array(12 + data.length), dv = new DataView(out.buffer);
    dv.setUint32(0, data.length);
    for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
    out.set(data, 8);
    let c = 0xffffffff;
    for (let i = 4; i < 8 + data.length; i++) c = CRC[(c ^ out[i]) & 0xff] ^ (c >>> 8);
    dv.setUint32(8 + data.length, (c ^ 0xffffffff) >>> 0);
    return out;
  }
  CM.encodeMaskPNG = async function (bits, w, h) {
    const raw = new Uint8Array((w + 1) * h);
    for (let y = 0; y < h; y++) {
      const row = y * (w + 1); // filter byte 0 (none), then the row
      for (let x = 0; x < w; x++) raw[row + 1 + x] = bits[y * w + x] ? 255 : 0;
    }
    // CompressionStream('deflate') emits the zlib format that IDAT needs.
    const stream = new Blob([raw]).stream().pipeThrough(new CompressionStream("deflate"));
    const idat = new Uint8Array(await new Response(stream).arrayBuffer());
    const ihdr = new Uint8Array(13), dv = new DataView(ihdr.buffer);
    dv.setUint32(0, w);
    dv.setUint32(4, h);
    ihdr[8] = 8; // bit depth; colour type 0 (grey), no interlace
    const sig = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
    return new Blob([sig, chunk("IHDR", ihdr), chunk("IDAT", idat), chunk("IEND", new Uint8Array())], {
      type: "image/png",
    });
  };
})();
