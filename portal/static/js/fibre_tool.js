// NORA's Fibre viewer: the streamlines of a tractogram (TCK, TRK) opened over a volume, drawn by
// NiiVue in 3D and coloured by direction; select or delete them with a sphere at the crosshair, the
// current marker set (a sphere around each point, or the points as waypoints in order) or an ROI of
// the study; save what is kept as a new TCK of the study; a track-density map as a NIfTI.
//
// "Passes through" is defined in nifti_archive/tracts/geometry.py, and computed the same way here for
// spheres, point sets and waypoints, on the streamlines NiiVue holds (world mm): a segment (the closed
// piece between two consecutive points) within the radius of the centre. ROIs are the server's: it
// holds the mask, and answers with the streamlines kept. Saving sends the indices kept; the server
// writes them from the original file, so nothing the browser holds is encoded again.
import { api, element, project } from "./api.js";

const $ = (id) => document.getElementById(id);
const root = $("viewer");
const viewer = window.northancViewer;
const canEdit = Boolean(root.dataset.canEdit);
const TRACT_KINDS = new Set(["tck", "trk"]);
const SPHERE_MESH = "northanc-fibre-sphere";
// The page's performance measures (bench/tracts reads them).
export const Measure = Object.freeze({ DRAWN: "fibre tract drawn", SELECT: "fibre select", SHOW: "fibre show" });
export const Mode = Object.freeze({ SPHERE: "sphere", POINTS: "points", WAYPOINTS: "waypoints", ROI: "roi" });
export const Action = Object.freeze({ KEEP: "keep", DELETE: "delete" });
// NiiVue's tract colourings by direction: of the whole streamline (end to end), or of each segment.
const Colouring = Object.freeze({ GLOBAL: "Global", LOCAL: "Local" });

// Streamlines as NiiVue holds them: points (x, y, z, ... in mm) and where each streamline starts
// (offsets, one more than there are streamlines), with each streamline's bounding box, so that a
// sphere skips at once the streamlines nowhere near it.
export function streamlinesOf(points, offsets) {
  const count = offsets.length - 1;
  const boxes = new Float32Array(count * 6);
  for (let s = 0; s < count; s++) {
    let [x0, y0, z0, x1, y1, z1] = [Infinity, Infinity, Infinity, -Infinity, -Infinity, -Infinity];
    for (let p = offsets[s] * 3, end = offsets[s + 1] * 3; p < end; p += 3) {
      const x = points[p], y = points[p + 1], z = points[p + 2];
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
      if (z < z0) z0 = z;
      if (z > z1) z1 = z;
    }
    boxes.set([x0, y0, z0, x1, y1, z1], s * 6);
  }
  return { points, offsets, count, boxes };
}

// The first segment of streamline s (from its point `from` on) within r of the centre, as the
// index of its first point; a streamline of one point is its point. -1 where none is.
function firstHit(lines, s, cx, cy, cz, r, from) {
  const { points, offsets, boxes } = lines;
  const b = s * 6;
  // The box grown by r must hold the centre, or no segment (inside the box) comes within r.
  if (cx < boxes[b] - r || cx > boxes[b + 3] + r || cy < boxes[b + 1] - r || cy > boxes[b + 4] + r
      || cz < boxes[b + 2] - r || cz > boxes[b + 5] + r) return -1;
  const r2 = r * r;
  const start = offsets[s], last = offsets[s + 1] - 1;
  if (last === start) {
    const dx = points[start * 3] - cx, dy = points[start * 3 + 1] - cy, dz = points[start * 3 + 2] - cz;
    return from <= start && dx * dx + dy * dy + dz * dz <= r2 ? start : -1;
  }
  for (let k = Math.max(from, start); k < last; k++) {
    const a = k * 3;
    const ax = points[a], ay = points[a + 1], az = points[a + 2];
    const dx = points[a + 3] - ax, dy = points[a + 4] - ay, dz = points[a + 5] - az;
    const squared = dx * dx + dy * dy + dz * dz;
    let t = squared > 0 ? ((cx - ax) * dx + (cy - ay) * dy + (cz - az) * dz) / squared : 0;
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    const ex = ax + t * dx - cx, ey = ay + t * dy - cy, ez = az + t * dz - cz;
    if (ex * ex + ey * ey + ez * ez <= r2) return k;
  }
  return -1;
}

