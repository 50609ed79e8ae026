// The reading page: one slot (a case, in one stage and repetition) at a time, its images in
// NiiVue beside the reading form. Answers are saved while the reader works (so a closed tab loses
// nothing) and for good with "Save and next"; the time counted is the time the page was visible.
//
// Blinding: everything about the case comes from the slot the API answers, which leaves out
// what the reading hides; the page itself knows only the reading's id.
import { api, element, project } from "./api.js";
import { answerable, describe, flatItems, renderForm } from "./reading_form.js";

const niivue = import("/vendor/niivue.js");
const AUTOSAVE_MS = 400;
const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

const root = document.getElementById("reading");
const path = `/projects/${project}/readings/${root.dataset.reading}`;
const byId = (id) => document.getElementById(id);
const grid = byId("viewports");

let Niivue = null;
const viewports = [];
let active = null;
let slot = null;
let form = null;
// Slot loads in order: a quick click through the cases must not leave an earlier case's images.
let loads = 0;
let images = Promise.resolve();
// Saves in order: an autosave (complete=false) must never reach the server after the "Save and next" that follows it.
let saving = Promise.resolve();
let autosave = null;
// Visible time: what the slot had, plus the time since the page last became visible.
const timing = { ms: 0, since: null };
// The roi item whose answer is in the drawing layer of the first viewport, and whether its pen is on.
const drawing = { item: null, on: false };

function say(text, { error = false } = {}) {
  byId("status").textContent = text;
  byId("status").classList.toggle("error", error);
}

function notice(text) {
  byId("notice").textContent = text;
  byId("notice").hidden = !text;
}

function fail(error) {
  say(error.message ?? String(error), { error: true });
}

function activeMs() {
  return Math.round(timing.ms + (timing.since === null ? 0 : performance.now() - timing.since));
}

function startTiming(ms) {
  timing.ms = ms ?? 0;
  timing.since = document.visibilityState === "visible" ? performance.now() : null;
}

// ---- the viewer ---------------------------------------------------------------------------

function sliceType() {
  return Number(byId("slice-type").value);
}

function setLayout(layout) {
  const [rows, columns] = (/^\d+x\d+$/.test(layout ?? "") ? layout : "1x1").split("x").map(Number);
  grid.className = `viewports layout-${rows}x${columns}`;
  while (viewports.length < rows * columns) {
    const canvas = element("canvas");
    const node = element("div", { class: "viewport", "data-index": viewports.length }, canvas);
    const nv = new Niivue({
      backColor: [0, 0, 0, 1], crosshairColor: [1, 0.2, 0.2, 1], show3Dcrosshair: true,
      dragAndDropEnabled: false, isResizeCanvas: true, logLevel: "error",
    });
    const viewport = { node, nv, ready: nv.attachToCanvas(canvas) };
    node.addEventListener("mousedown", () => activate(viewport));
    viewports.push(viewport);
    grid.append(node);
  }
  viewports.forEach((v, k) => (v.node.hidden = k >= rows * columns));
  if (!active || active.node.hidden) activate(viewports[0]);
  for (const v of viewports) v.nv.resizeListener?.();
}

function activate(viewport) {
  active = viewport;
  for (const v of viewports) v.node.classList.toggle("active", v === viewport);
}

// NiiVue picks the reader by the name's extension; the slot's file URLs have none.
function volumeName(layer, k) {
  return /\.nii(\.gz)?$/i.test(layer.name ?? "") ? layer.name : `image-${k}.nii`;
}

