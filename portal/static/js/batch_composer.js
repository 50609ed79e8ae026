// The batchtool's job cards: one card per job, one row per argument with an input fit for its
// type, a study selector (the subject's studies at subject level, an analysis at either), and the validation's problem
// next to the row it names.
import { element } from "./api.js";
import { LOCATED, newJob, syncScriptRows } from "./batch_spec.js";

const PLACEHOLDER = { FILE: "t1*/s*.nii.gz", OUT: "folder/file.nii.gz TAG(tag)", PATHOUT: "folder", STRING: "text" };
const SELECTORS = {
  subject: [["first", "first (earliest)"], ["last", "last (latest)"], ["tag", "tagged"], ["desc", "description"], ["analysis", "analysis"]],
  study: [["", "this study"], ["analysis", "analysis"]],
  project: [["", "each study"], ["analysis", "analysis"]],
};
const PATTERNED = new Set(["tag", "desc", "analysis"]);
const FIELD = /^jobs\[(\d+)\](?:\.args\.([fopsnbc][1-9]))?/;

export class Composer {
  constructor(list, { argTypes, canEdit, onChange }) {
    this.list = list;
    this.argTypes = argTypes;
    this.canEdit = canEdit;
    this.onChange = onChange;
    this.level = "study";
    this.jobs = [];
    this.problems = [];
  }

  add(definition) {
    this.jobs.push(newJob(definition, this.argTypes));
    this.changed({ structure: true });
  }

  load(jobs, level) {
    this.jobs = jobs;
    this.level = level;
    this.changed({ structure: true });
  }

  setLevel(level) {
    this.level = level;
    // The subject's selectors mean nothing at study level, and the other way round; an analysis stays.
    for (const row of this.jobs.flatMap((job) => job.rows)) {
      if (!row.study?.startsWith("analysis:")) row.study = "";
    }
    this.changed({ structure: true });
  }

  // Problems name fields by job index: once jobs move or go, they would point at the wrong card.
  changed({ structure = false } = {}) {
    if (structure) {
      this.problems = [];
      this.render();
    }
    this.onChange();
  }

  showProblems(problems) {
    this.problems = problems;
    this.render();
  }

  move(index, step) {
    const [job] = this.jobs.splice(index, 1);
    this.jobs.splice(index + step, 0, job);
    this.changed({ structure: true });
  }

  remove(index) {
    this.jobs.splice(index, 1);
    this.changed({ structure: true });
  }

  render() {
    this.list.replaceChildren(...this.jobs.map((job, index) => this.card(job, index)));
    for (const problem of this.problems) this.placeProblem(problem);
  }

  placeProblem({ field, message }) {
    const match = FIELD.exec(field);
    const card = match && this.list.children[Number(match[1])];
    if (!card) return;
    const row = match[2] && card.querySelector(`tr.arg-row[data-arg="${match[2]}"]`);
    const text = message.startsWith(`${field}: `) ? message.slice(field.length + 2) : message;
    const target = row ? row.querySelector(".arg-message") : card.querySelector(".job-message");
    (row ?? card).classList.add("problem");
    target.append(element("span", { class: "problem-text" }, text));
  }

  card(job, index) {
    const { definition } = job;
    const body = element("tbody", {}, ...this.rows(job));
    const actions = this.canEdit ? element("span", { class: "job-actions" },
      element("button", { type: "button", class: "job-up", title: "move up", disabled: index === 0, onclick: () => this.move(index, -1) }, "↑"),
      element("button", { type: "button", class: "job-down", title: "move down", disabled: index === this.jobs.length - 1,
        onclick: () => this.move(index, 1) }, "↓"),
      element("button", { type: "button", class: "job-remove", title: "remove the job", onclick: () => this.remove(index) }, "✕")) : null;
    const script = definition.script ? element("textarea", {
      class: "job-script", rows: 6, spellcheck: "false", "aria-label": `script of job ${index + 1}`, disabled: !this.canEdit,
      placeholder: 'e.g. cp "$f1" "$o1"',
      oninput: (event) => {
        job.script = event.target.value;
        if (syncScriptRows(job, this.argTypes)) body.replaceChildren(...this.rows(job));
        this.changed();
      },
    }, job.script) : null;
    return element("li", { class: "job-card", "data-job": job.job },
      element("div", { class: "job-head" },
        element("span", { class: "job-number" }, `${index + 1}.`),
        element("strong", { class: "job-name" }, job.job),
        element("span", { class: "job-title" }, definition.title),
        actions),
      element("p", { class: "hint" }, definition.help),
      script,
      element("p", { class: "job-message error" }),
      element("table", { class: "grid job-args" },
        element("thead", {}, element("tr", {},
          element("th", {}, "Argument"), element("th", {}, "Type"), element("th", {}, "Value"),
          element("th", {}, "Study"), element("th", {}, "Help"))),
        body));
  }