// Per streamline (1 or 0): does it pass through the sphere? Only those `among` (1) are looked at.
export function throughSphere(lines, [cx, cy, cz], r, among) {
  const found = new Uint8Array(lines.count);
  for (let s = 0; s < lines.count; s++) {
    if (among[s] && firstHit(lines, s, cx, cy, cz, r, 0) >= 0) found[s] = 1;
  }
  return found;
}

export function throughAny(lines, centres, r, among) {
  const found = new Uint8Array(lines.count);
  for (const centre of centres) {
    const hits = throughSphere(lines, centre, r, among);
    for (let s = 0; s < lines.count; s++) found[s] |= hits[s];
  }
  return found;
}

// Segments i1 <= i2 <= ... meeting the spheres in order: the earliest hit at or after the previous
// waypoint's is the best choice for the rest, so one greedy pass decides.
function inOrder(lines, s, centres, r) {
  let from = 0;
  for (const [cx, cy, cz] of centres) {
    from = firstHit(lines, s, cx, cy, cz, r, from);
    if (from < 0) return false;
  }
  return true;
}

// Through every waypoint in the order given, along the streamline in either direction.
export function throughWaypoints(lines, centres, r, among) {
  const found = new Uint8Array(lines.count);
  const reversed = [...centres].reverse();
  for (let s = 0; s < lines.count; s++) {
    if (among[s] && (inOrder(lines, s, centres, r) || inOrder(lines, s, reversed, r))) found[s] = 1;
  }
  return found;
}

// The kept streamlines after a step: those that pass (keep) or those that do not (delete), among the kept.
export function applyStep(kept, hits, action) {
  const next = new Uint8Array(kept.length);
  for (let s = 0; s < kept.length; s++) next[s] = kept[s] && (action === Action.KEEP ? hits[s] : !hits[s]) ? 1 : 0;
  return next;
}

export function keptIndices(kept) {
  const indices = [];
  for (let s = 0; s < kept.length; s++) if (kept[s]) indices.push(s);
  return indices;
}

// The time a tractogram's layer was announced (viewer:opened), for the measure of its first draw.
let opened = 0;

function settle(nv) {
  nv.gl.readPixels(0, 0, 1, 1, nv.gl.RGBA, nv.gl.UNSIGNED_BYTE, new Uint8Array(4));
}

function measure(name, start) {
  performance.measure(name, { start, end: performance.now() });
}

const state = {
  // {viewport, layer, mesh, lines}: the tractogram the tool works on.
  tract: null,
  kept: null,
  // The steps taken, as the server reads them (a saved selection's provenance), and the kept sets before each.
  steps: [],
  undo: [],
};

function message(text, isError = false) {
  $("fibre-message").textContent = text;
  $("fibre-message").classList.toggle("error", isError);
}
const fail = (error) => message(error.message ?? String(error), true);

function tracts() {
  return viewer.viewports.flatMap((viewport) => (viewport.meshes ?? [])
    .filter((layer) => TRACT_KINDS.has(layer.kind) && viewport.nv.meshes.includes(layer.mesh))
    .map((layer) => ({ viewport, layer })));
}

function renderTracts() {
  const found = tracts();
  if (state.tract && !found.some((t) => t.layer === state.tract.layer)) choose(null);
  const select = $("fibre-tract");
  select.replaceChildren(element("option", { value: "" }, found.length ? "(choose a tractogram)" : "(no tractogram open)"),
    ...found.map((t, index) => element("option", { value: index }, `${t.layer.name} (viewport ${t.viewport.index + 1})`)));
  if (!state.tract && found.length) choose(found[found.length - 1]);
  select.value = state.tract ? String(found.findIndex((t) => t.layer === state.tract.layer)) : "";
}

