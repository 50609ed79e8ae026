// The pulls' progress: every pull with its counts, one pull's rows; refreshed while running.
import { api, element, project } from "./api.js";

let shown = null;

function summary(progress) {
  return Object.entries(progress).filter(([, n]) => n).map(([state, n]) => `${n} ${state}`).join(", ");
}

async function refresh() {
  const { pulls } = await api(`/projects/${project}/pulls`);
  document.querySelector("#pulls tbody").replaceChildren(...pulls.map((pull) => element("tr", { "data-pull": pull.id },
    element("td", {}, String(pull.id)), element("td", {}, pull.source), element("td", {}, pull.created_by),
    element("td", {}, pull.created_at.replace("T", " ").slice(0, 19)),
    element("td", { class: "progress" }, summary(pull.progress)),
    element("td", {}, element("button", { type: "button", onclick: () => showRows(pull.id) }, "rows"), " ",
      element("a", { href: `/api/v1/projects/${project}/pulls/${pull.id}/report` }, "report")))));
  if (shown !== null) await showRows(shown);
  const active = pulls.some((pull) => pull.progress.queued || pull.progress.running);
  if (active) setTimeout(refresh, 2000);
}

async function showRows(id) {
  shown = id;
  const pull = await api(`/projects/${project}/pulls/${id}`);
  const title = document.getElementById("rows-title");
  title.hidden = false;
  title.textContent = `Pull ${id}: ${summary(pull.progress)}`;
  const table = document.getElementById("rows");
  table.hidden = false;
  table.querySelector("tbody").replaceChildren(...pull.rows.map((row) => element("tr", { class: `pull-${row.state}` },
    element("td", {}, String(row.line)), element("td", {}, row.accession_number), element("td", {}, row.patient_id),
    element("td", {}, row.study_date), element("td", {}, element("span", { class: `job job-${row.state === "failed" ? "error" : row.state}` }, row.state)),
    element("td", {}, String(row.attempts)), element("td", {}, String(row.series)), element("td", {}, row.message))));
}

refresh();
