/*
 * collabmask — flag or skip the case on a review screen (review/_flag_skip.html).
 *
 * The form works without this script (a plain post, answered with a redirect). With it, the
 * flag or skip goes to the review API as JSON (session cookie, CSRF token), each with a fresh
 * idempotency key that a retry after a network error resends: a flag leaves the reader on the
 * screen as it is (nothing redrawn, nothing lost), a skip goes on to the answer's page_url,
 * their next case. The message the next screen says is passed the way review.js passes its
 * own (sessionStorage "cm-review-message").
 */
(function () {
  "use strict";
  const MESSAGE = "cm-review-message";

  function csrf(form) {
    const input = form.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }
  function freshKey(form) {
    if (window.crypto && window.crypto.randomUUID) return "flag-" + window.crypto.randomUUID();
    form.dataset.flagCount = String(Number(form.dataset.flagCount || 0) + 1);
    return form.querySelector("input[name=idempotency_key]").value + "." + form.dataset.flagCount;
  }
  function say(form, text) {
    const status = form.querySelector("[data-flag-status]");
    if (status) status.textContent = text;
  }
  function problem(status, data) {
    if (data.detail) return data.detail;
    const fields = Object.entries(data).map(([k, v]) => `${k}: ${[].concat(v).join(" ")}`);
    return fields.length ? fields.join("; ") : `Something went wrong (HTTP ${status}).`;
  }
  async function post(form, url, body, tries = 4) {
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await fetch(url, {
          method: "POST",
          body: JSON.stringify(body),
          credentials: "same-origin",
          headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRFToken": csrf(form) },
        });
        const data = await r.json().catch(() => ({ detail: `The server answered HTTP ${r.status}.` }));
        if (r.status >= 500 && attempt + 1 < tries) throw new Error(`HTTP ${r.status}`);
        return { status: r.status, data };
      } catch (_) {
        if (attempt + 1 >= tries) return { status: 0, data: { detail: "No connection to the server; nothing was sent. Try again." } };
        say(form, "Connection problem — retrying…");
        await new Promise((res) => setTimeout(res, 300 * 2 ** attempt));
      }
    }
  }

  document.addEventListener("submit", async (e) => {
    const form = e.target;
    if (!(form instanceof HTMLFormElement) || !form.matches("[data-flag-form]") || !window.fetch) return;
    e.preventDefault();
    if (form.dataset.busy) return;
    const skip = Boolean(e.submitter && e.submitter.dataset.flagAction === "skip");
    const data = new FormData(form);
    const body = { reason: data.get("reason") || "", comment: data.get("comment") || "", idempotency_key: freshKey(form) };
    form.dataset.busy = "1";
    form.querySelectorAll("button").forEach((b) => (b.disabled = true));
    const answer = await post(form, skip ? form.dataset.skipUrl : form.dataset.flagUrl, body);
    const ok = answer.status >= 200 && answer.status < 300;
    if (ok && skip) {
      sessionStorage.setItem(MESSAGE, "Case skipped: it goes to another reader. Here is your next case.");
      window.location.assign(answer.data.page_url);
      return;
    }
    delete form.dataset.busy;
    form.querySelectorAll("button").forEach((b) => (b.disabled = false));
    if (!ok) return say(form, problem(answer.status, answer.data));
    form.reset();
    say(form, "Flagged for an admin. You can go on with this case.");
    document.documentElement.dataset.caseFlagged = "1";
  });
})();