function choose(found) {
  if (state.tract) showSphere(false);
  if (!found) {
    Object.assign(state, { tract: null, kept: null, steps: [], undo: [] });
    return render();
  }
  const { mesh } = found.layer;
  const lines = streamlinesOf(mesh.pts, mesh.offsetPt0);
  Object.assign(state, { tract: { ...found, mesh, lines }, kept: new Uint8Array(lines.count).fill(1), steps: [], undo: [] });
  const { nv } = found.viewport;
  if (mesh.fiberColor !== $("fibre-colour").value) {
    mesh.fiberColor = $("fibre-colour").value;
    mesh.updateFibers(nv.gl);
    nv.drawScene();
  }
  // NiiVue draws every streamline as it opens them: nothing to draw again until a selection. The
  // pixel read back waits for that drawing (WebGL runs apart from the page) and dates it.
  settle(nv);
  if (opened) measure(Measure.DRAWN, opened);
  opened = 0;
  render();
}

function render() {
  const on = Boolean(state.tract);
  $("fibre-controls").disabled = !on;
  const kept = on ? keptIndices(state.kept).length : 0;
  $("fibre-count").textContent = on ? `${kept.toLocaleString("en")} of ${state.tract.lines.count.toLocaleString("en")} streamlines kept` : "";
  $("fibre-count").dataset.kept = on ? kept : "";
  $("fibre-undo").disabled = !state.undo.length;
  $("fibre-steps").replaceChildren(...state.steps.map((step) => element("li", {}, describe(step))));
  for (const id of ["fibre-save", "fibre-tdi"]) $(id).disabled = !on || !canEdit;
  showSphere($("fibre-show-sphere").checked);
}

function describe(step) {
  if (step.mode === Mode.ROI) return `${step.action} through ROI ${step.roi_name}`;
  const points = step.points.length === 1 ? step.points[0].map((c) => c.toFixed(1)).join(", ") : `${step.points.length} points`;
  return `${step.action} ${step.mode} (${points}) r ${step.radius} mm`;
}

// What NiiVue draws: only the kept streamlines. NiiVue hides a streamline whose first value per
// streamline (dps) is under its threshold; the index buffer is written here directly, since NiiVue's
// own rebuild recomputes every point's colour as well, most of the time a selection takes.
function show() {
  const start = performance.now();
  const { mesh, lines, viewport } = state.tract;
  const { nv } = viewport;
  const values = Float32Array.from(state.kept);
  const selection = { id: "northanc selection", vals: values, global_min: 0, global_max: 1, cal_min: 0, cal_max: 1 };
  mesh.dps = [selection, ...(mesh.dps ?? []).filter((d) => d.id !== selection.id)];
  mesh.dpsThreshold = 0.5;
  if (mesh.fiberSides > 2 && mesh.fiberRadius > 0) {
    mesh.updateFibers(nv.gl);
  } else {
    let size = 0;
    for (let s = 0; s < lines.count; s++) if (state.kept[s]) size += lines.offsets[s + 1] - lines.offsets[s] + 1;
    const indices = new Uint32Array(size);
    const restart = 0xffffffff;
    let n = 0;
    for (let s = 0; s < lines.count; s++) {
      if (!state.kept[s]) continue;
      for (let p = lines.offsets[s]; p < lines.offsets[s + 1]; p++) indices[n++] = p;
      indices[n++] = restart;
    }
    const { gl } = nv;
    gl.bindVertexArray(mesh.vaoFiber);
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, mesh.indexBuffer);
    gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, indices, gl.STATIC_DRAW);
    gl.bindVertexArray(null);
    mesh.indexCount = size;
  }
  nv.drawScene();
  settle(nv);
  measure(Measure.SHOW, start);
}

function crosshair() {
  const mm = state.tract?.viewport.crosshairMM();
  if (!mm) throw new Error("open a volume under the tracts: the sphere is centred at its crosshair");
  return mm;
}

