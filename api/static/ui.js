// Live job progress without reloading the page: every element with data-poll (a job's JSON URL) is
// refreshed once a second until its job has finished; the pending page reloads itself when its job is done.
"use strict";

const FINISHED = ["succeeded", "failed", "cancelled"];
const POLL_MS = 1000;

function setField(root, name, text) {
  for (const el of root.querySelectorAll(`[data-field="${name}"]`)) {
    el.textContent = text;
  }
}

function showProgress(root, job) {
  for (const bar of root.querySelectorAll('[data-field="bar"]')) {
    bar.value = job.percent;
    bar.textContent = `${Math.round(job.percent)} %`;
  }
  setField(root, "percent", `${job.percent.toFixed(1)} %`);
  setField(root, "rate", job.reviews_per_second ? `${Math.round(job.reviews_per_second)} reviews/s` : "");
  setField(root, "eta", job.eta_seconds === null ? "" : `ETA ${Math.round(job.eta_seconds)} s`);
  setField(root, "accuracy", job.accuracy === null ? "" : `${(100 * job.accuracy).toFixed(1)} %`);
  for (const el of root.querySelectorAll('[data-field="status"]')) {
    el.textContent = job.status;
    el.className = `status status-${job.status}`;
  }
}

async function fetchJob(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (!response.ok) {
    throw new Error(`${url}: ${response.status}`);
  }
  return response.json();
}

function watch(root) {
  const url = root.dataset.poll;
  const tick = async () => {
    try {
      const job = await fetchJob(url);
      showProgress(root, job);
      if (FINISHED.includes(job.status)) {
        root.removeAttribute("data-poll");
        return;
      }
    } catch (error) {
      console.warn(error);
    }
    window.setTimeout(tick, POLL_MS);
  };
  tick();
}

function reloadWhenDone(element) {
  const tick = async () => {
    try {
      const job = await fetchJob(element.dataset.reloadWhenDone);
      setField(element, "status", job.status);
      if (FINISHED.includes(job.status)) {
        window.location.reload();
        return;
      }
    } catch (error) {
      console.warn(error);
    }
    window.setTimeout(tick, POLL_MS / 2);
  };
  tick();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-poll]").forEach(watch);
  document.querySelectorAll("[data-reload-when-done]").forEach(reloadWhenDone);
});
