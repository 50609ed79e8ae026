// The batchtool: compose a batch from the job menu, check it against the studies before running
// it (validate), keep it (saved batches, JSON) and launch it on the studies selected in the table
// or those passing a filter. Viewers may compose and validate; the server refuses them the rest.
import { api, element, project } from "./api.js";
import { Composer } from "./batch_composer.js";
import { ImportError, fromSpec, toSpec } from "./batch_spec.js";

const byId = (id) => document.getElementById(id);
const canEdit = byId("batchtool").dataset.canEdit === "1";
const selection = JSON.parse(sessionStorage.getItem(`northanc.selection.${project}`) ?? "[]");
const errorLine = byId("batch-error");
const RESOURCES = ["queue", "cpus", "memory_mb", "time_minutes"];
const batchPath = (name) => `/projects/${project}/batches/${encodeURIComponent(name)}`;
let definitions = null;
let composer = null;

byId("selected-count").textContent = selection.length;

function say(text, { error = true } = {}) {
  errorLine.textContent = text;
  errorLine.className = error ? "error" : "ok";
}

function resources() {
  const values = Object.fromEntries(RESOURCES.map((key) => {
    const input = byId(`res-${key}`);
    if (input.type !== "number") return [key, input.value.trim()];
    return [key, Number.isNaN(input.valueAsNumber) ? null : input.valueAsNumber];
  }));
  return { ...values, network: byId("res-network").checked };
}

function spec() {
  return toSpec(byId("batch-name").value.trim(), composer.level, composer.jobs, resources());
}

function onChange() {
  byId("no-jobs").hidden = composer.jobs.length > 0;
  byId("validation").classList.add("stale");
}

function load(batch, name) {
  const state = fromSpec(batch, definitions.jobs, definitions.arg_types);
  byId("batch-name").value = name ?? state.name ?? "new batch";
  byId("batch-level").value = state.level;
  for (const key of RESOURCES) byId(`res-${key}`).value = state.resources[key] ?? "";
  byId("res-network").checked = state.resources.network === true;
  composer.load(state.jobs, state.level);
  markCurrent();
}

function jobMenu() {
  return definitions.categories.flatMap((category) => {
    const jobs = definitions.jobs.filter((job) => job.category === category);
    if (!jobs.length) return [];
    return [element("div", { class: "job-category", "data-category": category },
      element("h3", {}, category),
      ...jobs.map((job) => element("button", { type: "button", class: "add-job", "data-job": job.name, title: job.help,
        onclick: () => composer.add(job) }, job.title)))];
  });
}

async function loadDefinitions() {
  definitions = await api("/job-definitions");
  composer = new Composer(byId("jobs"), { argTypes: definitions.arg_types, canEdit, onChange });
  byId("job-menu")?.replaceChildren(...jobMenu());
  byId("executor")?.replaceChildren(...definitions.executors.map((name) => element("option", {}, name)));
  composer.render();
  onChange();
}

// Saved batches

function markCurrent() {
  const current = byId("batch-name").value.trim();
  for (const item of byId("saved").children) item.classList.toggle("current", item.dataset.name === current);
}

function renameForm(item, name) {
  const input = element("input", { class: "rename-to", value: name, "aria-label": `new name of ${name}`, size: 18 });
  const rename = async () => {
    const to = input.value.trim();
    if (!to || to === name) return loadSaved();
    try {
      await api(`${batchPath(name)}/rename`, { method: "POST", json: { to } });
      if (byId("batch-name").value.trim() === name) byId("batch-name").value = to;
      say("");
      await loadSaved();
    } catch (error) {
      say(`rename: ${error.message}`);
    }
  };
  input.addEventListener("keydown", (event) => event.key === "Enter" && rename());
  item.replaceChildren(input,
    element("button", { type: "button", class: "rename-ok", onclick: rename }, "OK"),
    element("button", { type: "button", class: "rename-cancel", onclick: loadSaved }, "Cancel"));
  input.focus();
}

async function remove(name) {
  if (!confirm(`Delete the saved batch "${name}"?`)) return;
  try {
    await api(batchPath(name), { method: "DELETE" });
    say("");
    await loadSaved();
  } catch (error) {
    say(`delete: ${error.message}`);
  }
}

async function openSaved(name) {
  try {
    load(await api(batchPath(name)), name);
    say("");
  } catch (error) {
    say(`${name}: ${error.message}`);
  }
}

function savedItem({ name, autoexec }) {
  const item = element("li", { class: "saved-batch", "data-name": name },
    element("button", { type: "button", class: "saved-open link", title: "open in the composer", onclick: () => openSaved(name) }, name),
    autoexec ? element("span", { class: "badge autoexec", title: "run on every newly converted study" }, "autoexec") : null);
  if (canEdit) {
    item.append(
      element("button", { type: "button", class: "saved-rename", title: `rename ${name}`, onclick: () => renameForm(item, name) }, "rename"),
      element("button", { type: "button", class: "saved-delete", title: `delete ${name}`, onclick: () => remove(name) }, "delete"));
  }
  return item;
}

async function loadSaved() {
  const { batches } = await api(`/projects/${project}/batches`);
  byId("saved").replaceChildren(...(batches.length ? batches.map(savedItem) : [element("li", { class: "hint" }, "none yet")]));
  markCurrent();
}

