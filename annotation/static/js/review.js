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
 * - Not stored: a post that got no answer, or an answer that is not the API's (signed out in
 *   another tab, a redirect to the login page), is said in words; the choice or drawing stays
 *   on the screen and is sent again, with its key, on "Send again", when the connection comes
 *   back, or when "Sign in again" (a new tab) reports the reader signed in.
 * - Undo: U takes back the last action on this screen, this case's last round (after
 *   "neither": back to the pair), never an earlier case. "Undo last decision…" shows the
 *   decision it would take back (case number, the chosen mask) in a dialog and asks first.
 * - Back (or Forward) to a review screen reloads it: a decided case shows read-only.
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
        r = await fetch(screen.dataset.keepUrl, { method: "POST", credentials: "same-origin", headers: HEADERS(), redirect: "manual" });
        data = await r.json().catch(() => ({}));
      } catch (_) {
        active = true; // no connection: try again at the next beat
        return;
      }
      document.documentElement.dataset.leaseBeats = String(++beats);
      if (signedOut(r.status, data) || r.type === "opaqueredirect") {
        if (pending || document.documentElement.dataset.signedOut) return;
        document.documentElement.dataset.signedOut = "1";
        alertText("You are signed out: sign in again before you choose, or your choice cannot be stored.");
        const el = document.querySelector("[data-review-alert]");
        if (el) el.append(" ", signInLink());
        return;
      }
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
  /** The CSRF token: the cookie's (current even after signing in again in another tab), else
   *  the page's. */
  function csrf() {
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (m) return decodeURIComponent(m[1]);
    return window.CM && window.CM.csrfToken ? window.CM.csrfToken() : "";
  }
  function HEADERS(json) {
    const h = { Accept: "application/json", "X-CSRFToken": csrf() };
    if (json) h["Content-Type"] = "application/json";
    return h;
  }
  /** An answer that says the reader is no longer signed in (or the page's token is stale). */
  function signedOut(status, data) {
    const detail = String((data && data.detail) || "");
    return status === 401 || (status === 403 && /credentials|CSRF|signed|log ?in/i.test(detail));
  }
  const NOT_SENT = "No connection: your choice was NOT stored. It is kept here and sent once the connection is back.";
  const SIGNED_OUT = "You are signed out (session ended, or logged out in another tab): your choice was NOT stored. It is kept here and sent once you sign in again.";
  /** POST to the review API. `unsent` answers (no connection, signed out, or anything but the
   *  API's JSON, e.g. a login page a redirect led to) mean: nothing was stored. */
  async function post(url, body, tries = 5) {
    const json = !(body instanceof FormData);
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await fetch(url, {
          method: "POST",
          body: json ? JSON.stringify(body) : body,
          credentials: "same-origin",
          headers: HEADERS(json),
          redirect: "manual",
        });
        if (r.status >= 500 && attempt + 1 < tries) throw new Error(`HTTP ${r.status}`);
        const isJson = (r.headers.get("Content-Type") || "").includes("json");
        const data = isJson ? await r.json().catch(() => null) : null;
        if (r.type === "opaqueredirect" || r.redirected || data === null) {
          // Not the API's answer (a redirect to the login page, a proxy's error page).
          const out = r.type === "opaqueredirect" || r.redirected || r.status === 401 || r.status === 403;
          return { status: r.status, unsent: true, signedOut: out, data: { detail: out ? SIGNED_OUT : NOT_SENT } };
        }
        if (signedOut(r.status, data)) return { status: r.status, unsent: true, signedOut: true, data: { detail: SIGNED_OUT } };
        return { status: r.status, data };
      } catch (err) {
        if (attempt + 1 >= tries) return { status: 0, unsent: true, data: { detail: NOT_SENT } };
        alertText("Connection problem — retrying…");
        await new Promise((res) => setTimeout(res, 300 * 2 ** attempt));
      }
    }
  }

  /* ---------- a post that was not stored: kept, said, and sent again ---------- */
  let pending = null; // { url, body, after }
  const channel = "BroadcastChannel" in window ? new BroadcastChannel("cm-review") : null;
  function loginUrl() {
    const el = document.querySelector("[data-login-url]");
    return el ? el.dataset.loginUrl : "/accounts/login/?next=/review/signed-in";
  }
  function signInLink() {
    const link = Object.assign(document.createElement("a"), {
      href: loginUrl(), target: "_blank", rel: "opener", textContent: "Sign in again (new tab)",
    });
    link.dataset.signIn = "";
    return link;
  }
  function hold(url, body, answer, after) {
    pending = { url, body, after };
    document.documentElement.dataset.pending = answer.signedOut ? "signed-out" : "offline";
    alertText(answer.data.detail);
    const el = document.querySelector("[data-review-alert]");
    if (!el) return;
    if (answer.signedOut) el.append(" ", signInLink());
    const again = Object.assign(document.createElement("button"), { type: "button", textContent: "Send again" });
    again.className = "link";
    again.dataset.sendAgain = "";
    again.addEventListener("click", resend);
    el.append(" ", again);
  }
  /** Send what was kept, with its own idempotency key: stored once however often it is sent. */
  async function resend() {
    if (!pending || pending.sending) return;
    const held = pending;
    held.sending = true;
    alertText("Sending your kept choice again…");
    await send(held.url, held.body, held.after);
  }
  async function send(url, body, after) {
    const answer = await post(url, body);
    if (answer.unsent) return hold(url, body, answer, after);
    pending = null;
    delete document.documentElement.dataset.pending;
    return after(answer);
  }
  if (channel) {
    channel.addEventListener("message", (e) => {
      if (e.data !== "signed-in") return;
      delete document.documentElement.dataset.signedOut;
      if (pending) resend();
      else alertText("You are signed in again.");
    });
  }
  window.addEventListener("online", resend);

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
      if (name === "csrfmiddlewaretoken" || name === "back") continue;
      body[name] = INTEGERS.has(name) ? Number(value) : value;
    }
    return body;
  }
  const MESSAGE = "cm-review-message";
  function go(url, message, form) {
    sessionStorage.setItem(SUBMIT_AT, String((form && form.dataset.submitAt) || now()));
    // Shown by the next screen, which may have been fetched before this answer came.
    if (message) sessionStorage.setItem(MESSAGE, message);
    window.location.assign(url);
  }
  function release(form) {
    delete form.dataset.busy;
    form.querySelectorAll("button").forEach((b) => (b.disabled = false));
  }
  function follow(answer, form, message) {
    const { status, data } = answer;
    const ok = status >= 200 && status < 300;
    if (data.page_url) {
      go(data.page_url, ok ? message || "" : problem(answer), form);
      return true;
    }
    alertText(problem(answer));
    release(form);
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

  /* ---------- undo: this case's last round (U), or an earlier case's decision (confirmed) ---------- */
  async function undoRound(form) {
    if (!lock(form)) return;
    const body = jsonOf(form);
    form.querySelectorAll("button").forEach((b) => (b.disabled = true));
    await send(form.dataset.apiUrl, body, (answer) =>
      follow(answer, form, answer.status < 300 ? `Round ${body.number} was undone: choose again.` : ""));
  }
  async function undoDecision(form) {
    if (!lock(form)) return;
    const body = jsonOf(form);
    form.querySelectorAll("button").forEach((b) => (b.disabled = true));
    await send(form.dataset.apiUrl, body, (answer) => {
      if (answer.status === 200 && answer.data.page_url) {
        return go(answer.data.page_url, "Your decision was undone: choose again.", form);
      }
      // Refused (it is no longer the last decision, or it is final): say so, take nothing else.
      const where = form.closest("[data-undo-confirm]") || form;
      let note = where.querySelector("[data-undo-problem]");
      if (!note) {
        note = Object.assign(document.createElement("p"), { role: "alert" });
        note.dataset.undoProblem = "";
        where.append(note);
      }
      note.textContent = problem(answer);
      alertText(problem(answer));
      release(form);
    });
  }
  async function openUndoDialog(link) {
    const dialog = document.querySelector("[data-undo-dialog]");
    if (!dialog || !dialog.showModal) return window.location.assign(link.href);
    const url = new URL(link.href, window.location.href);
    url.searchParams.set("fragment", "1");
    let html;
    try {
      const r = await fetch(url, { credentials: "same-origin", redirect: "manual" });
      if (r.type === "opaqueredirect" || !r.ok) throw new Error(`HTTP ${r.status}`);
      html = await r.text();
    } catch (_) {
      return alertText("Could not ask the server what would be undone (signed out, or no connection). Nothing was undone.");
    }
    dialog.innerHTML = html;
    dialog.showModal();
    const cancel = dialog.querySelector("[data-undo-cancel]");
    if (cancel) cancel.focus(); // Enter keeps the decision: undoing takes a deliberate click
  }
  document.addEventListener("click", (e) => {
    const open = e.target.closest && e.target.closest("[data-undo-open]");
    if (open) {
      e.preventDefault();
      return openUndoDialog(open);
    }
    const cancel = e.target.closest && e.target.closest("[data-undo-dialog] [data-undo-cancel]");
    if (cancel) {
      e.preventDefault();
      cancel.closest("dialog").close();
    }
  });

  document.addEventListener("submit", async (e) => {
    const form = e.target;
    if (!(form instanceof HTMLFormElement) || !window.fetch || !form.dataset.apiUrl) return;
    if (form.matches("[data-review-form]")) {
      e.preventDefault();
      if (!lock(form)) return;
      const body = jsonOf(form, e.submitter);
      form.querySelectorAll("button").forEach((b) => (b.disabled = true));
      await send(form.dataset.apiUrl, body, (answer) => follow(answer, form));
    } else if (form.matches("[data-draw-form]")) {
      e.preventDefault();
      await submitDrawing(form);
    } else if (form.matches("[data-review-round-undo]")) {
      e.preventDefault();
      await undoRound(form);
    } else if (form.matches("[data-review-undo]")) {
      e.preventDefault();
      await undoDecision(form);
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
    const refined = editor.refinement ? editor.refinement() : null;
    if (refined) {
      body.append("clicks", JSON.stringify(refined.clicks));
      body.append("zones", JSON.stringify(refined.zones));
      body.append("interactive_model", String(refined.model));
    }
    await send(form.dataset.apiUrl, body, async (answer) => {
      if (answer.status >= 200 && answer.status < 300) await editor.discardDraft().catch(() => {});
      follow(answer, form);
    });
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
      e.preventDefault();
      undoKey();
      return;
    }
    const target = [...document.querySelectorAll("[data-choice-keys]")].find((el) =>
      el.dataset.choiceKeys.split(" ").includes(name));
    if (!target || target.disabled) return;
    e.preventDefault();
    target.click();
  });

  /** U: the last action on this screen, i.e. this case's last round; never an earlier case. */
  let uArmed = false;
  function undoKey() {
    const form = document.querySelector("[data-review-round-undo]");
    if (!form) {
      return alertText(document.querySelector("[data-undo-open]")
        ? "Nothing to undo on this case yet. To take back an earlier case, use “Undo last decision…”."
        : "Nothing to undo on this screen.");
    }
    const root = document.querySelector("[data-cm-draw]");
    const editor = root && window.CM && window.CM.draw ? window.CM.draw(root) : null;
    if (editor && !editor.isEmpty() && !uArmed) {
      uArmed = true;
      return alertText("Press U again to go back to the pair; your drawing is kept as a draft.");
    }
    form.requestSubmit();
  }

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
      { label: "U", help: "Undo this case's last round" },
    ],
    nway: [
      { label: "1 … 6", help: "Choose that mask" },
      { label: "Enter", help: "Choose the enlarged mask" },
      { label: "R", help: "Reject all and draw" },
    ],
    adjudication: [
      { label: "1 … 6", help: "Accept that reader's mask" },
      { label: "Enter", help: "Accept the enlarged mask" },
    ],
    draw: [
      { label: "Ctrl+Enter", help: "Submit the mask" },
      { label: "U", help: "Pairwise: back to the pair (undo “neither”)" },
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

  // Back (or Forward) to a screen: show the case as it stands now (decided: read-only), never
  // a page the browser kept from before the choice.
  window.addEventListener("pageshow", (e) => {
    if (!document.querySelector("[data-review-screen]")) return;
    const nav = performance.getEntriesByType("navigation")[0];
    if (e.persisted || (nav && nav.type === "back_forward")) location.reload();
  });

  function init() {
    if (document.querySelector("[data-review-signed-in]") && channel) channel.postMessage("signed-in");
    // A screen rendered ahead counts the cases done back then: its counter stays hidden until
    // the refreshed one (review:activated) replaces it, so it is never shown wrong.
    const nav = performance.getEntriesByType("navigation")[0];
    const progress = document.querySelector("[data-review-progress]");
    if (progress && (document.prerendering || (nav && nav.deliveryType === "navigational-prefetch"))) {
      progress.dataset.stale = "1";
    }
    showMessage();
    extendHelp();
    // Without the components there is no cm:ready: start the clock once the page is shown.
    if (!document.querySelector("[data-cm-viewer],[data-cm-draw]")) onDrawn();
    else setTimeout(onDrawn, 10000); // a broken image must not stop the clock for good
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
