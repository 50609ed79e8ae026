// The PACS query page: search, patients with their studies (identities as the role allows,
// revealed on request and audited), series on demand, pull the selection or a cohort.
import { api, element, project, upload } from "./api.js";

const form = document.getElementById("query-form");
const body = document.querySelector("#results tbody");
const state = { offset: 0, limit: 25, query: null };

function fields() {
  const data = Object.fromEntries(new FormData(form));
  const { peer, confirm, ...rest } = data;
  return { peer, query: { ...rest, confirm: confirm === "1" } };
}

async function search() {
  const { peer, query } = state.query;
  document.getElementById("query-error").textContent = "";
  let answer;
  try {
    answer = await api(`/projects/${project}/pacs/${encodeURIComponent(peer)}/query`, {
      method: "POST", json: { ...query, offset: state.offset, limit: state.limit },
    });
  } catch (failure) {
    document.getElementById("query-error").textContent = failure.message;
    return;
  }
  document.getElementById("query-summary").textContent =
    `${answer.study_count} studies of ${answer.patient_count} patients` + (answer.identities ? "" : " (names hidden for your role)");
  const last = Math.min(answer.offset + answer.limit, answer.patient_count);
  document.getElementById("page").textContent = answer.patient_count ? `patients ${answer.offset + 1}–${last}` : "";
  body.replaceChildren(...answer.patients.flatMap((patient, index) => patient.studies.map((study, position) => {
    const who = patient.patient_id === null ? patient.label : `${patient.patient_name} (${patient.patient_id})`;
    const patientCell = element("td", { class: "patient" }, position === 0 ? who : "");
    if (position === 0 && patient.patient_id === null) {
      patientCell.append(" ", element("button", { type: "button", class: "reveal", onclick: () => reveal(study, patientCell) }, "reveal"));
    }
    return element("tr", { class: `patient-${index % 2 ? "odd" : "even"}`, "data-patient": patient.label, "data-study": study.study_instance_uid },
      element("td", {}, element("input", { type: "checkbox", class: "pick", value: study.study_instance_uid })),
      patientCell,
      element("td", {}, study.study_date),
      element("td", {}, study.study_description),
      element("td", {}, study.accession_number),
      element("td", {}, study.modalities),
      element("td", {}, study.series),
      element("td", {}, element("button", { type: "button", onclick: (e) => showSeries(study, e.target) }, "series")));
  })));
}

async function reveal(study, cell) {
  if (!confirm("Show this patient's real name and id? This is recorded in the audit log.")) return;
  const { peer } = state.query;
  const who = await api(`/projects/${project}/pacs/${encodeURIComponent(peer)}/reveal`, {
    method: "POST", json: { study_instance_uid: study.study_instance_uid },
  });
  cell.textContent = `${who.patient_name} (${who.patient_id})`;
}

async function showSeries(study, button) {
  const { peer } = state.query;
  const { series } = await api(`/projects/${project}/pacs/${encodeURIComponent(peer)}/studies/${study.study_instance_uid}/series`);
  button.replaceWith(element("ul", { class: "series" }, ...series.map((s) =>
    element("li", {}, `${s.SeriesNumber} ${s.Modality} ${s.SeriesDescription} (${s.NumberOfSeriesRelatedInstances})`))));
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  state.query = fields();
  state.offset = 0;
  search();
});
document.getElementById("prev").addEventListener("click", () => {
  state.offset = Math.max(0, state.offset - state.limit);
  if (state.query) search();
});
document.getElementById("next").addEventListener("click", () => {
  state.offset += state.limit;
  if (state.query) search();
});
document.getElementById("pick-all").addEventListener("change", (event) => {
  for (const box of body.querySelectorAll("input.pick")) box.checked = event.target.checked;
});

function pulled(answer) {
  const result = document.getElementById("pull-result");
  result.replaceChildren(`pull ${answer.pull}: ${answer.rows} studies queued — `,
    element("a", { href: `/p/${project}/pulls` }, "follow its progress"));
}

document.getElementById("pull").addEventListener("click", async () => {
  const studies = [...body.querySelectorAll("input.pick:checked")].map((box) => box.value);
  if (!studies.length || !state.query) return alert("Search, then select studies to pull.");
  try {
    pulled(await api(`/projects/${project}/pulls`, { method: "POST", json: {
      peer: state.query.peer, studies,
      modality: document.getElementById("pull-modality").value, series_description: document.getElementById("pull-description").value,
    } }));
  } catch (failure) {
    document.getElementById("pull-result").textContent = failure.message;
  }
});

document.getElementById("cohort-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(event.target);
  data.set("peer", document.getElementById("peer").value);
  try {
    pulled(await upload(`/projects/${project}/pulls`, data, () => {}));
  } catch (failure) {
    document.getElementById("pull-result").textContent = failure.message;
  }
});
