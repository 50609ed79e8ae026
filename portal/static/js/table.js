// The subject/study table: one filter bar per column plus the file-search bar, sorting by
// header, server-side paging, tags, job state badges; double-click opens the viewer, a link
// per study opens its DICOM in OHIF.
import { api, element, project } from "./api.js";
import { DEFAULT_SORT, saveTableState, savedTableState, studiesPage } from "./studies.js";

const table = document.getElementById("studies");
const body = table.querySelector("tbody");
const identity = table.dataset.identity === "1";
const bars = [...document.querySelectorAll("input.bar")];
const state = { sort: DEFAULT_SORT, offset: 0, limit: 50, filters: {}, ...savedTableState() };
let rows = [];
let timer = null;
// The cursor of the page after the one shown; null on the last page.
let nextPage = null;

function showBarError(error) {
  for (const bar of bars) document.getElementById(`${bar.id}-error`).textContent = "";
  if (!error) return;
  const column = error.body.column ?? "files";
  (document.getElementById(`bar-${column}-error`) ?? document.getElementById("bar-files-error")).textContent = error.message;
}

const JOB_LABELS = { queued: "q", running: "r", error: "e", done: "d" };

function jobBadges(jobs) {
  return Object.entries(jobs).map(([stateName, count]) =>
    element("span", { class: `job job-${stateName}`, title: `${count} ${stateName}` }, `${JOB_LABELS[stateName] ?? stateName}${count}`));
}

// Series of the study held back from the archive (quarantined or failed): a badge that opens
// the list of their reasons, where project admins release or discard them.
function heldBadge(row) {
  const counts = Object.entries(row.held);
  if (!counts.length) return null;
  const total = counts.reduce((sum, [, count]) => sum + count, 0);
  return element("a", {
    class: "held-badge", href: `/p/${encodeURIComponent(project)}/conversions?study_id=${row.id}`,
    title: counts.map(([stateName, count]) => `${count} ${stateName}`).join(", "),
  }, `${total} held`);
}

function tagChips(row) {
  return [
    ...row.subject_tags.map((t) => element("span", { class: "tag subject-tag", title: "subject tag" }, t)),
    ...row.study_tags.map((t) => element("span", { class: "tag study-tag", title: "study tag" }, t)),
  ];
}

function render(page) {
  rows = page.rows;
  state.offset = page.offset;
  nextPage = page.next;
  document.getElementById("page-next").disabled = !nextPage;
  body.replaceChildren(...rows.map((row, index) => {
    const cells = [
      element("td", {}, element("input", { type: "checkbox", class: "pick", "data-id": row.id })),
      // An analysis (ANALYSIS#<name>) holds results spanning studies: no DICOM, no patient.
      element("td", {}, row.subject, ...(row.analysis ? [" ", element("span", { class: "tag", title: "project analysis" }, "analysis")] : [])),
      identity ? element("td", {}, row.patient_name ?? "") : null,
      element("td", {}, row.study),
      element("td", {}, row.study_date ?? ""),
      element("td", {}, row.description),
      element("td", { class: "tags" }, ...tagChips(row)),
      element("td", { class: "files" }, String(row.file_count), heldBadge(row)),
      element("td", {}, ...jobBadges(row.jobs)),
      // The study's DICOM in OHIF: the portal resolves its StudyInstanceUID and redirects.
      element("td", {}, row.analysis ? null : element("a", {
        class: "open-ohif", href: `/p/${encodeURIComponent(project)}/ohif?study=${row.id}`, title: "open the study's DICOM in OHIF",
      }, "OHIF")),
    ];
    return element("tr", { "data-id": row.id, "data-index": state.offset + index, ondblclick: () => openViewer(row, index) },
      ...cells.filter(Boolean));
  }));
  const last = Math.min(state.offset + state.limit, page.total);
  document.getElementById("page-info").textContent = page.total ? `${state.offset + 1}–${last} of ${page.total}` : "no studies";
  for (const th of table.querySelectorAll("th[data-sort]")) {
    th.classList.toggle("sorted-asc", state.sort === th.dataset.sort);
    th.classList.toggle("sorted-desc", state.sort === `-${th.dataset.sort}`);
  }
}

export async function refresh(after = null) {
  saveTableState(state);
  try {
    render(await studiesPage(state, state.offset, state.limit, after));
    saveTableState(state);
    showBarError(null);
  } catch (error) {
    if (error.status === 400) showBarError(error);
    else throw error;
  }
}

function openViewer(row, index) {
  saveTableState({ ...state, index: state.offset + index });
  location.href = `/p/${project}/viewer?study=${row.id}`;
}

function selectedIds() {
  return [...body.querySelectorAll("input.pick:checked")].map((box) => Number(box.dataset.id));
}

async function tag(action) {
  const name = document.getElementById("tag-name").value.trim();
  const ids = selectedIds();
  if (!name || !ids.length) return alert("Type a tag and select one or more studies.");
  try {
    await api(`/projects/${project}/tags`, { method: "POST", json: { level: "study", ids, [action]: [name] } });
  } catch (error) {
    return alert(error.message);
  }
  sessionStorage.setItem(`northanc.selection.${project}`, JSON.stringify(ids));
  await refresh();
}

for (const bar of bars) {
  bar.value = state.filters[bar.dataset.column] ?? "";
  bar.addEventListener("input", () => {
    state.filters[bar.dataset.column] = bar.value;
    state.offset = 0;
    clearTimeout(timer);
    timer = setTimeout(refresh, 250);
  });
}
for (const th of table.querySelectorAll("th[data-sort]")) {
  th.addEventListener("click", () => {
    state.sort = state.sort === th.dataset.sort ? `-${th.dataset.sort}` : th.dataset.sort;
    refresh();
  });
}
document.getElementById("page-prev").addEventListener("click", () => {
  state.offset = Math.max(0, state.offset - state.limit);
  refresh();
});
document.getElementById("page-next").addEventListener("click", () => {
  if (nextPage) refresh(nextPage);
});
const pageSize = document.getElementById("page-size");
pageSize.value = String(state.limit);
pageSize.addEventListener("change", () => {
  state.limit = Number(pageSize.value);
  state.offset = 0;
  refresh();
});
document.getElementById("select-all").addEventListener("change", (event) => {
  for (const box of body.querySelectorAll("input.pick")) box.checked = event.target.checked;
});
body.addEventListener("change", () => sessionStorage.setItem(`northanc.selection.${project}`, JSON.stringify(selectedIds())));
document.getElementById("tag-add")?.addEventListener("click", () => tag("add"));
document.getElementById("tag-remove")?.addEventListener("click", () => tag("remove"));
refresh();
