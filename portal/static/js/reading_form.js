// A reading form (the document the readings API keeps, see nifti_archive/readings/forms.py) as
// DOM: each item with its answer, `when` conditions applied as answers change. The reading page
// and the form designer's preview both use it.
//
// Answers are one flat object {name: value} over the whole document, subforms included. An item
// hidden by its `when` keeps its answer (showing it again brings the answer back): a draft keeps
// it on the server too, which drops the answers of hidden items when the case is completed.
//
// Markerpoint, markerset and roi items only show their value and buttons; what the buttons do
// needs the viewer, so they call onTool(item, action) and the page answers with setAnswer().
import { element } from "./api.js";

export const KINDS = [
  "radio", "radiovert", "rating", "combo", "checkbox", "separator", "text", "number", "slider",
  "markerpoint", "markerset", "roi", "subform",
];
// Kinds whose answer is one of `options`.
export const CHOICE_KINDS = ["radio", "radiovert", "combo"];
// Kinds that take no answer of their own.
const SILENT_KINDS = ["separator", "subform"];

let forms = 0;

export function answerable(item) {
  return !SILENT_KINDS.includes(item.kind);
}

// Every item of the document, subforms' items after their subform, in form order.
export function flatItems(items) {
  return items.flatMap((item) => [item, ...(item.kind === "subform" ? flatItems(item.items ?? []) : [])]);
}

// No answer. An empty marker set is an answer (the reader found nothing); a blank text is not.
export function isEmpty(value) {
  return value === undefined || value === null || (typeof value === "string" && !value.trim());
}

// Whether `value` is one of a `when` condition's values, compared as the server compares them:
// strictly, so that a checkbox's true is not a rating's 1.
function among(values, value) {
  return !isEmpty(value) && values.some((v) => v === value);
}

function rounded(point) {
  return point.map((c) => Math.round(c * 100) / 100);
}

export function describe(item, value) {
  if (isEmpty(value)) return "";
  if (item.kind === "markerpoint") return `(${rounded(value).join(", ")}) mm`;
  if (item.kind === "markerset") return `${value.length} point${value.length === 1 ? "" : "s"}`;
  if (item.kind === "roi") return `${roiVoxels(value)} voxels`;
  return String(value);
}

export function roiVoxels(roi) {
  let count = 0;
  for (let k = 1; k < (roi?.runs?.length ?? 0); k += 2) count += roi.runs[k];
  return count;
}