async function showImages(viewer, load) {
  stopDrawing();
  setLayout(viewer.layout);
  await Promise.all(viewports.map((v) => v.ready));
  for (const v of viewports) {
    if (v.nv.drawBitmap) v.nv.closeDrawing();
    for (const volume of [...v.nv.volumes]) v.nv.removeVolume(volume);
  }
  // Each viewport's base first, then its overlays over it, in the slot's order.
  const layers = viewer.layers.map((layer, k) => ({ ...layer, k })).sort((a, b) => Number(a.overlay) - Number(b.overlay));
  for (const layer of layers) {
    if (load !== loads) return;
    const viewport = viewports[layer.viewport ?? 0];
    if (!viewport || viewport.node.hidden) continue;
    const options = {
      url: layer.url, name: volumeName(layer, layer.k),
      colormap: layer.colormap ?? (layer.overlay ? "red" : "gray"), opacity: layer.overlay ? 0.5 : 1,
    };
    if (layer.window) Object.assign(options, { cal_min: layer.window[0], cal_max: layer.window[1] });
    await viewport.nv.addVolumeFromUrl(options);
    viewport.nv.setSliceType(sliceType());
  }
}

function withImage() {
  const viewport = [active, ...viewports].find((v) => v && !v.node.hidden && v.nv.volumes.length);
  if (!viewport) throw new Error("no image shown yet");
  return viewport;
}

function crosshairMM() {
  const { nv } = withImage();
  // Scanner millimetres (the NIfTI affine), as the viewer's markers: not NiiVue's straightened display space.
  return Array.from(nv.frac2mm(nv.scene.crosshairPos, 0, true)).slice(0, 3).map((c) => Math.round(c * 100) / 100);
}

function showPoint(point) {
  if (!point) return;
  for (const v of viewports.filter((x) => !x.node.hidden && x.nv.volumes.length)) {
    v.nv.scene.crosshairPos = v.nv.mm2frac(point, 0, true);
    v.nv.drawScene();
  }
}

// ---- roi answers: NiiVue's drawing bitmap of the first viewport's base image ----------------

function roiViewport() {
  const viewport = viewports[0];
  if (!viewport?.nv.volumes.length) throw new Error("no image shown yet");
  return viewport;
}

function dims(nv) {
  return Array.from(nv.back.dims.slice(1, 4));
}

// Non-zero voxels as [start, length, start, length, ...] in the bitmap's order.
function encode(bitmap) {
  const runs = [];
  for (let k = 0; k < bitmap.length; k++) {
    if (!bitmap[k]) continue;
    const start = k;
    while (k < bitmap.length && bitmap[k]) k++;
    runs.push(start, k - start);
  }
  return runs;
}

function startDrawing(item) {
  const { nv } = roiViewport();
  if (drawing.item !== item.name) {
    // Another item's drawing (or none) is in the layer: this item's kept answer replaces it.
    nv.createEmptyDrawing();
    const kept = form.value(item.name);
    if (kept?.runs && kept.dims?.every((d, k) => d === dims(nv)[k])) {
      for (let k = 0; k + 1 < kept.runs.length; k += 2) nv.drawBitmap.fill(1, kept.runs[k], kept.runs[k] + kept.runs[k + 1]);
    }
    nv.refreshDrawing(true);
    drawing.item = item.name;
  }
  nv.setPenValue(1, false);
  nv.setDrawingEnabled(true);
  drawing.on = true;
  form.setDrawing(item.name);
  say(`drawing ${item.label || item.name}: left button paints; "keep" takes the drawing as the answer`);
}

function stopDrawing() {
  for (const v of viewports) if (v.nv.opts.drawingEnabled) v.nv.setDrawingEnabled(false);
  drawing.on = false;
  form?.setDrawing(null);
}

function keepDrawing(name) {
  const { nv } = roiViewport();
  if (drawing.item !== name || !nv.drawBitmap) throw new Error("draw first, then keep");
  const runs = encode(nv.drawBitmap);
  form.setAnswer(name, runs.length ? { dims: dims(nv), runs } : null);
}

// ---- the form's viewer items ----------------------------------------------------------------

