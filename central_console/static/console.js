// clinibox hospital console: every page works without this file.
"use strict";

// The alerts worklist: ask every few seconds for alerts newer than the newest shown, insert
// their rows (rendered and escaped on the server) at the top, and say how many arrived.
function startAlertPoll() {
  const table = document.getElementById("alerts");
  const notice = document.getElementById("new-alerts");
  if (!table || !notice) return;
  const seconds = Number(table.dataset.poll) || 5;
  let last = Number(table.dataset.lastId) || 0;
  let arrived = 0;
  const poll = async () => {
    const url = new URL(table.dataset.pollUrl, window.location.href);
    url.searchParams.set("after", String(last));
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      if (response.status === 401) { window.location.reload(); return; }
      if (!response.ok) return;
      const answer = await response.json();
      last = Math.max(last, Number(answer.last) || 0);
      if (!answer.count) return;
      const body = table.tBodies[0];
      const empty = body.querySelector("tr.empty-row");
      if (empty) empty.remove();
      const holder = document.createElement("tbody");
      holder.innerHTML = answer.html;  // rendered and escaped on the server
      for (const row of Array.from(holder.rows).reverse()) {
        if (body.querySelector(`tr[data-alert-id="${row.dataset.alertId}"]`)) continue;
        row.classList.add("fresh");
        body.insertBefore(row, body.firstChild);
      }
      arrived += answer.count;
      notice.textContent = arrived === 1 ? table.dataset.newOne
        : table.dataset.newMany.replace("{n}", String(arrived));
      notice.hidden = false;
    } catch (error) { /* the console may be restarting; try again next time */ }
  };
  window.setInterval(poll, seconds * 1000);
}

// The review form: a follow-up needs its months (the server checks it too).
function requireMonths() {
  const months = document.getElementById("months");
  const form = document.getElementById("review");
  if (!months || !form) return;
  const update = () => {
    const chosen = form.querySelector('input[name="verdict"]:checked');
    months.required = Boolean(chosen && chosen.value === "follow_up");
  };
  form.addEventListener("change", update);
  update();
}

document.addEventListener("DOMContentLoaded", startAlertPoll);
document.addEventListener("DOMContentLoaded", requireMonths);

// A box's "test the link" panel while the box's answer is awaited: reload the page after a
// few seconds (at most 40 times, about two minutes), so the answer shows without a click.
function reloadWhileWaiting() {
  const panel = document.querySelector("[data-reload-seconds]");
  if (!panel) return;
  const key = `reloads:${window.location.pathname}`;
  const done = Number(window.sessionStorage.getItem(key)) || 0;
  if (done >= 40) return;
  window.setTimeout(() => {
    window.sessionStorage.setItem(key, String(done + 1));
    window.location.reload();
  }, (Number(panel.dataset.reloadSeconds) || 3) * 1000);
}

document.addEventListener("DOMContentLoaded", reloadWhileWaiting);