// renderForm(container, document, {answers, onChange, onTool, disabled}) -> a controller.
// onChange(answers) after each change a user makes; onTool(item, action) for the viewer's items
// (markerpoint: "set", "clear", "show"; markerset: "add", "remove:<k>", "none", "show:<k>";
// roi: "draw", "keep", "clear").
export function renderForm(container, document_, { answers = {}, onChange = () => {}, onTool = () => {}, disabled = false } = {}) {
  const prefix = `form${++forms}`;
  const state = { ...answers };
  const items = flatItems(document_.items ?? []);
  const nodes = new Map();
  const refreshers = new Map();
  const drawing = new Set();
  // A subform's items show only while their subform shows.
  const answerableNames = new Set(items.filter(answerable).map((i) => i.name));
  const parentOf = new Map(items.filter((i) => i.kind === "subform").flatMap((i) => (i.items ?? []).map((child) => [child.name, i.name])));

  const changed = () => {
    applyConditions();
    onChange(controller.answers());
  };
  const set = (name, value) => {
    if (value === undefined || value === null || value === "") delete state[name];
    else state[name] = value;
    refreshers.get(name)?.();
    changed();
  };

  function applyConditions() {
    // Items in form order: a condition on an item that is itself hidden counts as unmet.
    const shown = new Set();
    for (const item of items) {
      const when = item.when;
      const parent = parentOf.get(item.name);
      const visible = (!parent || shown.has(parent)) &&
        (!when || (shown.has(when.item) && among(when.is ?? [], state[when.item])));
      if (visible) shown.add(item.name);
      const node = nodes.get(item.name);
      if (node) node.hidden = !visible;
    }
    controller.shown = shown;
  }

  function field(item, ...body) {
    const label = item.label || item.name;
    const title = element("span", { class: "form-label" }, label, item.required ? element("span", { class: "form-required", title: "required" }, " *") : null);
    const node = element("div", { class: `form-item form-${item.kind}`, "data-item": item.name }, title, ...body,
      item.help ? element("div", { class: "hint form-help" }, item.help) : null);
    nodes.set(item.name, node);
    return node;
  }

  function choices(item, values, { vertical = false } = {}) {
    const group = `${prefix}-${item.name}`;
    const inputs = values.map((value) => element("input", {
      type: "radio", name: group, value: String(value), disabled,
      onchange: () => set(item.name, value),
    }));
    refreshers.set(item.name, () => inputs.forEach((input, k) => (input.checked = among([values[k]], state[item.name]))));
    const clear = element("button", { type: "button", class: "form-clear", title: "no answer", disabled, onclick: () => set(item.name, null) }, "×");
    return field(item, element("div", { class: vertical ? "form-choices vertical" : "form-choices", role: "radiogroup" },
      ...inputs.map((input, k) => element("label", {}, input, ` ${values[k]}`)), item.required ? null : clear));
  }

  function range(item) {
    // A rating is the whole numbers from min to max, 1 to 5 unless the form says otherwise.
    const min = Math.round(Number(item.min ?? 1));
    const max = Math.round(Number(item.max ?? 5));
    const values = [];
    for (let v = min; v <= max && values.length < 100; v++) values.push(v);
    return values;
  }

  function viewerValue(item) {
    const value = element("span", { class: "form-value" });
    refreshers.set(item.name, () => {
      value.textContent = describe(item, state[item.name]) || "not set";
      list?.replaceChildren(...(item.kind === "markerset" ? (state[item.name] ?? []) : []).map((point, k) =>
        element("li", {},
          element("button", { type: "button", class: "link", title: "move the crosshair here", onclick: () => onTool(item, `show:${k}`) },
            `${k + 1}: (${rounded(point).join(", ")})`),
          element("button", { type: "button", title: "remove this point", disabled, onclick: () => onTool(item, `remove:${k}`) }, "×"))));
    });
    const list = item.kind === "markerset" ? element("ol", { class: "form-points" }) : null;
    return { value, list };
  }

  function tool(item, action, text, title) {
    return element("button", { type: "button", "data-action": action, title, disabled, onclick: () => onTool(item, action) }, text);
  }

  function build(item) {
    switch (item.kind) {
      case "radio":
        return choices(item, item.options ?? []);
      case "radiovert":
        return choices(item, item.options ?? [], { vertical: true });
      case "rating":
        return choices(item, range(item));
      case "combo": {
        const select = element("select", { name: `${prefix}-${item.name}`, disabled, onchange: () => set(item.name, select.value || null) },
          element("option", { value: "" }, "—"), ...(item.options ?? []).map((o) => element("option", { value: o }, o)));
        refreshers.set(item.name, () => (select.value = state[item.name] ?? ""));
        return field(item, select);
      }
      case "checkbox": {
        const box = element("input", { type: "checkbox", name: `${prefix}-${item.name}`, disabled, onchange: () => set(item.name, box.checked) });
        refreshers.set(item.name, () => (box.checked = state[item.name] === true));
        return field(item, box);
      }
      case "separator":
        return element("div", { class: "form-item form-separator" }, element("hr"), item.label ? element("strong", {}, item.label) : null);
      case "text": {
        const input = item.multiline
          ? element("textarea", { name: `${prefix}-${item.name}`, rows: 3, disabled })
          : element("input", { name: `${prefix}-${item.name}`, disabled });
        input.addEventListener("input", () => set(item.name, input.value));
        // Not while the reader types there: the field already says what they typed.
        refreshers.set(item.name, () => document.activeElement !== input && (input.value = state[item.name] ?? ""));
        return field(item, input);
      }
      case "number":
      case "slider": {
        const slider = item.kind === "slider";
        const input = element("input", {
          type: slider ? "range" : "number", name: `${prefix}-${item.name}`, disabled,
          min: item.min ?? (slider ? 0 : undefined), max: item.max ?? (slider ? 100 : undefined), step: item.step ?? (slider ? 1 : "any"),
        });
        const shown = element("output", {});
        input.addEventListener("input", () => set(item.name, input.value === "" ? null : Number(input.value)));
        refreshers.set(item.name, () => {
          const value = state[item.name];
          // Not while the reader types there: "-" or "1e" are on their way to a number.
          if (document.activeElement !== input) input.value = value ?? "";
          // A range input always shows a position: say when that position is not an answer yet.
          shown.textContent = slider ? (isEmpty(value) ? "not set" : String(value)) : "";
        });
        return field(item, input, slider ? shown : null);
      }
      case "markerpoint": {
        const { value } = viewerValue(item);
        return field(item, element("div", { class: "form-tools" }, value,
          tool(item, "set", "set from crosshair", "the crosshair's position in the image (world mm)"),
          tool(item, "show", "show", "move the crosshair to this point"),
          tool(item, "clear", "clear")));
      }
      case "markerset": {
        const { value, list } = viewerValue(item);
        return field(item, element("div", { class: "form-tools" }, value,
          tool(item, "add", "add crosshair", "add the crosshair's position (world mm)"),
          tool(item, "none", "none found", "answer with no points")), list);
      }
      case "roi": {
        const { value } = viewerValue(item);
        const toggle = tool(item, "draw", "draw", "draw on the first viewport's image");
        refreshers.set(`${item.name}:draw`, () => {
          toggle.textContent = drawing.has(item.name) ? "drawing: on" : "draw";
          toggle.classList.toggle("on", drawing.has(item.name));
        });
        return field(item, element("div", { class: "form-tools" }, value, toggle,
          tool(item, "keep", "keep", "keep the drawing as this answer"), tool(item, "clear", "clear")));
      }
      case "subform": {
        const node = element("fieldset", { class: "form-item form-subform", "data-item": item.name },
          element("legend", {}, item.label || item.name), ...(item.items ?? []).map(build));
        nodes.set(item.name, node);
        return node;
      }
      default:
        return field(item, element("span", { class: "error" }, `unknown kind ${item.kind}`));
    }
  }

  const controller = {
    shown: new Set(),
    // Every answer, those of hidden items included.
    answers() {
      return Object.fromEntries(Object.entries(state).filter(([name]) => answerableNames.has(name)));
    },
    value(name) {
      return state[name];
    },
    setAnswer(name, value) {
      set(name, value);
    },
    // The page's roi drawing toggle: which item draws now (or none), shown on its button.
    setDrawing(name) {
      drawing.clear();
      if (name) drawing.add(name);
      for (const item of items) if (item.kind === "roi") refreshers.get(`${item.name}:draw`)?.();
    },
    // Required items shown and not answered, by label: the server checks them too, this only says so early.
    missing() {
      return items.filter((i) => i.required && answerable(i) && controller.shown.has(i.name) && isEmpty(state[i.name])).map((i) => i.label || i.name);
    },
  };

  const title = document_.title ? element("h3", { class: "form-title" }, document_.title) : null;
  container.replaceChildren(...[title, ...(document_.items ?? []).map((item) => build(item))].filter(Boolean));
  for (const refresh of refreshers.values()) refresh();
  applyConditions();
  return controller;
}
