// NORA's Navigation tool: align "moving" images by hand against the others (rigid or affine), or warp
// them (Gaussian displacement markers, or pairs of keypoints), then apply: the archive writes new
// files into the study (segmentation/navigation.py has the conventions; the server is the one that
// computes what is written, from the same numbers this page shows).
//
// Rigid and affine moves show at once: NiiVue draws each moving volume with the affine
// T @ original (NVImage.setAffine), over the fixed ones, on the display grid (the first image's, another
// image's matrix, or the world box of the open images; see showDisplayGrid). Warps show as
// their markers (a line from each centre to where it goes) and, on "Preview", as the warped image the
// server computes, added as an overlay.
import { api, element, project } from "./api.js";
import { DISPLAY_GRID } from "./viewer_layers.js";

const $ = (id) => document.getElementById(id);
const root = $("viewer");
const viewer = window.northancViewer;
const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const MESH_NAME = "northanc-navigation";
const PREVIEW_PREFIX = "preview: ";
// The invisible base volume that sets the grid NiiVue draws on (the ".nii" tells NiiVue its format).
// A display grid above this many voxels is refused: it is a texture on the GPU like any volume.
const MAX_GRID_VOXELS = 2 ** 27;
// Mouse drags: degrees per pixel when turning, scale factor per pixel (exponential) when scaling.
const DEGREES_PER_PIXEL = 0.5;
const SCALE_PER_PIXEL = 0.005;
const Mode = Object.freeze({ RIGID: "rigid", AFFINE: "affine", DISPLACEMENTS: "displacements", KEYPOINTS: "keypoints" });
const AXES = ["x", "y", "z"];
// NiiVue's tile kinds (screenSlices[].axCorSag): axial looks down z, coronal down y, sagittal down x.
const VIEW_AXIS = { 0: 2, 1: 1, 2: 0 };

// 4x4 matrices as arrays of rows (NiiVue's getAffine/setAffine form).
const identity = () => [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]];
const multiply = (a, b) => a.map((row) => b[0].map((_, j) => row.reduce((sum, value, k) => sum + value * b[k][j], 0)));
function translation(offset) {
  const m = identity();
  offset.forEach((value, i) => (m[i][3] = value));
  return m;
}
function rotation([ax, ay, az]) {
  const [x, y, z] = [ax, ay, az].map((a) => (a * Math.PI) / 180);
  const rx = [[1, 0, 0, 0], [0, Math.cos(x), -Math.sin(x), 0], [0, Math.sin(x), Math.cos(x), 0], [0, 0, 0, 1]];
  const ry = [[Math.cos(y), 0, Math.sin(y), 0], [0, 1, 0, 0], [-Math.sin(y), 0, Math.cos(y), 0], [0, 0, 0, 1]];
  const rz = [[Math.cos(z), -Math.sin(z), 0, 0], [Math.sin(z), Math.cos(z), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]];
  return multiply(rz, multiply(ry, rx));
}
// The same composition as segmentation.navigation.compose: T = Tr(t) Tr(c) Rz Ry Rx S Tr(-c).
function compose({ translation: t, rotation_deg: r, scale: s, centre: c }) {
  const scale = [[s[0], 0, 0, 0], [0, s[1], 0, 0], [0, 0, s[2], 0], [0, 0, 0, 1]];
  return [translation(t), translation(c), rotation(r), scale, translation(c.map((v) => -v))].reduce(multiply);
}

