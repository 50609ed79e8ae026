// The form designer: a reading form built from the palette's thirteen kinds, each element edited
// in place, the form previewed live as a reader will see it (reading_form.js), its JSON shown for
// copying and pasting, and saved to the server, which validates it and keeps each changed
// document as a new version.
import { ApiError, api, element, project } from "./api.js";
import { CHOICE_KINDS, KINDS, answerable, flatItems, renderForm } from "./reading_form.js";

const root = document.getElementById("designer");
const name = root.dataset.name;
const itemsNode = document.getElementById("items");
const json = document.getElementById("form-json");
const message = document.getElementById("message");
const into = document.getElementById("add-into");
const path = `/projects/${project}/reading-forms/${encodeURIComponent(name)}`;

// The fields each kind takes beyond name, label, help and when (nifti_archive/readings/forms.py refuses others).
const RANGE_FIELDS = { rating: ["min", "max"], number: ["min", "max", "step"], slider: ["min", "max", "step"] };
const TAG_KINDS = [...CHOICE_KINDS, "checkbox"];
// Answers that are coordinates or masks: a condition cannot compare them.
const STRUCTURED_KINDS = ["markerpoint", "markerset", "roi"];
const DEFAULTS = {
  radio: { options: ["no", "yes"] },
  radiovert: { options: ["none", "left", "right", "both"] },
  combo: { options: ["one", "two", "three"] },
  rating: { min: 1, max: 5 },
  slider: { min: 0, max: 100, step: 1 },
  subform: { items: [] },
};

let form = { title: name, items: [] };
// What was answered in the preview: it survives the edits that redraw it.
let previewAnswers = {};

function say(text, { error = false } = {}) {
  message.textContent = text;
  message.classList.toggle("error", error);
}

function allItems() {
  return flatItems(form.items);
}

function freshName(kind) {
  const taken = new Set(allItems().map((i) => i.name));
  let k = 1;
  while (taken.has(`${kind}${k}`)) k++;
  return `${kind}${k}`;
}

// The list an element goes into: the form's own, or a subform's chosen in "add into".
function target() {
  const subform = allItems().find((i) => i.kind === "subform" && i.name === into.value);
  return subform ? subform.items : form.items;
}

// A separator has no name: it only arranges the others.
function add(kind) {
  const item = kind === "separator" ? { kind } : { kind, name: freshName(kind), ...structuredClone(DEFAULTS[kind] ?? {}) };
  target().push(item);
  render();
  if (item.name) itemsNode.querySelector(`[data-name="${CSS.escape(item.name)}"] input.designer-name`)?.select();
}

// Sets a property of an element, or removes it when empty, so that the document stays as small as a hand-written one.
function assign(item, key, value) {
  if (value === undefined || value === null || value === "" || value === false || (Array.isArray(value) && !value.length)) delete item[key];
  else item[key] = value;
  refresh();
}

function numberOrNull(text) {
  return text.trim() === "" ? null : Number(text);
}

// A `when` value typed as text, as the answer it compares with: checkboxes answer true/false, ranges numbers.
function typedValue(kind, text) {
  if (kind === "checkbox") return text === "true";
  if (RANGE_FIELDS[kind] && text !== "" && !Number.isNaN(Number(text))) return Number(text);
  return text;
}

function labelled(text, control) {
  return element("label", {}, `${text} `, control);
}

function editor(item, siblings) {
  const index = siblings.indexOf(item);
  const move = (delta) => {
    const other = index + delta;
    if (other < 0 || other >= siblings.length) return;
    [siblings[index], siblings[other]] = [siblings[other], siblings[index]];
    render();
  };
  const nameInput = item.kind === "separator" ? null : element("input", { class: "designer-name", value: item.name, "aria-label": "name", size: 14 });
  nameInput?.addEventListener("change", () => {
    const before = item.name;
    item.name = nameInput.value.trim();
    // Conditions follow the element they name.
    for (const other of allItems()) if (other.when?.item === before) other.when.item = item.name;
    render();
  });
  const text = (key, label, attributes = {}) => {
    const input = element("input", { value: item[key] ?? "", ...attributes, "data-key": key });
    input.addEventListener("input", () => assign(item, key, input.value));
    return labelled(label, input);
  };
  const number = (key) => {
    const input = element("input", { type: "number", step: "any", value: item[key] ?? "", "data-key": key, class: "designer-number" });
    input.addEventListener("input", () => assign(item, key, numberOrNull(input.value)));
    return labelled(key, input);
  };
  const flag = (key, label) => {
    const box = element("input", { type: "checkbox", checked: Boolean(item[key]), "data-key": key });
    box.addEventListener("change", () => assign(item, key, box.checked));
    return element("label", {}, box, ` ${label}`);
  };
  const parts = [];
  parts.push(text("label", item.kind === "separator" ? "Heading" : "Label", { size: 24 }));
  if (answerable(item)) parts.push(flag("required", "required"));
  if (CHOICE_KINDS.includes(item.kind)) {
    const options = element("textarea", { rows: Math.max(2, (item.options ?? []).length), "data-key": "options", spellcheck: "false" });
    options.value = (item.options ?? []).join("\n");
    options.addEventListener("input", () => assign(item, "options", options.value.split("\n").map((o) => o.trim()).filter(Boolean)));
    parts.push(labelled("Options (one a line)", options));
  }
  if (RANGE_FIELDS[item.kind]) parts.push(element("div", { class: "designer-row" }, ...RANGE_FIELDS[item.kind].map(number)));
  if (item.kind === "text") parts.push(flag("multiline", "multiline"));
  if (TAG_KINDS.includes(item.kind)) {
    // NORA's forms write true or 1 for the study's tags.
    const current = item.useastag === true || item.useastag === 1 ? "study" : item.useastag ?? "";
    const select = element("select", { "data-key": "useastag" },
      ...[["", "no"], ["study", "study tag"], ["subject", "subject tag"]].map(([value, label]) =>
        element("option", { value, selected: value === current }, label)));
    select.addEventListener("change", () => assign(item, "useastag", select.value));
    parts.push(labelled("Use as tag", select));
  }
  parts.push(whenEditor(item));
  if (item.kind !== "separator") parts.push(text("help", "Help", { size: 30 }));
  const node = element("li", { class: `designer-item kind-${item.kind}`, "data-name": item.name },
    element("div", { class: "designer-row designer-head" },
      element("span", { class: "designer-kind" }, item.kind), nameInput,
      element("button", { type: "button", title: "move up", "data-act": "up", onclick: () => move(-1) }, "↑"),
      element("button", { type: "button", title: "move down", "data-act": "down", onclick: () => move(1) }, "↓"),
      element("button", { type: "button", title: "remove", "data-act": "remove", onclick: () => {
        siblings.splice(index, 1);
        render();
      } }, "✕")),
    element("div", { class: "designer-fields" }, ...parts));
  if (item.kind === "subform") {
    node.append(element("ol", { class: "designer-items designer-subform" }, ...(item.items ?? (item.items = [])).map((child) => editor(child, item.items))));
  }
  return node;
}

