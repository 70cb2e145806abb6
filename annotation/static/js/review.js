/*
 * collabmask — the review screens' own glue (the viewer and draw components are cm-*.js).
 *
 * Every action goes to the review API (/api/review/…, the one JSON protocol; session cookie
 * and CSRF token): the choice forms name their endpoint in data-api-url. Their plain action
 * is the fallback for a browser without JavaScript.
 *
 * - Choice keys: every element with data-choice-keys="a ArrowLeft" is pressed by those keys
 *   (digits, A, B, N, R, Enter, arrows, U, Ctrl+Enter: the components never use them).
 * - Submitting: a choice is posted as JSON (the drawing as multipart), retried on network
 *   errors with the same idempotency key (the server returns the stored decision for a
 *   repeated key), and guarded against double submission. The answer's page_url says where to
 *   go next; a refusal's detail is said there (or here, when it names no page).
 * - Undo (U, or the bar's button) takes back the decision this tab made last, by its key.
 * - Time on screen: visible time from "screen usable" (cm:ready) to the choice, sent in ms.
 * - Transition time: from a choice to the next screen being usable, kept in
 *   window.cmReview.transitionMs (the browser tests report it).
 * - The next case: once this screen is in use, data-ahead-url leases the reader's next case
 *   ahead and the browser prerenders its page (speculation rules), or at least fetches its
 *   images; the choice then lands on a screen that is already drawn. A prerendered screen
 *   starts its clock when it is shown, and refreshes its progress strip (htmx).
 * - Keeping the case: while the reader is at the screen (page visible, and a key, click, pointer
 *   move, scroll or touch since the last beat), data-keep-url renews the lease every third of
 *   data-lease-seconds (at most every 2 minutes), and once as soon as the screen is in use (a
 *   screen rendered ahead may have waited). A reader who walks away lets the lease run out as
 *   before; a case lost meanwhile is said at once, not at the choice.
 */
