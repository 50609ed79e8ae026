// The batchtool: compose a batch from job definitions, save it, launch it on the studies
// selected in the table (or those passing a filter).
import { api, element, project } from "./api.js";

const editor = document.getElementById("batch");
const errorLine = document.getElementById("batch-error");
const selection = JSON.parse(sessionStorage.getItem(`northanc.selection.${project}`) ?? "[]");
document.getElementById("selected-count") && (document.getElementById("selected-count").textContent = selection.length);

function batch() {
  try {
    errorLine.textContent = "";
    return JSON.parse(editor.value);
  } catch (error) {
    errorLine.textContent = `not valid JSON: ${error.message}`;
    throw error;
  }
}

async function loadSaved() {
  const { batches } = await api(`/projects/${project}/batches`);
  document.getElementById("saved").replaceChildren(...batches.map((b) =>
    element("li", { class: "file", ondblclick: () => openSaved(b.name), title: "double-click to open" }, b.name)));
}

async function openSaved(name) {
  editor.value = JSON.stringify(await api(`/projects/${project}/batches/${encodeURIComponent(name)}`), null, 2);
  document.getElementById("batch-name").value = name;
}

async function loadDefinitions() {
  const definitions = await api("/job-definitions");
  document.getElementById("definitions").textContent =
    `generic (take a script): ${definitions.generic.join(", ")}; predefined: ${definitions.predefined.join(", ")}`;
  document.getElementById("library-doc").textContent = definitions.documentation;
  const executor = document.getElementById("executor");
  executor?.replaceChildren(...definitions.executors.map((name) => element("option", {}, name)));
}

document.getElementById("add-job").addEventListener("click", () => {
  const document_ = batch();
  document_.jobs.push({
    job: "bash", script: 'echo "$f1" > "$o1"',
    args: { f1: { type: "FILE", value: "*.nii.gz" }, o1: { type: "OUT", value: "out/result.txt" } },
  });
  editor.value = JSON.stringify(document_, null, 2);
});

document.getElementById("save")?.addEventListener("click", async () => {
  const name = document.getElementById("batch-name").value.trim();
  try {
    await api(`/projects/${project}/batches/${encodeURIComponent(name)}`, { method: "PUT", json: batch() });
    await loadSaved();
  } catch (error) {
    errorLine.textContent = error.message;
  }
});

document.getElementById("launch")?.addEventListener("click", async () => {
  const target = document.querySelector('input[name="target"]:checked').value;
  const body = { batch: batch(), executor: document.getElementById("executor").value };
  if (target === "selected") body.studies = selection;
  else body.filter = document.getElementById("launch-filter").value;
  const result = document.getElementById("launch-result");
  try {
    const answer = await api(`/projects/${project}/launches`, { method: "POST", json: body });
    result.replaceChildren(`launch ${answer.launch}: ${answer.runs.length} run(s) on ${answer.executor} — `,
      element("a", { href: `/p/${project}/gridstats` }, "watch them in gridstats"));
  } catch (error) {
    errorLine.textContent = error.message;
  }
});

loadSaved();
loadDefinitions();