  rows(job) {
    if (!job.rows.length && job.script !== null) {
      return [element("tr", {}, element("td", { colspan: 5, class: "hint" }, "Use $f1, $o1 … in the script to add arguments."))];
    }
    return job.rows.map((row) => element("tr", { class: "arg-row", "data-arg": row.name },
      element("td", { class: "arg-name" }, row.name),
      element("td", { class: "arg-type" }, row.type),
      element("td", { class: "arg-input" }, ...this.inputs(job, row)),
      element("td", { class: "arg-study" }, ...(LOCATED.has(row.type) ? this.studySelector(row) : [])),
      element("td", { class: "arg-help" }, row.help, element("div", { class: "arg-message error" }))));
  }

  inputs(job, row) {
    const label = `${job.job} ${row.name}`;
    const update = (value) => {
      row.value = value;
      this.changed();
    };
    if (row.type === "LOGICAL") {
      return [element("input", { type: "checkbox", class: "arg-value", "aria-label": label, checked: row.value === true,
        disabled: !this.canEdit, onchange: (event) => update(event.target.checked) })];
    }
    if (row.type === "NUMERIC") {
      return [element("input", { type: "number", step: "any", class: "arg-value", "aria-label": label, value: row.value ?? "",
        disabled: !this.canEdit, oninput: (event) => update(Number.isNaN(event.target.valueAsNumber) ? null : event.target.valueAsNumber) })];
    }
    if (row.type === "OPTION") return this.optionInputs(job, row, label, update);
    return [element("input", { class: "arg-value", "aria-label": label, value: row.value, placeholder: PLACEHOLDER[row.type],
      size: 28, disabled: !this.canEdit, oninput: (event) => update(event.target.value) })];
  }

  // A predefined job fixes its options; a script's OPTION argument lists its own.
  optionInputs(job, row, label, update) {
    const select = element("select", { class: "arg-value", "aria-label": label, disabled: !this.canEdit,
      onchange: (event) => update(event.target.value) });
    const fill = () => {
      select.replaceChildren(...row.options.map((option) => element("option", { value: option }, option)));
      if (!row.options.includes(row.value)) row.value = row.options[0] ?? "";
      select.value = row.value;
    };
    fill();
    if (job.script === null) return [select];
    const options = element("input", { class: "arg-options", "aria-label": `${label} options`, value: row.options.join(", "),
      placeholder: "option, option …", disabled: !this.canEdit,
      oninput: (event) => {
        row.options = event.target.value.split(",").map((o) => o.trim()).filter(Boolean);
        fill();
        this.changed();
      } });
    return [options, select];
  }

  studySelector(row) {
    const selectors = SELECTORS[this.level];
    const study = row.study || (this.level === "subject" ? "first" : "");
    const [kind, ...rest] = study.split(":");
    const pattern = element("input", { class: "arg-study-pattern", "aria-label": `${row.name} study pattern`, size: 10,
      value: rest.join(":"), hidden: !PATTERNED.has(kind), disabled: !this.canEdit,
      placeholder: "name or pattern" });
    // A selector the composer does not offer here (an imported "same") stays visible, for validation to flag.
    const known = selectors.some(([value]) => value === kind);
    const offered = known ? selectors : [...selectors, [study, `${study} (not valid at ${this.level} level)`]];
    const select = element("select", { class: "arg-study-kind", "aria-label": `${row.name} study`, disabled: !this.canEdit },
      ...offered.map(([value, text]) => element("option", { value }, text)));
    select.value = known ? kind : study;
    const update = () => {
      const patterned = PATTERNED.has(select.value);
      pattern.hidden = !patterned;
      row.study = patterned ? `${select.value}:${pattern.value.trim()}` : select.value;
      this.changed();
    };
    select.addEventListener("change", update);
    pattern.addEventListener("input", update);
    return [select, pattern];
  }
}