// when: {"item": <another element>, "is": [values]}: shown only while that element's answer is one of the values.
function whenEditor(item) {
  const inside = new Set(flatItems(item.items ?? []));
  const others = allItems().filter((i) => i !== item && !inside.has(i) && answerable(i) && !STRUCTURED_KINDS.includes(i.kind));
  const select = element("select", { "data-key": "when-item" }, element("option", { value: "" }, "always shown"),
    ...others.map((o) => element("option", { value: o.name, selected: item.when?.item === o.name }, `when ${o.name}`)));
  const values = element("input", { "data-key": "when-is", placeholder: "is one of: a, b", size: 14, value: (item.when?.is ?? []).join(", ") });
  values.hidden = !item.when;
  const update = () => {
    const other = others.find((o) => o.name === select.value);
    values.hidden = !other;
    const typed = values.value.split(",").map((v) => v.trim()).filter((v) => v !== "").map((v) => typedValue(other?.kind, v));
    assign(item, "when", other ? { item: other.name, is: typed } : null);
  };
  select.addEventListener("change", update);
  values.addEventListener("input", update);
  return element("div", { class: "designer-row" }, select, values);
}

function render() {
  itemsNode.replaceChildren(...form.items.map((item) => editor(item, form.items)));
  const subforms = allItems().filter((i) => i.kind === "subform").map((i) => i.name);
  const chosen = into.value;
  into.replaceChildren(element("option", { value: "" }, "the form"), ...subforms.map((s) => element("option", { value: s }, `subform ${s}`)));
  into.value = subforms.includes(chosen) ? chosen : "";
  document.getElementById("form-title").value = form.title ?? "";
  refresh();
}

// The preview and the JSON follow every edit; the JSON not while someone is typing in it.
function refresh() {
  const shown = document.getElementById("preview-answers");
  const preview = renderForm(document.getElementById("preview"), form, { answers: previewAnswers, onChange: (answers) => {
    previewAnswers = answers;
    shown.textContent = JSON.stringify(answers);
  } });
  previewAnswers = preview.answers();
  shown.textContent = JSON.stringify(previewAnswers);
  if (document.activeElement !== json) json.value = JSON.stringify(form, null, 2);
}

function load(found) {
  form = found;
  form.items ??= [];
  render();
}

async function open(version) {
  try {
    const found = await api(`${path}${version ? `?version=${version}` : ""}`);
    load(found.form);
    const select = document.getElementById("version");
    select.replaceChildren(...found.versions.map((v) =>
      element("option", { value: v.version, selected: v.version === found.version }, `version ${v.version} (${v.saved_at})`)));
    say(`version ${found.version}${version ? " (an earlier version: saving makes it the newest)" : ""}`);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) throw error;
    load({ title: name, items: [] });
    say("a new form: add elements from the palette");
  }
}

document.getElementById("palette").replaceChildren(...KINDS.map((kind) =>
  element("button", { type: "button", "data-kind": kind, onclick: () => add(kind) }, kind)));
document.getElementById("form-title").addEventListener("input", (event) => assign(form, "title", event.target.value));
document.getElementById("json-apply").addEventListener("click", () => {
  try {
    const parsed = JSON.parse(json.value);
    if (!parsed || typeof parsed !== "object" || !Array.isArray(parsed.items)) throw new Error('a form is {"title": ..., "items": [...]}');
    json.blur();
    load(parsed);
    say("JSON applied (not saved yet)");
  } catch (error) {
    say(`not a form: ${error.message}`, { error: true });
  }
});
document.getElementById("save").addEventListener("click", async () => {
  try {
    const saved = await api(path, { method: "PUT", json: form });
    if (saved.changed) await open();
    say(saved.changed ? `saved as version ${saved.version}` : `no change: still version ${saved.version}`);
  } catch (error) {
    say(error.message, { error: true });
  }
});
document.getElementById("version").addEventListener("change", (event) => open(event.target.value).catch((e) => say(e.message, { error: true })));

open().then(() => (root.dataset.ready = "1")).catch((error) => say(error.message, { error: true }));
