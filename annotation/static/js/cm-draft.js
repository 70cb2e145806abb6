/*
 * collabmask — draft autosave for the draw screen (needs cm-core.js). The DOM contract is in cm-draw.js.
 *
 * Protocol with the server (data-draft-url: the review API's /api/review/tasks/<token>/draft/):
 *   GET    -> 200 image/png with header X-Draft-Updated: <ISO time>, or 204 when there is no draft
 *   PUT    <- image/png body, headers X-CSRFToken, Content-Type: image/png, X-Draft-Updated: <ISO time>
 *   DELETE <- after a successful submit (editor.discardDraft()); failures are ignored
 * In this browser: localStorage["cm-draft:<data-draft-key>"] = {"png": "data:image/png;base64,...",
 *   "updated": "<ISO time>"}, written at once after every completed edit.
 * The server copy is written ~1 s after the last edit, retried with backoff (1 s doubling to 30 s) while it
 * fails, and flushed with fetch keepalive when the page is hidden or left (sendBeacon cannot PUT).
 */
(function () {
  "use strict";
  const CM = (window.CM = window.CM || {});

  const MESSAGES = {
    saving: "Saving…",
    saved: "Saved",
    offline: "Offline — kept in this browser",
    restored: "Draft restored",
    full: "Browser storage full — draft not kept locally",
  };

  const toDataURL = (blob) =>
    new Promise((resolve, reject) => {
      const r = new FileReader();
      r.onload = () => resolve(r.result);
      r.onerror = () => reject(r.error);
      r.readAsDataURL(blob);
    });

  CM.Draft = class {
    constructor({ url, key, statusEl, debounceMs = 1000 }) {
      Object.assign(this, { url, statusEl, debounceMs });
      this.storageKey = key ? `cm-draft:${key}` : null;
      this.blob = null; // latest encoded mask
      this.updated = null;
      this.dirty = false; // the server has not acknowledged the latest blob
      this.timer = null;
      this.failures = 0;
      this.inflight = null;
      const flushNow = () => this.dirty && this.put({ keepalive: true });
      document.addEventListener("visibilitychange", () => (document.visibilityState === "hidden" ? flushNow() : this.dirty && this.schedule(0)));
      window.addEventListener("pagehide", flushNow);
      window.addEventListener("online", () => this.dirty && this.schedule(0));
    }

    status(state, detail) {
      if (!this.statusEl) return;
      this.statusEl.dataset.state = state;
      this.statusEl.textContent = detail || MESSAGES[state] || "";
    }

    /** The newer of the server and the local draft, as {blob, updated, source}, or null. */
    async load() {
      const found = [];
      if (this.url) {
        try {
          const r = await fetch(this.url, { credentials: "same-origin", cache: "no-store" });
          if (r.status === 200) {
            found.push({ blob: await r.blob(), updated: r.headers.get("X-Draft-Updated") || "", source: "server" });
          }
        } catch (_) {
          /* offline: the local copy may still be there */
        }
      }
      const local = this.readLocal();
      if (local) found.push(local);
      if (!found.length) return null;
      const time = (d) => Date.parse(d.updated) || 0;
      found.sort((a, b) => time(b) - time(a));
      const best = found[0];
      this.blob = best.blob;
      this.updated = best.updated;
      // The server missed edits made while offline: send them now.
      const server = found.find((d) => d.source === "server");
      if (best.source === "local" && (!server || time(server) < time(best))) {
        this.dirty = true;
        this.schedule(0);
      }
      this.status("restored");
      return best;
    }

    readLocal() {
      if (!this.storageKey) return null;
      try {
        const raw = localStorage.getItem(this.storageKey);
        if (!raw) return null;
        const { png, updated } = JSON.parse(raw);
        const [, b64] = png.split(",");
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        return { blob: new Blob([bytes], { type: "image/png" }), updated, source: "local" };
      } catch (_) {
        return null;
      }
    }

    /** Call after every completed edit with the new mask PNG. */
    async save(blob) {
      this.discarded = false;
      this.blob = blob;
      this.updated = new Date().toISOString();
      this.dirty = true;
      if (this.storageKey) {
        try {
          localStorage.setItem(this.storageKey, JSON.stringify({ png: await toDataURL(blob), updated: this.updated }));
        } catch (_) {
          this.status("full");
        }
      }
      this.failures = 0;
      this.schedule(this.debounceMs);
    }

    schedule(ms) {
      clearTimeout(this.timer);
      if (!this.url || this.discarded) return;
      this.timer = setTimeout(() => this.put({}), ms);
    }

    async put({ keepalive = false }) {
      clearTimeout(this.timer);
      if (!this.url || !this.blob || this.discarded) return;
      const blob = this.blob, updated = this.updated;
      this.status("saving");
      let ok = false, retry = true;
      try {
        const r = await fetch(this.url, {
          method: "PUT",
          body: blob,
          credentials: "same-origin",
          // keepalive bodies are capped at 64 KiB; bigger drafts stay local until the next visit
          keepalive: keepalive && blob.size < 60000,
          headers: { "Content-Type": "image/png", "X-CSRFToken": CM.csrfToken(), "X-Draft-Updated": updated },
        });
        ok = r.ok;
        retry = !ok && (r.status >= 500 || r.status === 408 || r.status === 429);
        if (!ok && !retry) this.status("offline", `Not saved to the server (HTTP ${r.status}) — kept in this browser`);
      } catch (_) {
        ok = false; // network down
      }
      if (ok) {
        this.failures = 0;
        if (this.blob === blob) this.dirty = false;
        this.status(this.dirty ? "saving" : "saved");
        if (this.dirty) this.schedule(this.debounceMs);
        return;
      }
      if (!retry) return;
      this.status("offline");
      this.failures += 1;
      if (!keepalive) this.schedule(Math.min(30000, 1000 * 2 ** (this.failures - 1)));
    }

    async discard() {
      clearTimeout(this.timer);
      this.discarded = true;
      this.dirty = false;
      this.blob = null;
      if (this.storageKey) localStorage.removeItem(this.storageKey);
      this.status("", "");
      if (!this.url) return;
      try {
        await fetch(this.url, { method: "DELETE", credentials: "same-origin", headers: { "X-CSRFToken": CM.csrfToken() } });
      } catch (_) {
        /* the server drops drafts of submitted tasks anyway */
      }
    }
  };
})();