function onTool(item, action) {
  try {
    const value = form.value(item.name);
    const [verb, index] = action.split(":");
    if (item.kind === "markerpoint") {
      if (verb === "set") form.setAnswer(item.name, crosshairMM());
      else if (verb === "show") showPoint(value);
      else if (verb === "clear") form.setAnswer(item.name, null);
    } else if (item.kind === "markerset") {
      if (verb === "add") form.setAnswer(item.name, [...(value ?? []), crosshairMM()]);
      else if (verb === "show") showPoint(value?.[Number(index)]);
      else if (verb === "remove") form.setAnswer(item.name, (value ?? []).filter((_, k) => k !== Number(index)));
      else if (verb === "none") form.setAnswer(item.name, []);
    } else if (item.kind === "roi") {
      if (verb === "draw") {
        if (drawing.on && drawing.item === item.name) stopDrawing();
        else startDrawing(item);
      } else if (verb === "keep") {
        keepDrawing(item.name);
      } else if (verb === "clear") {
        form.setAnswer(item.name, null);
        if (drawing.item === item.name) {
          roiViewport().nv.createEmptyDrawing();
          roiViewport().nv.refreshDrawing(true);
        }
      }
    }
  } catch (error) {
    fail(error);
  }
}

// ---- saving --------------------------------------------------------------------------------

function payload(complete) {
  return { answers: form.answers(), active_ms: activeMs(), complete };
}

function slotUrl(of) {
  return `${path}/slots/${of.phase}/${of.index}`;
}

function save(complete) {
  clearTimeout(autosave);
  autosave = null;
  const of = slot;
  const json = payload(complete);
  saving = saving.catch(() => {}).then(() => api(slotUrl(of), { method: "PUT", json }));
  return saving;
}

function changed() {
  clearTimeout(autosave);
  autosave = setTimeout(() => save(false).then(() => say("saved")).catch(fail), AUTOSAVE_MS);
}

// The page going away or out of sight: what is unsaved, and the time, go with a request that outlives the page.
function saveOnLeaving() {
  if (!slot || !form) return;
  timing.ms = activeMs();
  timing.since = null;
  clearTimeout(autosave);
  autosave = null;
  fetch(`/api/v1${slotUrl(slot)}`, {
    method: "PUT", keepalive: true, credentials: "same-origin", body: JSON.stringify(payload(false)),
    headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json", Accept: "application/json" },
  }).catch(() => {});
}

// ---- slots ---------------------------------------------------------------------------------

function showStudy(study) {
  const parts = [["subject", "subject"], ["study", "study"], ["date", "date"], ["description", ""]]
    .filter(([key]) => study?.[key]).map(([key, label]) => (label ? `${label} ${study[key]}` : study[key]));
  byId("study-info").textContent = parts.join(" · ");
}

// Answers the reading lets the reader see beside their own: other readers' (others) and their own
// in earlier stages and repetitions of the case (earlier).
function showAnswers(found) {
  const items = flatItems(found.form.items ?? []).filter(answerable);
  const table = (title, rows) => (rows?.length ? [element("h3", {}, title), element("table", { class: "grid" },
    element("thead", {}, element("tr", {}, element("th", {}), ...items.map((i) => element("th", {}, i.label || i.name)))),
    element("tbody", {}, ...rows.map(([who, answers]) => element("tr", {}, element("td", {}, who),
      ...items.map((i) => element("td", {}, describe(i, answers?.[i.name])))))))] : []);
  byId("others").replaceChildren(
    ...table("Other readers", found.others?.map((o) => [o.reader, o.answers])),
    ...table("Your earlier answers", found.earlier?.map((e) => [`stage ${e.stage + 1}, repetition ${e.repetition + 1}`, e.answers])));
}

async function openSlot(phase, index) {
  const load = ++loads;
  const found = await api(`${path}/slots/${phase}/${index}`);
  if (load !== loads) return;
  stopDrawing();
  drawing.item = null;
  slot = found;
  startTiming(found.active_ms);
  byId("finished").hidden = true;
  byId("reading-body").hidden = false;
  byId("counter").textContent = `${found.index + 1} / ${found.total} (${found.phase})`;
  byId("stage").textContent = found.stage?.name ? `stage: ${found.stage.name}` : "";
  byId("case-label").textContent = `${found.label}${found.repetition ? `, repetition ${found.repetition + 1}` : ""}${found.completed ? " ✓" : ""}`;
  showStudy(found.study);
  form = renderForm(byId("form"), found.form, { answers: found.answers, onChange: changed, onTool });
  showAnswers(found);
  byId("previous").disabled = found.index === 0;
  byId("next").disabled = found.index + 1 >= found.total;
  history.replaceState(null, "", `?phase=${found.phase}&n=${found.index}`);
  root.dataset.slot = `${found.phase}/${found.index}`;
  say(found.completed ? "completed earlier: changes are saved as you make them" : "");
  images = images.catch(() => {}).then(() => showImages(found.viewer, load));
  await images;
  if (load === loads) root.dataset.ready = "1";
}