function markerPoints() {
  const points = window.northancRoiTool?.markers?.state.current?.points ?? [];
  if (!points.length) throw new Error("choose a marker set with points in the Markers section");
  return points.map((p) => [p.x, p.y, p.z]);
}

function radius(id) {
  const value = Number($(id).value);
  if (!(value > 0)) throw new Error("the radius must be a positive number of mm");
  return value;
}

function stepFor(mode) {
  const action = $("fibre-action").value;
  if (mode === Mode.SPHERE) return { mode, action, points: [crosshair()], radius: radius("fibre-radius") };
  if (mode === Mode.ROI) {
    const option = $("fibre-roi").selectedOptions[0];
    if (!option?.value) throw new Error("choose an ROI of the study");
    return { mode, action, roi_file_id: Number(option.value), roi_name: option.textContent };
  }
  return { mode, action, points: markerPoints(), radius: radius("fibre-point-radius") };
}

// One selection step, computed here (spheres) or by the server (ROIs), then shown.
export async function select(mode, step = stepFor(mode)) {
  const { lines } = state.tract;
  const start = performance.now();
  let next;
  if (step.mode === Mode.ROI) {
    const answer = await api(`/tracts/${state.tract.layer.file_id}/selection`, { method: "POST", json: {
      steps: [{ mode: step.mode, action: step.action, roi_file_id: step.roi_file_id }], indices: keptIndices(state.kept),
    } });
    next = new Uint8Array(lines.count);
    for (const s of answer.kept) next[s] = 1;
  } else {
    const pass = { [Mode.SPHERE]: throughSphere, [Mode.POINTS]: throughAny, [Mode.WAYPOINTS]: throughWaypoints }[step.mode];
    next = applyStep(state.kept, pass(lines, step.mode === Mode.SPHERE ? step.points[0] : step.points, step.radius, state.kept), step.action);
  }
  measure(Measure.SELECT, start);
  state.undo.push(state.kept);
  state.steps.push(step);
  state.kept = next;
  show();
  render();
  return keptIndices(next).length;
}

function undo() {
  if (!state.undo.length) return;
  state.kept = state.undo.pop();
  state.steps.pop();
  show();
  render();
}

function reset() {
  state.kept = new Uint8Array(state.tract.lines.count).fill(1);
  state.steps = [];
  state.undo = [];
  show();
  render();
}

// The steps as the server records them in the saved file's provenance (ROIs by id).
const serverSteps = () => state.steps.map(({ roi_name: _name, ...step }) => step);

async function save() {
  const name = $("fibre-name").value.trim() || "selection";
  const answer = await api(`/tracts/${state.tract.layer.file_id}/selections`, { method: "POST", json: {
    name, indices: keptIndices(state.kept), steps: serverSteps(),
  } });
  await viewer.loadStudy(viewer.study.id);
  message(`saved ${answer.file.path} (${answer.streamlines.toLocaleString("en")} streamlines)`);
  return answer;
}

async function density() {
  const grid = $("fibre-grid").value;
  const base = state.tract.viewport.layers[0];
  const body = { indices: keptIndices(state.kept) };
  if (grid === "image") {
    if (!base) throw new Error("open a volume under the tracts, or choose the tracts' bounding box");
    body.reference_file_id = base.file_id;
  } else {
    body.voxel_mm = radius("fibre-voxel");
  }
  const answer = await api(`/tracts/${state.tract.layer.file_id}/density`, { method: "POST", json: body });
  await viewer.loadStudy(viewer.study.id);
  message(`saved ${answer.file.path} (${answer.shape.join(" x ")} voxels)`);
  if (base) {
    await state.tract.viewport.open({ id: answer.file.id, name: answer.file.path.split("/").pop(), kind: "nifti", path: answer.file.path },
      { overlay: true, colormap: "hot", opacity: 0.6 });
  }
  return answer;
}