// The box every volume covers in world mm, in voxels of `voxel` mm: the same box as the server's world
// grid (segmentation.navigation.world_grid), so that what is shown on "world box" is the grid a warp
// written on "world box" lands on. Corners are the outer faces of the corner voxels (half a voxel beyond
// the centres), else the edge voxels of every image would be cut in half; the box is centred on the
// images' extent so that rounding up to whole voxels spills evenly on both sides; axis-aligned and RAS+,
// NiiVue draws it without reorienting. volumes: [{dims: [nx, ny, nz], affine: rows}].
export function worldBox(volumes, voxel) {
  if (!volumes.length) throw new Error("open an image first: the world box covers the open images");
  if (!(Number.isFinite(voxel) && voxel > 0)) throw new Error(`the voxel size must be a positive number of mm, not ${voxel}`);
  const low = [Infinity, Infinity, Infinity];
  const high = [-Infinity, -Infinity, -Infinity];
  for (const { dims, affine } of volumes) {
    for (const corner of [0, 1, 2, 3, 4, 5, 6, 7]) {
      const index = [0, 1, 2].map((axis) => ((corner >> axis) & 1 ? dims[axis] - 0.5 : -0.5));
      for (let row = 0; row < 3; row++) {
        const mm = affine[row][3] + index.reduce((sum, value, k) => sum + affine[row][k] * value, 0);
        low[row] = Math.min(low[row], mm);
        high[row] = Math.max(high[row], mm);
      }
    }
  }
  // 1e-9 keeps an exact fit from gaining a voxel (as the server does).
  const dims = low.map((lo, i) => Math.max(1, Math.ceil((high[i] - lo) / voxel - 1e-9)));
  const first = low.map((lo, i) => (lo + high[i]) / 2 - ((dims[i] - 1) * voxel) / 2);
  const affine = identity().map((row, i) => row.map((value, j) => (i < 3 && j === i ? voxel : i < 3 && j === 3 ? first[i] : value)));
  return { dims, affine };
}

// An empty NIfTI-1 volume (uint8 zeros) with these dimensions and sform.
function emptyNifti({ dims, affine }) {
  const count = dims[0] * dims[1] * dims[2];
  if (count > MAX_GRID_VOXELS) throw new Error(`a display grid of ${dims.join(" x ")} voxels is too large: choose larger voxels`);
  const buffer = new ArrayBuffer(352 + count);
  const view = new DataView(buffer);
  view.setInt32(0, 348, true);
  [3, ...dims, 1, 1, 1, 1].forEach((value, i) => view.setInt16(40 + 2 * i, value, true));
  view.setInt16(70, 2, true); // uint8
  view.setInt16(72, 8, true);
  const sizes = [0, 1, 2].map((k) => Math.hypot(affine[0][k], affine[1][k], affine[2][k]));
  [1, ...sizes, 1, 1, 1, 1].forEach((value, i) => view.setFloat32(76 + 4 * i, value, true));
  view.setFloat32(108, 352, true);
  view.setFloat32(112, 1, true);
  view.setFloat32(124, 1, true); // cal_max: a range NiiVue need not compute from zeros
  view.setUint8(123, 2); // mm
  view.setInt16(254, 2, true); // sform: aligned to another image
  for (let row = 0; row < 3; row++) affine[row].forEach((value, j) => view.setFloat32(280 + 16 * row + 4 * j, value, true));
  [..."n+1"].forEach((c, i) => view.setUint8(344 + i, c.charCodeAt(0)));
  return buffer;
}

const state = {
  // Moving images by file id: {file_id, name, originals: Map(nv -> affine at the time it was chosen)}.
  moving: new Map(),
  markers: [],
  dumped: [],
  keypoints: { source: [], target: [] },
  mouse: false,
  drag: null,
  study: viewer.study?.id,
};

function message(text, isError = false) {
  $("nav-message").textContent = text;
  $("nav-message").classList.toggle("error", isError);
}
const fail = (error) => message(error.message ?? String(error), true);
const run = (action) => () => Promise.resolve().then(action).catch(fail);
const mode = () => $("nav-mode").value;
const numbers = (prefix) => AXES.map((axis) => Number($(`nav-${prefix}${axis}`).value) || 0);

function parameters() {
  const scale = mode() === Mode.RIGID ? [1, 1, 1] : numbers("s").map((v) => v || 1);
  return { translation: numbers("t"), rotation_deg: numbers("r"), scale, centre: numbers("c") };
}

function setNumbers(prefix, values) {
  AXES.forEach((axis, i) => ($(`nav-${prefix}${axis}`).value = String(Math.round(values[i] * 1000) / 1000)));
}

// The NiiVue volumes of the images (not the display grid) across the viewports.
function imageVolumes() {
  return viewer.viewports.flatMap(({ nv }) => nv.volumes.filter((v) => v.name !== DISPLAY_GRID));
}

// getAffine is the affine NiiVue draws with: a moving image counts where the tool has put it (when the
// grid is chosen; it is not built again at every step of a drag, which would mean a new volume each time).
function geometry(volume) {
  return { dims: Array.from(volume.hdr.dims.slice(1, 4)), affine: volume.getAffine() };
}