(function () {
  "use strict";
  const state = (window.cmReview = window.cmReview || { transitionMs: null, readyAt: null });
  const SUBMIT_AT = "cm-review-submit-at";
  const now = () => performance.timeOrigin + performance.now();

  /* ---------- time on screen: visible time since the screen became usable ---------- */
  let visibleMs = 0, since = null, drawn = false;
  function startClock() {
    if (state.readyAt !== null || !drawn || document.prerendering) return;
    state.readyAt = now();
    since = document.visibilityState === "visible" ? performance.now() : null;
    const at = Number(sessionStorage.getItem(SUBMIT_AT));
    sessionStorage.removeItem(SUBMIT_AT);
    if (at) {
      state.transitionMs = Math.round(state.readyAt - at);
      document.documentElement.dataset.transitionMs = String(state.transitionMs);
    }
    document.documentElement.dataset.reviewReady = "1";
    // A screen fetched or rendered ahead of time shows the progress of back then: refresh it.
    const nav = performance.getEntriesByType("navigation")[0];
    if (nav && (nav.activationStart > 0 || nav.deliveryType === "navigational-prefetch")) {
      document.dispatchEvent(new CustomEvent("review:activated"));
    }
    lookAhead();
    keepLease();
  }
  function onDrawn() {
    drawn = true;
    startClock();
  }
  function onScreenMs() {
    return Math.round(visibleMs + (since === null ? 0 : performance.now() - since));
  }
  document.addEventListener("visibilitychange", () => {
    if (state.readyAt === null) return;
    if (document.visibilityState === "hidden" && since !== null) {
      visibleMs += performance.now() - since;
      since = null;
    } else if (document.visibilityState === "visible" && since === null) {
      since = performance.now();
    }
  });
  document.addEventListener("cm:ready", onDrawn);
  document.addEventListener("prerenderingchange", startClock);

  /* ---------- the next case, prerendered ---------- */
  async function lookAhead() {
    const screen = document.querySelector("[data-ahead-url]");
    if (!screen) return;
    let next;
    try {
      const r = await fetch(screen.dataset.aheadUrl, { method: "POST", credentials: "same-origin", headers: HEADERS() });
      if (!r.ok) return;
      next = await r.json();
    } catch (_) {
      return; // prefetching is a nicety
    }
    if (!next.page_url) return;
    if (HTMLScriptElement.supports && HTMLScriptElement.supports("speculationrules")) {
      const rules = document.createElement("script");
      rules.type = "speculationrules";
      rules.textContent = JSON.stringify({ prerender: [{ source: "list", urls: [next.page_url] }] });
      document.head.append(rules);
    }
    for (const url of next.prefetch || []) {
      const link = document.createElement("link");
      Object.assign(link, { rel: "prefetch", href: url, as: "fetch", crossOrigin: "anonymous" });
      document.head.append(link);
    }
  }

  /* ---------- keeping the case while the reader works on it ---------- */
  function keepLease() {
    const screen = document.querySelector("[data-keep-url]");
    if (!screen) return;
    const every = 1000 * Math.max(1, Math.min(120, Number(screen.dataset.leaseSeconds || 900) / 3));
    let active = true, lost = false, beats = 0, timer = null;
    for (const type of ["pointermove", "pointerdown", "keydown", "wheel", "touchstart"]) {
      document.addEventListener(type, () => (active = true), { capture: true, passive: true });
    }
    async function beat() {
      if (lost || !active || document.visibilityState !== "visible") return;
      active = false;
      let r, data;
      try {
        r = await fetch(screen.dataset.keepUrl, { method: "POST", credentials: "same-origin", headers: HEADERS() });
        data = await r.json().catch(() => ({}));
      } catch (_) {
        active = true; // no connection: try again at the next beat
        return;
      }
      document.documentElement.dataset.leaseBeats = String(++beats);
      if (r.status !== 404 && r.status !== 409) return;
      lost = true;
      clearInterval(timer);
      alertText(data.detail || "This case is no longer yours to decide.");
      const alert = document.querySelector("[data-review-alert]");
      if (alert && data.page_url) {
        const go = Object.assign(document.createElement("a"), { href: data.page_url, textContent: "Go on" });
        alert.append(" ", go);
      }
      document.querySelectorAll("[data-review-form] button").forEach((b) => (b.disabled = true));
      document.documentElement.dataset.leaseLost = "1";
    }
    timer = setInterval(beat, every);
    beat();
  }

  /* ---------- messages ---------- */
  function alertText(text) {
    const el = document.querySelector("[data-review-alert]");
    if (!el) return console.warn(text); // every review page has the alert line
    el.textContent = text;
    el.hidden = !text;
  }

  /* ---------- posting to the review API, retried with the same key ---------- */
  function HEADERS(json) {
    const h = { Accept: "application/json", "X-CSRFToken": window.CM && window.CM.csrfToken ? window.CM.csrfToken() : "" };
    if (json) h["Content-Type"] = "application/json";
    return h;
  }
  async function post(url, body, tries = 5) {
    const json = !(body instanceof FormData);
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await fetch(url, {
          method: "POST",
          body: json ? JSON.stringify(body) : body,
          credentials: "same-origin",
          headers: HEADERS(json),
        });
        const data = await r.json().catch(() => ({ detail: `The server answered HTTP ${r.status}.` }));
        if (r.status >= 500 && attempt + 1 < tries) throw new Error(`HTTP ${r.status}`);
        return { status: r.status, data };
      } catch (err) {
        if (attempt + 1 >= tries) return { status: 0, data: { detail: "No connection to the server; your choice was not sent. Try again." } };
        alertText("Connection problem — retrying…");
        await new Promise((res) => setTimeout(res, 300 * 2 ** attempt));
      }
    }
  }
  /** What a refusal says: its detail, or the fields the API found malformed. */
  function problem({ status, data }) {
    if (data.detail) return data.detail;
    const fields = Object.entries(data).map(([k, v]) => `${k}: ${[].concat(v).join(" ")}`);
    return fields.length ? fields.join("; ") : `Something went wrong (HTTP ${status}).`;
  }
  const INTEGERS = new Set(["position", "number", "time_on_screen_ms"]);
  /** A choice form as the API's JSON body. */
  function jsonOf(form, submitter) {
    const body = {};
    for (const [name, value] of new FormData(form, submitter || undefined)) {
      if (name === "csrfmiddlewaretoken") continue;
      body[name] = INTEGERS.has(name) ? Number(value) : value;
    }
    return body;
  }
  const MESSAGE = "cm-review-message";
  const LAST = "cm-review-last-key:"; // + the stage's undo URL: the key of this tab's last decision
  function go(url, message, form) {
    sessionStorage.setItem(SUBMIT_AT, String((form && form.dataset.submitAt) || now()));
    // Shown by the next screen, which may have been fetched before this answer came.
    if (message) sessionStorage.setItem(MESSAGE, message);
    window.location.assign(url);
  }
  function follow(answer, form, key) {
    const { status, data } = answer;
    const ok = status >= 200 && status < 300;
    const undo = document.querySelector("[data-review-undo]");
    if (ok && data.decision && key && undo) sessionStorage.setItem(LAST + undo.dataset.apiUrl, key);
    if (data.page_url) {
      go(data.page_url, ok ? "" : problem(answer), form);
      return true;
    }
    alertText(problem(answer));
    delete form.dataset.busy;
    form.querySelectorAll("button").forEach((b) => (b.disabled = false));
    return false;
  }
  function lock(form) {
    if (form.dataset.busy) return false;
    form.dataset.busy = "1";
    form.dataset.submitAt = String(now());
    const ms = form.querySelector("[data-review-ms]");
    if (ms) ms.value = String(onScreenMs());
    return true;
  }

  async function undoLast(form) {
    if (!lock(form)) return;
    const slot = LAST + form.dataset.apiUrl;
    const key = sessionStorage.getItem(slot);
    let answer = await post(form.dataset.apiUrl, key ? { idempotency_key: key } : {});
    // That decision is no longer the last one (another tab decided since): undo the last.
    if (key && answer.status === 409) answer = await post(form.dataset.apiUrl, {});
    if (answer.status === 200) {
      sessionStorage.removeItem(slot);
      return go(answer.data.page_url, "Your last decision was undone: choose again.", form);
    }
    alertText(problem(answer));
    delete form.dataset.busy;
  }

  document.addEventListener("submit", async (e) => {
    const form = e.target;
    if (!(form instanceof HTMLFormElement) || !window.fetch || !form.dataset.apiUrl) return;
    if (form.matches("[data-review-form]")) {
      e.preventDefault();
      if (!lock(form)) return;
      const body = jsonOf(form, e.submitter);
      form.querySelectorAll("button").forEach((b) => (b.disabled = true));
      follow(await post(form.dataset.apiUrl, body), form, body.idempotency_key);
    } else if (form.matches("[data-draw-form]")) {
      e.preventDefault();
      await submitDrawing(form);
    } else if (form.matches("[data-review-undo]")) {
      e.preventDefault();
      await undoLast(form);
    }
  });

  async function submitDrawing(form) {
    const root = document.querySelector("[data-cm-draw]");
    if (!root || !window.CM || !window.CM.draw) return alertText("The drawing tools did not load; reload the page.");
    const editor = window.CM.draw(root);
    await editor.ready;
    const refining = Boolean(form.querySelector("input[name=base]"));
    const none = form.querySelector("input[name=no_infection]");
    if (editor.isEmpty() && (refining || !(none && none.checked))) {
      return alertText(refining
        ? "The refined mask is empty. Draw the infected region, or start from a blank drawing."
        : "The mask is empty. Draw the infected region, or tick “No infection visible”.");
    }
    if (!editor.isEmpty() && none && none.checked) {
      return alertText("You ticked “No infection visible” but drew a mask: untick it or clear the drawing.");
    }
    if (!lock(form)) return;
    form.querySelectorAll("button").forEach((b) => (b.disabled = true));
    const body = new FormData(form);
    body.append("mask", await editor.toBlob(), "mask.png");
    const answer = await post(form.dataset.apiUrl, body);
    if (answer.status >= 200 && answer.status < 300) await editor.discardDraft().catch(() => {});
    follow(answer, form, body.get("idempotency_key"));
  }

  /* ---------- choice keys ---------- */
  function editable(t) {
    return t && (t.isContentEditable || /^(TEXTAREA|SELECT)$/.test(t.tagName) ||
      (t.tagName === "INPUT" && !/^(range|checkbox|radio|button|submit)$/.test(t.type)));
  }
  function keyName(e) {
    const k = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    return (e.ctrlKey || e.metaKey ? "ctrl+" : "") + k;
  }
  document.addEventListener("keydown", (e) => {
    if (e.defaultPrevented || e.altKey || e.repeat || editable(e.target)) return;
    if (document.querySelector("dialog[open]")) return; // the help dialog has the keys
    const name = keyName(e);
    // Enter on a focused button or link already presses it.
    if (name === "Enter" && e.target.closest && e.target.closest("button,a")) return;
    if (name === "u") {
      const undo = document.querySelector("[data-review-undo]");
      if (undo) {
        e.preventDefault();
        undo.requestSubmit();
      }
      return;
    }
    const target = [...document.querySelectorAll("[data-choice-keys]")].find((el) =>
      el.dataset.choiceKeys.split(" ").includes(name));
    if (!target || target.disabled) return;
    e.preventDefault();
    target.click();
  });

  /* ---------- N-way: Enter chooses the candidate in the large view ---------- */
  document.addEventListener("click", (e) => {
    const btn = e.target.closest && e.target.closest("[data-choose-focused]");
    if (!btn) return;
    const root = document.querySelector("[data-cm-viewer]");
    const viewer = root && window.CM && window.CM.viewer ? window.CM.viewer(root) : null;
    const position = viewer && viewer.focused ? viewer.focused : 1;
    const choice = document.querySelector(`[data-review-form] button[name=position][value="${position}"]`);
    if (choice) choice.click();
  });

  /* ---------- drawing: switching the starting mask drops the draft, after a second click ---------- */
  document.addEventListener("click", async (e) => {
    const link = e.target.closest && e.target.closest("[data-start-from]");
    if (!link || link.getAttribute("aria-current") === "true") return;
    const root = document.querySelector("[data-cm-draw]");
    if (!root || !window.CM || !window.CM.draw) return;
    e.preventDefault();
    const editor = window.CM.draw(root);
    if (!editor.isEmpty() && link.dataset.armed !== "1") {
      document.querySelectorAll("[data-start-from]").forEach((l) => delete l.dataset.armed);
      link.dataset.armed = "1";
      return alertText("This replaces your drawing. Click the same choice again to confirm.");
    }
    await editor.discardDraft().catch(() => {});
    window.location.assign(link.href);
  });

  /* ---------- the components' help dialogs also list the page's keys ---------- */
  const PAGE_KEYS = {
    pairwise: [
      { label: "A  ←", help: "A is better" },
      { label: "B  →", help: "B is better" },
      { label: "N", help: "Neither is acceptable: draw the mask" },
      { label: "U", help: "Undo your last decision" },
    ],
    nway: [
      { label: "1 … 6", help: "Choose that mask" },
      { label: "Enter", help: "Choose the enlarged mask" },
      { label: "R", help: "Reject all and draw" },
      { label: "U", help: "Undo your last decision" },
    ],
    adjudication: [
      { label: "1 … 6", help: "Accept that reader's mask" },
      { label: "Enter", help: "Accept the enlarged mask" },
    ],
    draw: [
      { label: "Ctrl+Enter", help: "Submit the mask" },
      { label: "U", help: "Undo your last decision" },
    ],
  };
  function extendHelp() {
    const screen = document.querySelector("[data-review-screen]");
    if (!screen || !window.CM) return;
    const extra = PAGE_KEYS[screen.dataset.reviewScreen] || [];
    const add = (component) => component && Array.isArray(component.keys) && component.keys.unshift(...extra);
    document.querySelectorAll("[data-cm-viewer]").forEach((el) => window.CM.viewer && add(window.CM.viewer(el)));
    document.querySelectorAll("[data-cm-draw]").forEach((el) => window.CM.draw && add(window.CM.draw(el)));
  }

  function showMessage() {
    const message = sessionStorage.getItem(MESSAGE);
    if (message && !document.prerendering) {
      sessionStorage.removeItem(MESSAGE);
      alertText(message);
    }
  }
  document.addEventListener("prerenderingchange", showMessage);

  function init() {
    showMessage();
    extendHelp();
    // Without the components there is no cm:ready: start the clock once the page is shown.
    if (!document.querySelector("[data-cm-viewer],[data-cm-draw]")) onDrawn();
    else setTimeout(onDrawn, 10000); // a broken image must not stop the clock for good
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