// The selection sphere at the crosshair, drawn as a node of a NiiVue connectome (radius: the node's
// size) while the Fibres section is open. Adding or removing a mesh makes NiiVue draw everything
// again (seconds for a large tractogram in software WebGL), so the sphere changes only when it moves
// or grows.
let sphereShown = "";

function showSphere(visible) {
  const mm = state.tract?.viewport.crosshairMM();
  const r = Number($("fibre-radius").value);
  const wanted = visible && state.tract && mm && r > 0 && $("fibre-tool").open ? JSON.stringify([state.tract.viewport.index, mm, r]) : "";
  if (wanted === sphereShown) return;
  sphereShown = wanted;
  for (const { nv } of viewer.viewports) {
    for (const mesh of nv.meshes.filter((m) => m.name === SPHERE_MESH)) nv.removeMesh(mesh);
  }
  if (!wanted) return;
  const { nv } = state.tract.viewport;
  nv.addMesh(nv.loadConnectomeAsMesh({
    name: SPHERE_MESH, nodeColormap: "winter", nodeColormapNegative: "", nodeMinColor: 0, nodeMaxColor: 1, nodeScale: r,
    edgeColormap: "winter", edgeColormapNegative: "", edgeMin: 0, edgeMax: 1, edgeScale: 1, showLegend: false,
    nodes: [{ name: "", x: mm[0], y: mm[1], z: mm[2], colorValue: 1, sizeValue: 1 }], edges: [],
  }));
}

function renderRois(study) {
  const masks = (study?.files ?? []).filter((f) => f.kind === "roi" || /mask|roi/i.test(f.path) && f.kind === "nifti");
  $("fibre-roi").replaceChildren(element("option", { value: "" }, masks.length ? "(choose an ROI)" : "(no ROI in the study)"),
    ...masks.map((f) => element("option", { value: f.id }, f.path)));
}

const run = (action) => () => Promise.resolve().then(action).catch(fail);
$("fibre-tract").addEventListener("change", () => {
  const found = tracts()[Number($("fibre-tract").value)];
  choose($("fibre-tract").value === "" ? null : found ?? null);
});
$("fibre-colour").addEventListener("change", () => {
  if (!state.tract) return;
  state.tract.mesh.fiberColor = $("fibre-colour").value;
  state.tract.mesh.updateFibers(state.tract.viewport.nv.gl);
  show();
});
$("fibre-radius").addEventListener("input", () => {
  $("fibre-radius-shown").textContent = `${$("fibre-radius").value} mm`;
  showSphere($("fibre-show-sphere").checked);
});
$("fibre-show-sphere").addEventListener("change", () => showSphere($("fibre-show-sphere").checked));
$("fibre-tool").addEventListener("toggle", () => showSphere($("fibre-show-sphere").checked));
$("fibre-sphere").addEventListener("click", run(() => select(Mode.SPHERE)));
$("fibre-points").addEventListener("click", run(() => select(Mode.POINTS)));
$("fibre-waypoints").addEventListener("click", run(() => select(Mode.WAYPOINTS)));
$("fibre-roi-select").addEventListener("click", run(() => select(Mode.ROI)));
$("fibre-undo").addEventListener("click", run(undo));
$("fibre-reset").addEventListener("click", run(reset));
$("fibre-save").addEventListener("click", run(save));
$("fibre-tdi").addEventListener("click", run(density));
$("fibre-grid").addEventListener("change", () => ($("fibre-voxel").disabled = $("fibre-grid").value !== "box"));
root.addEventListener("viewer:opened", () => {
  opened = performance.now();
  renderTracts();
});
root.addEventListener("viewer:study", (event) => {
  renderRois(event.detail);
  renderTracts();
});
// The sphere follows the crosshair: NiiVue moves it on a click in any viewport.
$("viewports").addEventListener("click", () => state.tract && showSphere($("fibre-show-sphere").checked));

window.northancFibreTool = {
  state, select, undo, reset, save, density, Mode, Action, Colouring, streamlinesOf, throughSphere, throughAny,
  throughWaypoints, keptIndices,
};
render();