// The grid NiiVue draws on: it resamples every volume onto its first one's. The chosen grid is an
// invisible (opacity 0) empty base volume in every viewport, not a reordering of the images: the
// images keep their order (which is drawn over which), colours and opacities, and a viewport that
// does not show the chosen image is drawn on its grid too.
function displayGrid() {
  const choice = $("nav-display-grid").value;
  if (choice === "world") return worldBox(imageVolumes().map(geometry), Number($("nav-display-voxel").value));
  if (choice.startsWith("image:")) {
    const fileId = Number(choice.slice("image:".length));
    const found = [...shown(fileId)][0];
    if (!found) throw new Error("that image is no longer open");
    return geometry(found.viewport.nv.volumes[found.index]);
  }
  return null;
}

let gridChanges = Promise.resolve();
// One change at a time: a second one would otherwise add its grid before the first's is removed.
function showDisplayGrid() {
  const change = gridChanges.then(async () => {
    const grid = displayGrid();
    const bytes = grid && emptyNifti(grid);
    for (const { nv } of viewer.viewports) {
      for (const old of nv.volumes.filter((v) => v.name === DISPLAY_GRID)) nv.removeVolume(old);
      if (!grid || !nv.volumes.length) {
        nv.updateGLVolume();
        continue;
      }
      const volume = await nv.addVolumeFromUrl({ url: DISPLAY_GRID, name: DISPLAY_GRID, buffer: bytes.slice(0), colormap: "gray", opacity: 0, cal_min: 0, cal_max: 1 });
      nv.setVolume(volume, 0);
    }
    $("nav-display-grid-shown").textContent = grid ? `drawn on ${grid.dims.join(" x ")} voxels` : "";
  });
  gridChanges = change.catch(() => undefined);
  return change;
}

function renderDisplayGridChoices() {
  const select = $("nav-display-grid");
  const chosen = select.value;
  const layers = new Map(viewer.viewports.flatMap((v) => v.layers.map((l) => [String(l.file_id), l.name])));
  select.replaceChildren(
    element("option", { value: "first" }, "first image"),
    ...[...layers].map(([fileId, name]) => element("option", { value: `image:${fileId}` }, `image: ${name}`)),
    element("option", { value: "world" }, `world box at ${$("nav-display-voxel").value} mm`),
  );
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "first";
}

// The NiiVue volume showing a layer of a viewport: volumes follow the layers in order, named after the file.
function volumeIndex(viewport, layer) {
  const at = viewport.layers.indexOf(layer);
  if (viewport.nv.volumes[at]?.name === layer.name) return at;
  return viewport.nv.volumes.findIndex((v) => v.name === layer.name);
}

function* shown(fileId) {
  for (const viewport of viewer.viewports) {
    for (const layer of viewport.layers.filter((l) => l.file_id === fileId)) {
      const index = volumeIndex(viewport, layer);
      if (index >= 0) yield { viewport, index };
    }
  }
}

function crosshair() {
  const mm = viewer.active?.crosshairMM();
  if (!mm) throw new Error("open an image first: points are taken at the crosshair");
  return mm.map((c) => Math.round(c * 100) / 100);
}

// Shows every moving image with the tool's transform (rigid and affine modes; warps move the affine part too).
function showTransform() {
  const transform = compose(parameters());
  for (const [fileId, entry] of state.moving) {
    for (const { viewport, index } of shown(fileId)) {
      const { nv } = viewport;
      if (!entry.originals.has(nv)) entry.originals.set(nv, nv.volumes[index].getAffine());
      nv.setVolumeAffine(index, multiply(transform, entry.originals.get(nv)));
    }
  }
}

function restore(entry) {
  for (const { viewport, index } of shown(entry.file_id)) {
    const original = entry.originals.get(viewport.nv);
    if (original) viewport.nv.setVolumeAffine(index, original);
  }
  entry.originals.clear();
}

function renderLayers() {
  const viewport = viewer.active;
  const layers = viewport?.layers ?? [];
  $("nav-layers").replaceChildren(...layers.map((layer) => {
    const box = element("input", { type: "checkbox", class: "nav-moving", "data-file-id": layer.file_id, "aria-label": `${layer.name} moves` });
    box.checked = state.moving.has(layer.file_id);
    box.addEventListener("change", () => {
      if (box.checked) state.moving.set(layer.file_id, { file_id: layer.file_id, name: layer.name, originals: new Map() });
      else {
        restore(state.moving.get(layer.file_id));
        state.moving.delete(layer.file_id);
      }
      showTransform();
    });
    return element("li", {}, element("label", {}, box, ` ${layer.name}`));
  }));
  $("nav-no-layers").hidden = layers.length > 0;
}

