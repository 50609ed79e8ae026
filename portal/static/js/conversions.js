// Series held back from the archive, with why; a project admin releases or discards each with a reason.
import { api, element, project } from "./api.js";

const table = document.getElementById("conversions");
const body = table.querySelector("tbody");
const admin = table.dataset.admin === "1";
const studyFilter = new URLSearchParams(location.search).get("study_id");

function decide(row, action) {
  return async () => {
    const reason = prompt(`Why ${action} series ${row.series_folder || row.series_instance_uid}?`);
    if (!reason) return;
    try {
      await api(`/projects/${encodeURIComponent(project)}/conversions/${row.id}/${action}`, { method: "POST", json: { reason } });
      await load();
    } catch (error) {
      document.getElementById("conversions-error").textContent = error.message;
    }
  };
}

function actions(row) {
  if (!admin || row.state !== "quarantined") return admin ? [element("td")] : [];
  return [element("td", {},
    element("button", { type: "button", class: "release", onclick: decide(row, "release") }, "Release"), " ",
    element("button", { type: "button", class: "discard", onclick: decide(row, "discard") }, "Discard"))];
}

async function load() {
  const query = studyFilter ? `?study_id=${encodeURIComponent(studyFilter)}` : "";
  const { conversions } = await api(`/projects/${encodeURIComponent(project)}/conversions${query}`);
  body.replaceChildren(...conversions.map((row) => element("tr", { "data-id": row.id },
    element("td", {}, String(row.id)), element("td", { class: `held held-${row.state}` }, row.state),
    element("td", {}, row.subject), element("td", {}, row.study), element("td", {}, row.series_folder),
    element("td", {}, String(row.instances)), element("td", { class: "reason" }, row.reason),
    ...actions(row))));
  document.getElementById("conversions-empty").hidden = conversions.length > 0;
}

load().catch((error) => { document.getElementById("conversions-error").textContent = error.message; });