function showFinished(progress) {
  slot = null;
  form = null;
  stopDrawing();
  byId("reading-body").hidden = true;
  byId("finished").hidden = false;
  byId("counter").textContent = "finished";
  for (const id of ["stage", "case-label", "study-info"]) byId(id).textContent = "";
  const parts = [progress.training ? `training ${progress.training.done} / ${progress.training.total}` : null,
    `serious ${progress.serious.done} / ${progress.serious.total}`];
  byId("final-progress").textContent = `All cases are read: ${parts.filter(Boolean).join(", ")}.`;
  byId("review").hidden = !progress.serious.total;
  root.dataset.slot = "done";
  root.dataset.ready = "1";
}

async function progress() {
  const found = await api(`${path}/progress`);
  byId("reading-name").textContent = found.name;
  document.title = `${found.name} — reading`;
  byId("instructions").textContent = found.instructions ?? "";
  byId("instructions").hidden = !found.instructions;
  const link = byId("instructions-link");
  link.hidden = !found.instructions_url;
  if (found.instructions_url) link.href = found.instructions_url;
  return found;
}

// Where the reader stands: the first open slot of the phase, or the end.
async function resume({ after } = {}) {
  const found = await progress();
  if (after === "training" && found.phase === "serious") notice("Training is finished: the serious reading starts now.");
  else notice("");
  if (found.phase === "done") showFinished(found);
  else await openSlot(found.phase, found.position);
}

async function step(delta) {
  if (!slot) return;
  const target = slot.index + delta;
  if (target < 0 || target >= slot.total) return;
  // Saved even without a change: the time spent on this case counts.
  await save(false);
  await openSlot(slot.phase, target);
}

async function saveAndNext() {
  // A drawing still in progress is what the reader means to answer.
  if (drawing.on) keepDrawing(drawing.item);
  const missing = form.missing();
  if (missing.length) throw new Error(`please answer: ${missing.join(", ")}`);
  const { phase } = slot;
  const saved = await save(true);
  if (saved.next !== null && saved.next !== undefined) await openSlot(phase, saved.next);
  else await resume({ after: phase });
}

byId("previous").addEventListener("click", () => step(-1).catch(fail));
byId("next").addEventListener("click", () => step(1).catch(fail));
byId("save-next").addEventListener("click", (event) => {
  // One save at a time: a second click would save the next case's empty form.
  event.target.disabled = true;
  saveAndNext().catch(fail).finally(() => (event.target.disabled = false));
});
byId("review").addEventListener("click", () => progress().then((p) => openSlot("serious", p.serious.total - 1)).catch(fail));
byId("slice-type").addEventListener("change", () => {
  for (const v of viewports) if (v.nv.volumes.length) v.nv.setSliceType(sliceType());
});
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") timing.since = performance.now();
  else saveOnLeaving();
});
window.addEventListener("pagehide", () => {
  saveOnLeaving();
  // The volumes' GPU memory goes back now, not at garbage collection (as in the viewer).
  for (const v of viewports) v.nv.gl?.getExtension("WEBGL_lose_context")?.loseContext();
});
window.northancReading = { viewports, get form() { return form; }, get slot() { return slot; }, activeMs };

async function start() {
  ({ Niivue } = await niivue);
  const query = new URLSearchParams(location.search);
  if (query.has("phase") && query.has("n")) {
    await progress();
    await openSlot(query.get("phase"), Number(query.get("n")));
  } else {
    await resume();
  }
}

start().catch((error) => {
  fail(error);
  root.dataset.ready = "error";
});