function renderMode() {
  for (const node of document.querySelectorAll("#navigation-tool [data-modes]")) {
    node.hidden = !node.dataset.modes.split(" ").includes(mode());
  }
  showTransform();
}

// Markers and keypoint pairs as a connectome of every viewport: nodes at the points, an edge from
// each point to where it goes.
function showPoints() {
  const pairs = mode() === Mode.KEYPOINTS
    ? state.keypoints.source.map((s, i) => [s, state.keypoints.target[i]])
    : state.markers.map((m) => [m.centre, m.centre.map((c, i) => c + m.displacement[i])]);
  const nodes = [];
  const edges = [];
  for (const [from, to] of pairs) {
    nodes.push({ name: `${nodes.length / 2 + 1}`, x: from[0], y: from[1], z: from[2], colorValue: 1, sizeValue: 1 });
    if (!to) continue;
    edges.push({ first: nodes.length - 1, second: nodes.length, colorValue: 1 });
    nodes.push({ name: "", x: to[0], y: to[1], z: to[2], colorValue: 0.5, sizeValue: 0.6 });
  }
  for (const { nv, layers } of viewer.viewports) {
    for (const mesh of nv.meshes.filter((m) => m.name === MESH_NAME)) nv.removeMesh(mesh);
    if (!layers.length || !nodes.length) continue;
    nv.addMesh(nv.loadConnectomeAsMesh({
      name: MESH_NAME, nodeColormap: "winter", nodeColormapNegative: "", nodeMinColor: 0, nodeMaxColor: 1, nodeScale: 2,
      edgeColormap: "winter", edgeColormapNegative: "", edgeMin: 0, edgeMax: 1, edgeScale: 1, showLegend: false, nodes, edges,
    }));
  }
}

function renderPoints() {
  const remove = (list, index) => () => {
    list.splice(index, 1);
    renderPoints();
  };
  $("nav-markers").replaceChildren(...state.markers.map((m, index) => {
    const size = element("input", { type: "number", class: "nav-marker-sigma", min: "0.1", step: "any", value: m.sigma, "aria-label": "σ (mm)" });
    size.addEventListener("input", () => (m.sigma = Number(size.value) || m.sigma));
    return element("li", { class: "nav-marker" },
      `${m.centre.map((c) => c.toFixed(1)).join(", ")} → ${m.displacement.map((c) => c.toFixed(1)).join(", ")} mm, σ`, size,
      element("button", { type: "button", title: "remove this marker", onclick: remove(state.markers, index) }, "✕"));
  }));
  $("nav-dumped").textContent = state.dumped.length ? `${state.dumped.length} dumped stage(s) under the markers` : "";
  const { source, target } = state.keypoints;
  $("nav-pairs").replaceChildren(...source.map((s, index) => element("li", { class: "nav-pair" },
    `${s.map((c) => c.toFixed(1)).join(", ")} → ${target[index] ? target[index].map((c) => c.toFixed(1)).join(", ") : "(target?)"}`,
    element("button", { type: "button", title: "remove this pair", onclick: () => {
      source.splice(index, 1);
      target.splice(index, 1);
      renderPoints();
    } }, "✕"))));
  showPoints();
}

function addMarker() {
  const sigma = Number($("nav-sigma").value);
  state.markers.push({ centre: crosshair(), displacement: numbers("d"), sigma });
  renderPoints();
}

function addKeypoint(side) {
  const { source, target } = state.keypoints;
  if (side === "target" && target.length >= source.length) throw new Error("add the source point of the pair first");
  if (side === "source" && source.length > target.length) throw new Error("add the target point of the last pair first");
  state.keypoints[side].push(crosshair());
  renderPoints();
}

// NORA's "dump": the markers so far become a stage of the field; new markers warp on top of it.
function dump() {
  if (!state.markers.length) throw new Error("no markers to dump");
  state.dumped.push({ markers: state.markers.map(({ centre, displacement, sigma }) => ({ centre, displacement, sigma })) });
  state.markers = [];
  renderPoints();
  message(`dumped: ${state.dumped.length} stage(s); new markers warp on top`);
}

