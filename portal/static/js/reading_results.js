// A reading's results: one row per case, reader, repetition and stage with the answers and the
// visible time; the CSV of the same; for admins, the agreement between and within readers.
import { api, element, project } from "./api.js";
import { describe } from "./reading_form.js";

const root = document.getElementById("results-page");
const path = `/projects/${project}/readings/${root.dataset.reading}`;
const message = document.getElementById("message");
let found = { items: [], rows: [] };

function cell(value) {
  return element("td", {}, value === undefined || value === null ? "" : String(value));
}

function seconds(ms) {
  return (ms / 1000).toFixed(1);
}

function show() {
  const { items, rows } = found;
  const completedOnly = document.getElementById("only-completed").checked;
  const shown = completedOnly ? rows.filter((r) => r.completed) : rows;
  // Subject and study come only to admins: their columns show only when the rows have them.
  const identity = rows.some((r) => r.subject !== undefined && r.subject !== null);
  const head = ["case", ...(identity ? ["subject", "study"] : []), "reader", "phase", "stage", "repetition", "form version",
    ...items.map((i) => i.label || i.name), "active (s)", "completed", "saved"];
  document.querySelector("#results thead").replaceChildren(element("tr", {}, ...head.map((h) => element("th", {}, h))));
  document.querySelector("#results tbody").replaceChildren(...shown.map((row) => element("tr", { "data-case": row.case, "data-reader": row.reader },
    cell(row.case), ...(identity ? [cell(row.subject), cell(row.study)] : []), cell(row.reader), cell(row.phase), cell(row.stage),
    cell(row.repetition), cell(row.form_version),
    ...items.map((item) => element("td", { "data-item": item.name }, describe(item, row.answers?.[item.name]))),
    cell(seconds(row.active_ms ?? 0)), cell(row.completed ? "yes" : "no"), cell(row.saved_at))));
  document.getElementById("summary").textContent = `${shown.length} row${shown.length === 1 ? "" : "s"}`;
}

function statisticTable(title, columns, rows) {
  if (!rows.length) return null;
  return element("div", {}, element("h3", {}, title), element("table", { class: "grid" },
    element("thead", {}, element("tr", {}, ...columns.map(([label]) => element("th", {}, label)))),
    element("tbody", {}, ...rows.map((row) => element("tr", {}, ...columns.map(([, value]) => cell(value(row))))))));
}

function number(value) {
  return typeof value === "number" ? value.toFixed(3) : value ?? "—";
}

async function agreement() {
  const container = document.getElementById("agreement");
  if (!container) return;
  const { inter, intra, dice } = await api(`${path}/agreement`);
  const parts = [
    statisticTable("Between readers", [["item", (r) => r.item], ["statistic", (r) => r.statistic], ["value", (r) => number(r.value)],
      ["cases", (r) => r.cases], ["readers", (r) => (Array.isArray(r.readers) ? r.readers.join(", ") : r.readers)]], inter),
    statisticTable("Within a reader (repetitions)", [["item", (r) => r.item], ["reader", (r) => r.reader], ["statistic", (r) => r.statistic],
      ["value", (r) => number(r.value)], ["cases", (r) => r.cases]], intra),
    statisticTable("ROI overlap (Dice)", [["item", (r) => r.item], ["readers", (r) => r.readers.join(" – ")], ["mean Dice", (r) => number(r.value)],
      ["cases", (r) => r.cases]], dice),
  ].filter(Boolean);
  container.replaceChildren(...(parts.length ? parts : [element("p", { class: "hint" }, "nothing to compare yet: two readers (or two repetitions) of the same cases are needed")]));
}

document.getElementById("csv").href = `/api/v1${path}/results.csv`;
document.getElementById("only-completed").addEventListener("change", show);

async function start() {
  found = await api(`${path}/results`);
  show();
  await agreement();
}

start().then(() => (root.dataset.ready = "1")).catch((error) => (message.textContent = error.message));
