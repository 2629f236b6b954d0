// Live parts of the dashboard: lists fed by the API's Server-Sent Events, which accept the
// session cookie. Pages work without this script; it only keeps them current.
"use strict";

function line(event) {
  const li = document.createElement("li");
  const time = document.createElement("time");
  time.textContent = new Date(event.at).toISOString().slice(11, 23);
  const kind = document.createElement("strong");
  kind.textContent = event.kind;
  li.append(time, " ", kind);
  if (event.to_status) {
    const badge = document.createElement("span");
    badge.className = "badge status-" + event.to_status;
    badge.textContent = event.to_status;
    li.append(" → ", badge);
  }
  const more = document.createElement("span");
  more.className = "muted";
  more.textContent = " " + (event.intent || "") + " attempt " + event.attempt;
  if (event.kind === "progress" && event.detail) {
    more.textContent += " " + JSON.stringify(event.detail);
  }
  li.append(more);
  if (!document.getElementById("status") && event.job_id) {
    const link = document.createElement("a");
    link.href = document.body.dataset.base + "/ui/jobs/" + event.job_id;
    link.textContent = " " + event.job_id;
    li.append(link);
  }
  return li;
}

for (const list of document.querySelectorAll("ol.live[data-source]")) {
  const source = new EventSource(list.dataset.source);
  let fresh = list.dataset.replaces === "true";
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    // A job's stream replays its history: it replaces the list the server rendered.
    if (fresh) { list.replaceChildren(); fresh = false; }
    list.append(line(event));
    if (list.dataset.replaces !== "true") {
      while (list.children.length > 50) list.firstElementChild.remove();
    }
    const status = document.getElementById("status");
    if (status && event.to_status) {
      status.textContent = event.to_status;
      status.className = "badge status-" + event.to_status;
      // Nothing to cancel any more.
      if (["succeeded", "failed", "cancelled", "timed_out"].includes(event.to_status)) {
        document.querySelector("form[action$='/cancel']")?.remove();
      }
    }
  };
  // The job is final: its result comes from the page itself, fetched again (no reload).
  source.addEventListener("end", async () => {
    source.close();
    const result = document.getElementById("result");
    if (!result) return;
    const page = new DOMParser().parseFromString(await (await fetch(location.href)).text(), "text/html");
    const fresh = page.getElementById("result");
    if (fresh) result.textContent = fresh.textContent;
  });
}