function stages() {
  if (mode() === Mode.DISPLACEMENTS) {
    const current = state.markers.length ? [{ markers: state.markers }] : [];
    return [...state.dumped, ...current];
  }
  if (mode() === Mode.KEYPOINTS) {
    const { source, target } = state.keypoints;
    return [...state.dumped, { keypoints: { source, target: target.slice(0, source.length), sigma: Number($("nav-kp-sigma").value) } }];
  }
  return undefined;
}

// Where a warp lands: NORA's common matrix, the moving image's own grid by default.
function grid() {
  if (mode() !== Mode.DISPLACEMENTS && mode() !== Mode.KEYPOINTS) return undefined;
  const choice = $("nav-grid").value;
  if (choice === "world") return { voxel_mm: Number($("nav-voxel").value) };
  const base = viewer.active?.layers[0];
  if (choice === "base" && base) return { file_id: base.file_id };
  return "own";
}

function request(moving) {
  const fixed = [...new Set(viewer.viewports.flatMap((v) => v.layers.map((l) => l.file_id)))].filter((id) => !state.moving.has(id));
  return { mode: mode(), moving, fixed, transform: parameters(), stages: stages(), grid: grid() };
}

async function preview() {
  if (mode() !== Mode.DISPLACEMENTS && mode() !== Mode.KEYPOINTS) {
    showTransform();
    return message("rigid and affine moves show as you make them");
  }
  for (const entry of state.moving.values()) {
    const response = await fetch(`/api/v1/projects/${project}/studies/${viewer.study.id}/navigation/preview`, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, Accept: "application/json" },
      body: JSON.stringify(request([entry.file_id])),
    });
    if (!response.ok) throw new Error((await response.json().catch(() => ({}))).error ?? `HTTP ${response.status}`);
    const url = URL.createObjectURL(await response.blob());
    const nv = viewer.active.nv;
    for (const old of nv.volumes.filter((v) => v.name === `${PREVIEW_PREFIX}${entry.name}`)) nv.removeVolume(old);
    await nv.addVolumeFromUrl({ url, name: `${PREVIEW_PREFIX}${entry.name}`, colormap: "warm", opacity: 0.6 });
    URL.revokeObjectURL(url);
  }
  message("the warped images are shown as overlays (warm colours)");
}

function clearPreviews() {
  for (const { nv } of viewer.viewports) {
    for (const volume of nv.volumes.filter((v) => v.name.startsWith(PREVIEW_PREFIX))) nv.removeVolume(volume);
  }
}

function reset() {
  for (const entry of state.moving.values()) restore(entry);
  for (const prefix of ["t", "r", "c"]) setNumbers(prefix, [0, 0, 0]);
  setNumbers("s", [1, 1, 1]);
  state.markers = [];
  state.dumped = [];
  state.keypoints = { source: [], target: [] };
  clearPreviews();
  renderPoints();
  showTransform();
  message("back to the images' own positions");
}

async function apply() {
  if (!state.moving.size) throw new Error("choose at least one moving image (tick it above)");
  const answer = await api(`/projects/${project}/studies/${viewer.study.id}/navigation/apply`, {
    method: "POST", json: request([...state.moving.keys()]),
  });
  const written = answer.files.flatMap((f) => [f.image.path, ...(f.field ? [f.field.path] : [])]);
  await viewer.loadStudy(viewer.study.id);
  message(`wrote ${written.join(", ")}`);
  root.dispatchEvent(new CustomEvent("navigation:applied", { detail: answer }));
}

// The mouse: with "Mouse moves images" on, a drag translates the moving images in the slice's plane,
// shift+drag turns them about the view's axis through the centre, alt+drag scales them (affine mode).
function pointerMM(nv, event) {
  const box = nv.canvas.getBoundingClientRect();
  const dpr = nv.uiData.dpr ?? window.devicePixelRatio ?? 1;
  const position = [(event.clientX - box.left) * dpr, (event.clientY - box.top) * dpr];
  const frac = nv.canvasPos2frac(position);
  if (!frac || frac[0] < 0) return null;
  return { mm: Array.from(nv.frac2mm(frac, 0, true)).slice(0, 3), tile: nv.tileIndex(...position) };
}

