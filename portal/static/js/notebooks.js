// The caller's notebook server of the project: start it (form), list it, open it, stop it.
// On Gridstats only the list is there. Refreshes while the hub starts or stops it.
import { api, element, project } from "./api.js";

const body = document.querySelector("#notebooks tbody");
const message = document.getElementById("notebook-message");
let timer = null;

function show(text) {
  message.textContent = text;
}

async function refresh() {
  const { notebooks } = await api(`/projects/${project}/notebooks`);
  body.replaceChildren(...notebooks.map((server) => element("tr", { "data-project": server.project },
    element("td", {}, server.project),
    element("td", {}, server.executor),
    element("td", {}, server.ready ? "running" : server.pending ? `${server.pending}ing` : "stopped"),
    element("td", {}, server.started?.replace("T", " ").slice(0, 19) ?? ""),
    element("td", {},
      server.ready ? element("a", { href: server.url, target: "_blank", rel: "noopener", class: "button" }, "Open") : "",
      element("button", { type: "button", class: "stop-notebook", onclick: () => stop() }, "Stop")))));
  clearTimeout(timer);
  if (notebooks.some((server) => server.pending)) timer = setTimeout(refresh, 2000);
}

async function stop() {
  try {
    await api(`/projects/${project}/notebooks`, { method: "DELETE" });
    show("stopped");
  } catch (error) {
    show(error.message);
  }
  refresh();
}

// An errored run's jobs in the caller's notebook (Gridstats): opened in a new tab once ready.
export async function debugRun(runId) {
  const tab = window.open("", "_blank");
  show(`starting a notebook for run ${runId}…`);
  try {
    const { url } = await api(`/projects/${project}/runs/${runId}/notebook`, { method: "POST", json: {} });
    for (;;) {
      const { notebooks } = await api(`/projects/${project}/notebooks`);
      if (notebooks.some((server) => server.ready)) break;
      if (!notebooks.some((server) => server.pending)) throw new Error("the notebook did not start");
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    tab.location = url;
    show("");
  } catch (error) {
    tab?.close();
    show(error.message);
  }
  refresh();
}

const form = document.getElementById("notebook-form");
form?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const fields = new FormData(form);
  const json = { executor: fields.get("executor") };
  for (const name of ["time_minutes", "cpus", "memory_mb"]) json[name] = Number(fields.get(name));
  if (fields.get("partition")) json.partition = fields.get("partition");
  show("starting…");
  try {
    await api(`/projects/${project}/notebooks`, { method: "POST", json });
    show("starting: it opens here once ready");
  } catch (error) {
    show(error.message);
  }
  refresh();
});

refresh().catch((error) => show(error.message));
