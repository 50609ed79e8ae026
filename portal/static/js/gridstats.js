// Gridstats: the project's runs with search, state filter and sort; click a run for its log;
// cancel the selected ones, rerun the errored ones. Refreshes while runs are active.
import { api, element, project } from "./api.js";
import { debugRun } from "./notebooks.js";

const canEdit = document.getElementById("cancel") !== null;

const body = document.querySelector("#runs tbody");
const state = { sort: "-id", q: "", state: "" };
let timer = null;

async function refresh() {
  const params = new URLSearchParams({ sort: state.sort, limit: 200 });
  if (state.q) params.set("q", state.q);
  if (state.state) params.set("state", state.state);
  const { total, runs } = await api(`/projects/${project}/runs?${params}`);
  document.getElementById("run-count").textContent = `${total} run(s)`;
  body.replaceChildren(...runs.map((run) => element("tr", { "data-run": run.id, class: `run-${run.state}`, onclick: () => showLog(run.id) },
    element("td", {}, element("input", { type: "checkbox", class: "pick", "data-id": run.id, onclick: (e) => e.stopPropagation() })),
    element("td", {}, String(run.id)),
    element("td", {}, run.batch ?? ""),
    element("td", {}, run.subject),
    element("td", {}, run.study ?? ""),
    element("td", {}, element("span", { class: `job job-${run.state}` }, run.state)),
    element("td", {}, run.finished_at?.replace("T", " ").slice(0, 19) ?? ""),
    element("td", {}, run.message, run.state === "error" && canEdit
      ? element("button", { type: "button", class: "debug-run", onclick: (e) => { e.stopPropagation(); debugRun(run.id); } }, "Debug in a notebook")
      : null))));
  clearTimeout(timer);
  if (runs.some((run) => run.state === "queued" || run.state === "running")) timer = setTimeout(refresh, 2000);
}

async function showLog(runId) {
  const { log } = await api(`/projects/${project}/runs/${runId}/log`);
  const pane = document.getElementById("log");
  pane.hidden = false;
  pane.textContent = log || "(no log yet)";
}

let searchTimer = null;
document.getElementById("run-search").addEventListener("input", (event) => {
  state.q = event.target.value.trim();
  clearTimeout(searchTimer);
  searchTimer = setTimeout(refresh, 250);
});
document.getElementById("run-state").addEventListener("change", (event) => {
  state.state = event.target.value;
  refresh();
});
for (const th of document.querySelectorAll("#runs th[data-sort]")) {
  th.addEventListener("click", () => {
    state.sort = state.sort === `-${th.dataset.sort}` ? th.dataset.sort : `-${th.dataset.sort}`;
    refresh();
  });
}
document.getElementById("cancel")?.addEventListener("click", async () => {
  const runs = [...body.querySelectorAll("input.pick:checked")].map((box) => Number(box.dataset.id));
  if (!runs.length) return alert("Select the runs to cancel.");
  await api(`/projects/${project}/runs/cancel`, { method: "POST", json: { runs } });
  refresh();
});
document.getElementById("rerun")?.addEventListener("click", async () => {
  await api(`/projects/${project}/runs/rerun`, { method: "POST", json: {} });
  refresh();
});
refresh();