function startDrag(event) {
  if (!state.mouse || event.button !== 0 || !state.moving.size) return;
  const viewport = viewer.viewports.find((v) => v.node.contains(event.target));
  if (!viewport?.nv.volumes.length) return;
  event.stopPropagation();
  event.preventDefault();
  const at = pointerMM(viewport.nv, event);
  const tile = at && at.tile >= 0 ? viewport.nv.screenSlices[at.tile] : null;
  state.drag = { viewport, last: at?.mm ?? null, x: event.clientX, y: event.clientY, axis: VIEW_AXIS[tile?.axCorSag] ?? 2 };
  if (event.shiftKey || event.altKey) setNumbers("c", crosshair());
}

function drag(event) {
  if (!state.drag) return;
  event.stopPropagation();
  event.preventDefault();
  const { viewport, axis } = state.drag;
  const dx = event.clientX - state.drag.x;
  const dy = event.clientY - state.drag.y;
  state.drag.x = event.clientX;
  state.drag.y = event.clientY;
  if (event.shiftKey) {
    const angles = numbers("r");
    angles[axis] += dx * DEGREES_PER_PIXEL;
    setNumbers("r", angles);
  } else if (event.altKey) {
    if (mode() === Mode.RIGID) return message("a rigid transform does not scale: choose affine", true);
    setNumbers("s", numbers("s").map((s) => (s || 1) * Math.exp(-dy * SCALE_PER_PIXEL)));
  } else {
    const at = pointerMM(viewport.nv, event);
    if (!at || !state.drag.last) return;
    setNumbers("t", numbers("t").map((t, i) => t + at.mm[i] - state.drag.last[i]));
    state.drag.last = at.mm;
  }
  showTransform();
}

function endDrag(event) {
  if (!state.drag) return;
  event.stopPropagation();
  state.drag = null;
}

function setMouse(on) {
  state.mouse = on;
  $("nav-mouse").textContent = on ? "Mouse moves images: on" : "Mouse moves images: off";
  $("nav-mouse").classList.toggle("on", on);
}

export function mountNavigation() {
  const canEdit = Boolean(root.dataset.canEdit);
  $("nav-apply").disabled = !canEdit;
  $("nav-mode").addEventListener("change", () => {
    renderMode();
    renderPoints();
  });
  for (const input of document.querySelectorAll("#navigation-tool .nav-number")) input.addEventListener("input", showTransform);
  $("nav-centre-here").addEventListener("click", run(() => {
    setNumbers("c", crosshair());
    showTransform();
  }));
  $("nav-mouse").addEventListener("click", () => setMouse(!state.mouse));
  $("nav-add-marker").addEventListener("click", run(addMarker));
  $("nav-dump").addEventListener("click", run(dump));
  $("nav-add-source").addEventListener("click", run(() => addKeypoint("source")));
  $("nav-add-target").addEventListener("click", run(() => addKeypoint("target")));
  $("nav-preview").addEventListener("click", run(preview));
  $("nav-reset").addEventListener("click", run(reset));
  $("nav-apply").addEventListener("click", run(apply));
  const viewports = $("viewports");
  viewports.addEventListener("mousedown", startDrag, true);
  window.addEventListener("mousemove", drag, true);
  window.addEventListener("mouseup", endDrag, true);
  $("nav-display-grid").addEventListener("change", run(showDisplayGrid));
  // On change, not on input: typing "0.5" passes through "0." and "0", neither a size.
  $("nav-display-voxel").addEventListener("change", run(() => {
    renderDisplayGridChoices();
    if ($("nav-display-grid").value === "world") return showDisplayGrid();
  }));
  root.addEventListener("viewer:opened", () => {
    renderLayers();
    showTransform();
    showPoints();
    // A base image opened clears the viewport's volumes, the grid's too; any image opened widens the world box.
    renderDisplayGridChoices();
    if ($("nav-display-grid").value !== "first") showDisplayGrid().catch(fail);
  });
  viewports.addEventListener("mousedown", () => queueMicrotask(renderLayers));
  root.addEventListener("viewer:study", (event) => {
    // Applying reloads the same study's files: the moving images stay as they are then.
    if (event.detail?.id !== state.study) state.moving.clear();
    state.study = event.detail?.id;
    renderLayers();
  });
  renderMode();
  renderLayers();
  renderDisplayGridChoices();
  window.northancNavigation = { state, compose, parameters, worldBox, displayGridShown: () => gridChanges };
}

mountNavigation();
