// A reading's configuration (admins): the cases by the studies table's filter bars, training
// cases, the form, viewer preset, blinding, order, repetitions, stages and readers. Saving creates
// or replaces the configuration; starting opens the reading to its readers (the server refuses,
// and says why, when a filter selects no study).
import { api, element, project } from "./api.js";

const root = document.getElementById("configuration");
const bars = root.dataset.bars.split(" ");
const message = document.getElementById("message");
const BLINDING = ["identity", "dates", "description", "other_readers", "own_earlier"];
const FLAGS = ["allow_restart_training", "allow_restart_serious"];
let readingId = Number(root.dataset.reading) || null;

const byId = (id) => document.getElementById(id);

function say(text, { error = false } = {}) {
  message.textContent = text;
  message.classList.toggle("error", error);
}

function barInputs(container, prefix) {
  container.replaceChildren(...bars.map((bar) => element("label", {}, `${bar.replace("_", " ")} `,
    element("input", { id: `${prefix}-${bar}`, "data-bar": bar, placeholder: bar === "files" ? "*.nii* & STAG:reading" : "filter" }))));
}

// Bars left empty select everything: only the filled ones are sent.
function filters(prefix) {
  return Object.fromEntries(bars.map((bar) => [bar, byId(`${prefix}-${bar}`).value.trim()]).filter(([, text]) => text));
}

function setFilters(prefix, values) {
  for (const bar of bars) byId(`${prefix}-${bar}`).value = values?.[bar] ?? "";
}

function stageRow(stage = { name: "", overlay: null }) {
  const row = element("tr", {},
    element("td", {}, element("input", { class: "stage-name", value: stage.name, "aria-label": "stage name" })),
    element("td", {}, element("input", { class: "stage-overlay", value: stage.overlay ?? "", placeholder: "(no overlay)", "aria-label": "overlay pattern" })),
    element("td", {}, element("button", { type: "button", title: "remove the stage", onclick: () => row.remove() }, "✕")));
  byId("stages").append(row);
}

function configuration() {
  return {
    name: byId("name").value.trim(),
    form: byId("form").value,
    cases: filters("cases"),
    training_cases: byId("training-on").checked ? filters("training") : null,
    preset: byId("preset").value || null,
    mode: byId("mode").value,
    blinding: Object.fromEntries(BLINDING.map((key) => [key, byId(`blind-${key}`).checked])),
    order: byId("order").value,
    repetitions: Number(byId("repetitions").value),
    stages: [...byId("stages").rows].map((row) => ({
      name: row.querySelector(".stage-name").value.trim(),
      overlay: row.querySelector(".stage-overlay").value.trim() || null,
    })),
    instructions: byId("instructions").value,
    instructions_url: byId("instructions_url").value.trim(),
    ...Object.fromEntries(FLAGS.map((key) => [key, byId(key).checked])),
    readers: byId("readers").value.split(",").map((r) => r.trim()).filter(Boolean),
  };
}

function show(config) {
  byId("name").value = config.name;
  if (![...byId("form").options].some((o) => o.value === config.form)) byId("form").append(element("option", {}, config.form));
  byId("form").value = config.form;
  setFilters("cases", config.cases);
  byId("training-on").checked = Boolean(config.training_cases);
  setFilters("training", config.training_cases);
  if (config.preset && ![...byId("preset").options].some((o) => o.value === config.preset)) byId("preset").append(element("option", {}, config.preset));
  byId("preset").value = config.preset ?? "";
  byId("mode").value = config.mode;
  for (const key of BLINDING) byId(`blind-${key}`).checked = Boolean(config.blinding?.[key]);
  byId("order").value = config.order;
  byId("repetitions").value = config.repetitions;
  byId("stages").replaceChildren();
  for (const stage of config.stages) stageRow(stage);
  byId("instructions").value = config.instructions ?? "";
  byId("instructions_url").value = config.instructions_url ?? "";
  for (const key of FLAGS) byId(key).checked = Boolean(config[key]);
  byId("readers").value = (config.readers ?? []).join(", ");
}

// cases: the number of cases chosen per phase (the configuration's answer calls them cases_chosen).
function showState({ state, cases }) {
  const counts = cases && state !== "draft" ? `: ${cases.serious} case(s)${cases.training ? `, ${cases.training} for training` : ""}` : "";
  byId("state").textContent = state ? `${state}${counts}` : "";
  const results = byId("results-link");
  results.hidden = !readingId;
  if (readingId) results.href = `/p/${encodeURIComponent(project)}/readings/${readingId}/results`;
}

function formLink() {
  byId("form-link").href = `/p/${encodeURIComponent(project)}/readings/forms/${encodeURIComponent(byId("form").value || "new-form")}`;
}

async function save() {
  const config = configuration();
  if (readingId) {
    await api(`/projects/${project}/readings/${readingId}`, { method: "PUT", json: config });
  } else {
    ({ id: readingId } = await api(`/projects/${project}/readings`, { method: "POST", json: config }));
    root.dataset.reading = readingId;
    history.replaceState(null, "", `/p/${encodeURIComponent(project)}/readings/${readingId}/configure`);
  }
  await reload();
}

async function reload() {
  const found = await api(`/projects/${project}/readings/${readingId}`);
  show(found);
  showState({ state: found.state, cases: found.cases_chosen });
}

byId("add-stage").addEventListener("click", () => stageRow());
byId("form").addEventListener("change", formLink);
byId("save").addEventListener("click", async () => {
  try {
    await save();
    say(`saved (reading ${readingId})`);
  } catch (error) {
    say(error.message, { error: true });
  }
});
byId("start").addEventListener("click", async () => {
  try {
    await save();
    const started = await api(`/projects/${project}/readings/${readingId}/start`, { method: "POST" });
    showState(started);
    say(`started: ${started.cases.serious} case(s)${started.cases.training ? `, ${started.cases.training} for training` : ""}`);
  } catch (error) {
    say(error.message, { error: true });
  }
});

async function start() {
  barInputs(byId("cases"), "cases");
  barInputs(byId("training"), "training");
  const [{ forms }, { presets }] = await Promise.all([api(`/projects/${project}/reading-forms`), api(`/projects/${project}/presets`)]);
  byId("form").replaceChildren(...forms.map((f) => element("option", { value: f.name }, f.title ? `${f.name} (${f.title})` : f.name)));
  byId("preset").append(...presets.map((p) => element("option", { value: p.name }, p.name)));
  if (readingId) await reload();
  else stageRow({ name: "reading", overlay: null });
  formLink();
  if (!forms.length) say("no form yet: design one first (open the form designer)");
}

start().then(() => (root.dataset.ready = "1")).catch((error) => say(error.message, { error: true }));
