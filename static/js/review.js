/*
 * collabmask — the review screens' own glue (the viewer and draw components are cm-*.js).
 *
 * - Choice keys: every element with data-choice-keys="a ArrowLeft" is pressed by those keys
 *   (digits, A, B, N, R, Enter, arrows, U, Ctrl+Enter: the components never use them).
 * - Submitting: forms post with fetch and Accept: application/json, retried on network errors
 *   with the same request key (the server returns the stored decision for a repeated key), and
 *   guarded against double submission. The answer says where to go next.
 * - Time on screen: visible time from "screen usable" (cm:ready) to the choice, sent as ms.
 * - Transition time: from a choice to the next screen being usable, kept in
 *   window.cmReview.transitionMs (the browser tests report it).
 * - The next case: once this screen is in use, data-ahead-url names the reader's next case
 *   (leased ahead) and the browser prerenders it (speculation rules), or at least fetches its
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
      const r = await fetch(screen.dataset.aheadUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!r.ok) return;
      next = await r.json();
    } catch (_) {
      return; // prefetching is a nicety
    }
    if (!next.url) return;
    if (HTMLScriptElement.supports && HTMLScriptElement.supports("speculationrules")) {
      const rules = document.createElement("script");
      rules.type = "speculationrules";
      rules.textContent = JSON.stringify({ prerender: [{ source: "list", urls: [next.url] }] });
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
        r = await fetch(screen.dataset.keepUrl, {
          method: "POST",
          credentials: "same-origin",
          headers: { Accept: "application/json", "X-CSRFToken": window.CM.csrfToken() },
        });
        data = await r.json().catch(() => ({}));
      } catch (_) {
        active = true; // no connection: try again at the next beat
        return;
      }
      document.documentElement.dataset.leaseBeats = String(++beats);
      if (r.status !== 409) return;
      lost = true;
      clearInterval(timer);
      alertText(data.error || "This case is no longer yours to decide.");
      const alert = document.querySelector("[data-review-alert]");
      if (alert && data.redirect) {
        const go = Object.assign(document.createElement("a"), { href: data.redirect, textContent: "Go on" });
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

  /* ---------- posting: fetch + JSON, retried with the same key ---------- */
  async function post(url, body, tries = 5) {
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await fetch(url, {
          method: "POST",
          body,
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
        const data = await r.json().catch(() => ({ error: `The server answered HTTP ${r.status}.` }));
        if (r.status >= 500 && attempt + 1 < tries) throw new Error(`HTTP ${r.status}`);
        return { status: r.status, data };
      } catch (err) {
        if (attempt + 1 >= tries) return { status: 0, data: { error: "No connection to the server; your choice was not sent. Try again." } };
        alertText("Connection problem — retrying…");
        await new Promise((res) => setTimeout(res, 300 * 2 ** attempt));
      }
    }
  }
  const MESSAGE = "cm-review-message";
  function follow({ status, data }, form) {
    if (data.redirect) {
      sessionStorage.setItem(SUBMIT_AT, String(form.dataset.submitAt || now()));
      // Shown by the next screen, which may have been fetched before this answer came.
      if (data.message) sessionStorage.setItem(MESSAGE, data.message);
      window.location.assign(data.redirect);
      return true;
    }
    alertText(data.error || `Something went wrong (HTTP ${status}).`);
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

  document.addEventListener("submit", async (e) => {
    const form = e.target;
    if (!(form instanceof HTMLFormElement) || !window.fetch) return;
    if (form.matches("[data-review-form]")) {
      e.preventDefault();
      if (!lock(form)) return;
      const body = new FormData(form, e.submitter || undefined);
      form.querySelectorAll("button").forEach((b) => (b.disabled = true));
      follow(await post(form.action, body), form);
    } else if (form.matches("[data-draw-form]")) {
      e.preventDefault();
      await submitDrawing(form);
    }
  });

  async function submitDrawing(form) {
    const root = document.querySelector("[data-cm-draw]");
    if (!root || !window.CM || !window.CM.draw) return alertText("The drawing tools did not load; reload the page.");
    const editor = window.CM.draw(root);
    await editor.ready;
    const refining = form.querySelector("input[name=outcome]").value === "refined";
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
    const answer = await post(form.action, body);
    if (answer.data.redirect) await editor.discardDraft().catch(() => {});
    follow(answer, form);
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