byId("save")?.addEventListener("click", async () => {
  const name = byId("batch-name").value.trim();
  if (!name) return say("give the batch a name to save it");
  try {
    await api(batchPath(name), { method: "PUT", json: spec() });
    await loadSaved();
    say(`saved as "${name}"`, { error: false });
  } catch (error) {
    say(`save: ${error.message}`);
  }
});
byId("batch-name").addEventListener("input", markCurrent);
byId("batch-level").addEventListener("change", (event) => composer.setLevel(event.target.value));
for (const key of [...RESOURCES, "network"]) byId(`res-${key}`).addEventListener("input", onChange);

// JSON

const dialog = byId("json-dialog");
const jsonText = byId("batch");
byId("json-toggle").addEventListener("click", () => {
  jsonText.value = JSON.stringify(spec(), null, 2);
  jsonText.readOnly = !canEdit;
  byId("json-error").textContent = "";
  dialog.showModal();
});
byId("json-close").addEventListener("click", () => dialog.close());
byId("json-apply")?.addEventListener("click", () => {
  let parsed;
  try {
    parsed = JSON.parse(jsonText.value);
  } catch (error) {
    byId("json-error").textContent = `not valid JSON: ${error.message}`;
    return;
  }
  try {
    load(parsed, null);
  } catch (error) {
    if (!(error instanceof ImportError)) throw error;
    byId("json-error").textContent = error.message;
    return;
  }
  dialog.close();
});
byId("json-download").addEventListener("click", () => {
  const batch = spec();
  const url = URL.createObjectURL(new Blob([JSON.stringify(batch, null, 2)], { type: "application/json" }));
  const link = element("a", { href: url, download: `${batch.name || "batch"}.json` });
  document.body.append(link);
  link.click();
  link.remove();
  URL.revokeObjectURL(url);
});

// Validate and launch: on the same studies

function studies() {
  if (document.querySelector('input[name="target"]:checked').value === "filter") return { filter: byId("launch-filter").value };
  return { studies: selection };
}

function resultCell(argument, target) {
  if (argument.error) return element("td", { class: "resolution error" }, argument.error);
  const elsewhere = argument.study && argument.study !== target.study ? ` (study ${argument.study})` : "";
  return element("td", { class: "resolution" }, element("code", {}, argument.path ?? ""), elsewhere);
}

function showTargets(targets) {
  const columns = [];
  for (const target of targets) {
    for (const job of target.jobs) {
      for (const argument of job.args) {
        const key = `${job.index}.${argument.name}`;
        if (!columns.some((c) => c.key === key)) columns.push({ key, label: `${job.index + 1}. ${job.job} ${argument.name}` });
      }
    }
  }
  const table = byId("validation-results");
  table.hidden = !targets.length;
  table.tHead.replaceChildren(element("tr", {}, element("th", {}, "Subject"), element("th", {}, "Study"), element("th", {}, ""),
    ...columns.map((c) => element("th", {}, c.label))));
  table.tBodies[0].replaceChildren(...targets.map((target) => {
    const cells = new Map(target.jobs.flatMap((job) => job.args.map((a) => [`${job.index}.${a.name}`, resultCell(a, target)])));
    return element("tr", { class: target.ok ? "target-ok" : "target-failing", "data-subject": target.subject, "data-study": target.study ?? "" },
      element("td", {}, target.subject), element("td", {}, target.study ?? "(subject)"),
      element("td", { class: target.ok ? "target-status ok" : "target-status error" }, target.ok ? "ok" : "failing"),
      ...columns.map((c) => cells.get(c.key) ?? element("td", {})));
  }));
}

byId("validate").addEventListener("click", async () => {
  const section = byId("validation");
  let answer;
  try {
    answer = await api(`/projects/${project}/batch-validations`, { method: "POST", json: { batch: spec(), ...studies() } });
  } catch (error) {
    section.hidden = false;
    section.classList.remove("stale");
    byId("validation-summary").textContent = `not validated: ${error.message}`;
    byId("validation-summary").className = "error";
    byId("problems").replaceChildren();
    composer.showProblems([]);
    showTargets([]);
    return;
  }
  section.hidden = false;
  section.classList.remove("stale");
  const { summary, problems } = answer;
  const summaryLine = byId("validation-summary");
  summaryLine.className = answer.valid ? "ok" : "error";
  summaryLine.textContent = problems.length
    ? `the batch cannot run: ${problems.length} problem(s)`
    : `${summary.targets} ${answer.level === "subject" ? "subject(s)" : "study(ies)"}: ${summary.ok} ok, ${summary.failing} failing`
      + (answer.level === "project" ? " (one run over them all; a study without its files is left out)" : "");
  byId("problems").replaceChildren(...problems.map((p) => element("li", { class: "error", "data-field": p.field }, p.message)));
  composer.showProblems(problems);
  showTargets(answer.targets);
});

byId("launch")?.addEventListener("click", async () => {
  const body = { batch: spec(), executor: byId("executor").value, ...studies() };
  const result = byId("launch-result");
  try {
    const answer = await api(`/projects/${project}/launches`, { method: "POST", json: body });
    say("");
    result.replaceChildren(`launch ${answer.launch}: ${answer.runs.length} run(s) on ${answer.executor} — `,
      element("a", { href: `/p/${project}/gridstats`, class: "gridstats-link" }, "watch them in gridstats"));
  } catch (error) {
    say(`launch: ${error.message}`);
  }
});

await loadDefinitions();
await loadSaved();
