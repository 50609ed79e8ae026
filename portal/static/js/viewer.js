// The viewer: NiiVue in one or more viewports, files from the archive, CT windows on keys
// 1-6, the autoloader (a preset per project; arrow keys step through the filtered table) and
// shared links (the state saved on the server, reopened by its key). A viewport shows volumes
// (NIfTI, NRRD, MGH/MGZ) and over them meshes (GIFTI, STL, OBJ, FreeSurfer surfaces) and
// tractograms (TCK, TRK), all in world millimetres; viewer_layers.js says which is which.
import { api, element, project } from "./api.js";
import { saveTableState, savedTableState, studiesPage } from "./studies.js";
import { mountRoiTool } from "./roi_tool.js";
import { Preview, inflated, painted } from "./viewer_preview.js";
import { DISPLAY_GRID, LayerType, VOLUME_KINDS, attachedNrrd, checkMesh, layerType, meshBytes, tractWarnings } from "./viewer_layers.js";

// NiiVue is megabytes of JavaScript: its compilation runs while the study and the first
// volume are fetched, instead of before.
const niivue = import("/vendor/niivue.js");
let Niivue = null;
let NVMesh = null;

const root = document.getElementById("viewer");
const grid = document.getElementById("viewports");
const status = document.getElementById("status");
// The CT windows behind keys 1-6 as the archive defines them, by key: {name, width, level}.
const ctWindows = api("/ct-windows").then(({ ct_windows: found }) => new Map(found.map((w) => [String(w.key), w])));
const FILE_MIME = "application/x-northanc-file";
// The parts of opening a volume, as performance measures of the page (bench/viewer reads them).
const Measure = Object.freeze({
  FETCH: "viewer fetch", INFLATE: "viewer inflate", PREVIEW: "viewer preview", PARSE: "viewer parse",
  UPLOAD: "viewer texture upload", DRAW: "viewer first draw",
});

function measure(name, start) {
  performance.measure(name, { start, end: performance.now() });
}

// WebGL runs apart from the page (on the CPU, without a GPU): reading a pixel back returns once
// everything asked of it is done, so the measures count the work and not only its asking.
function settle(nv) {
  nv.gl.readPixels(0, 0, 1, 1, nv.gl.RGBA, nv.gl.UNSIGNED_BYTE, new Uint8Array(4));
}

function sliceType() {
  return Number(document.getElementById("slice-type").value);
}

class Viewport {
  constructor(index, preview = new Preview()) {
    this.index = index;
    // The volumes shown, the base first: {file_id, name, kind, colormap, opacity, window}.
    this.layers = [];
    // The meshes and tractograms drawn over them: the same, with NiiVue's `mesh`.
    this.meshes = [];
    this.opening = Promise.resolve();
    this.canvas = element("canvas");
    this.preview = preview;
    this.node = element("div", { class: "viewport", "data-index": index }, this.canvas, preview.canvas);
    this.nv = new Niivue({
      backColor: [0, 0, 0, 1], crosshairColor: [1, 0.2, 0.2, 1], show3Dcrosshair: true,
      dragAndDropEnabled: false, isResizeCanvas: true, logLevel: "error",
    });
    this.ready = this.nv.attachToCanvas(this.canvas);
    this.nv.onLocationChange = (location) => viewer.showLocation(this, location);
    this.node.addEventListener("mousedown", () => viewer.activate(this));
    this.node.addEventListener("dragover", (event) => event.preventDefault());
    this.node.addEventListener("drop", (event) => {
      event.preventDefault();
      const file = JSON.parse(event.dataTransfer.getData(FILE_MIME) || "null");
      if (file) this.open(file, { overlay: event.shiftKey }).catch(viewer.fail);
    });
  }

  // Shows a base volume's central slices at once, while NiiVue loads it.
  async showPreview(fileId, buffer, range) {
    const start = performance.now();
    if (!this.preview.show(fileId, buffer, { sliceType: sliceType(), window: range })) return;
    await painted();
    measure(Measure.PREVIEW, start);
  }

  // One open at a time per viewport, in the order asked: an image added while another is still
  // replacing the base would otherwise be cleared by it, or become the base itself.
  open(file, options = {}) {
    const opened = this.opening.then(() => this.openNow(file, options));
    this.opening = opened.catch(() => undefined);
    return opened;
  }

  // file: {id, name, kind, path}: kind one of the archive's file kinds (a volume where not
  // given), path the file's in its study (a detached NRRD header names its data file by it).
  async openNow(file, options = {}) {
    const type = layerType(file.kind);
    try {
      return type === LayerType.VOLUME ? await this.openVolume(file, options) : await this.openMesh(file, type, options);
    } catch (error) {
      throw viewer.cannotOpen(file, error);
    }
  }

  async openVolume(file, { overlay = false, colormap, opacity, window: range } = {}) {
    const base = !overlay || !this.layers.length;
    const buffer = await viewer.volume(file.id);
    if (base && buffer) await this.showPreview(file.id, buffer, range);
    await this.ready;
    const layer = {
      file_id: file.id, name: file.name, kind: file.kind ?? "nifti", colormap: colormap ?? (overlay ? "red" : "gray"),
      opacity: opacity ?? (overlay ? 0.5 : 1), window: range ?? null,
    };
    const options = { url: `/api/v1/files/${file.id}/content`, name: file.name, colormap: layer.colormap, opacity: layer.opacity };
    if (buffer) options.buffer = file.kind === "nrrd" ? await attachedNrrd(file, buffer, viewer.files) : buffer;
    if (range) Object.assign(options, { cal_min: range[0], cal_max: range[1] });
    if (base) this.clear();
    try {
      await this.load(options);
    } finally {
      if (base) this.preview.hide();
    }
    this.layers.push(layer);
    this.nv.setSliceType(sliceType());
    viewer.activate(this);
    // The ROI and marker tools follow what each viewport shows.
    root.dispatchEvent(new CustomEvent("viewer:opened", { detail: { viewport: this, layer, base } }));
    return layer;
  }

  // A mesh or tractogram over the viewport's volumes (a base volume opened later replaces them
  // too). Its bytes are checked before NiiVue reads them, and what NiiVue made of them after; a
  // tractogram whose space disagrees with the base volume is drawn where its file says, and said.
  async openMesh(file, type, { colormap, opacity } = {}) {
    const response = await fetch(`/api/v1/files/${file.id}/content`);
    if (!response.ok) throw new Error(((await response.json().catch(() => null))?.error) ?? `the archive answered ${response.status}`);
    const bytes = await meshBytes(file.kind, await response.arrayBuffer());
    await this.ready;
    // NiiVue reads the format from the name's extension (the URL has none): from bytes and a name.
    const mesh = await NVMesh.readMesh(bytes, file.name, this.nv.gl, opacity ?? 1);
    this.nv.addMesh(mesh);
    try {
      checkMesh(mesh, type);
    } catch (error) {
      this.nv.removeMesh(mesh);
      throw error;
    }
    // A colormap as presets and links keep one per layer; a mesh is drawn in its own colours.
    const layer = { file_id: file.id, name: file.name, kind: file.kind, colormap: colormap ?? "gray", opacity: opacity ?? 1, window: null, mesh };
    this.meshes.push(layer);
    if (type === LayerType.TRACT) {
      for (const warning of tractWarnings(file.kind, bytes, mesh, this.baseVolume)) {
        viewer.note(`${file.name}: ${warning}. It is shown where its file says.`, "warning");
      }
    }
    this.nv.drawScene();
    viewer.activate(this);
    root.dispatchEvent(new CustomEvent("viewer:opened", { detail: { viewport: this, layer, base: false } }));
    return layer;
  }

  // addVolumeFromUrl, not loadVolumes: only it takes bytes already fetched. NiiVue's events split
  // its work into the page's measures: parsed, then uploaded to WebGL, then drawn.
  async load(options) {
    const { nv } = this;
    let start = performance.now();
    const parsed = () => {
      measure(Measure.PARSE, start);
      start = performance.now();
    };
    const uploaded = () => {
      settle(nv);
      measure(Measure.UPLOAD, start);
      start = performance.now();
    };
    nv.addEventListener("volumeAddedFromUrl", parsed, { once: true });
    nv.addEventListener("volumeUpdated", uploaded, { once: true });
    try {
      await nv.addVolumeFromUrl(options);
    } finally {
      nv.removeEventListener("volumeAddedFromUrl", parsed);
      nv.removeEventListener("volumeUpdated", uploaded);
    }
    settle(nv);
    measure(Measure.DRAW, start);
  }

  // The viewport's first image (under it there may be the navigation tool's display grid).
  get baseVolume() {
    return this.nv.volumes.find((v) => v.name !== DISPLAY_GRID);
  }

  setWindow(range) {
    const base = this.baseVolume;
    if (!base) return;
    const [low, high] = range ?? [base.robust_min, base.robust_max];
    base.cal_min = low;
    base.cal_max = high;
    this.layers[0].window = range;
    this.nv.updateGLVolume();
    viewer.say(`window ${low} – ${high}`);
  }

  clear() {
    for (const volume of [...this.nv.volumes]) this.nv.removeVolume(volume);
    for (const { mesh } of this.meshes) this.nv.removeMesh(mesh);
    this.layers = [];
    this.meshes = [];
  }

  crosshairMM() {
    if (!this.nv.volumes.length) return null;
    // Scanner millimetres (the NIfTI affine), not NiiVue's straightened display space: they differ on oblique images.
    return Array.from(this.nv.frac2mm(this.nv.scene.crosshairPos, 0, true)).slice(0, 3);
  }
}

const viewer = {
  viewports: [],
  // Volumes fetched ahead (before NiiVue was ready), by file id: promises of their inflated bytes.
  prefetched: new Map(),
  // The first viewport's preview while that viewport waits for NiiVue's code.
  earlyPreview: null,
  active: null,
  ctWindows: new Map(),
  study: null,
  files: [],

  say(text) {
    status.textContent = text;
  },

  fail(error) {
    viewer.say(`error: ${error.message ?? error}`);
    status.classList.add("error");
  },

  // A message about a file opened (or not), kept in the side bar until the next study: the
  // status line below the viewports changes with every move of the mouse.
  note(text, level) {
    document.getElementById("layer-messages").append(element("li", { class: level }, text));
  },

  cannotOpen(file, error) {
    const failure = new Error(`${file.name} could not be opened: ${error.message ?? error}`);
    this.note(failure.message, "error");
    return failure;
  },

  activate(viewport) {
    this.active = viewport;
    for (const v of this.viewports) v.node.classList.toggle("active", v === viewport);
  },

  showLocation(_viewport, location) {
    status.classList.remove("error");
    this.say(location?.string ?? "");
  },

  // The bytes of a file as NiiVue and the preview read them (inflated); null where they failed,
  // for NiiVue to fetch them itself and say why.
  volume(fileId) {
    const early = this.prefetched.get(fileId);
    if (early) {
      this.prefetched.delete(fileId);
      return early;
    }
    const start = performance.now();
    return fetch(`/api/v1/files/${fileId}/content`)
      .then((r) => (r.ok ? r.arrayBuffer() : null))
      .then(async (bytes) => {
        measure(Measure.FETCH, start);
        if (!bytes) return null;
        const inflating = performance.now();
        const buffer = await inflated(bytes);
        measure(Measure.INFLATE, inflating);
        return buffer;
      })
      .catch(() => null);
  },

  // Before NiiVue's code is ready: the first viewport's place, with its preview in it.
  async showEarly(fileId, buffer) {
    const preview = new Preview();
    this.earlyPreview = { node: element("div", { class: "viewport", "data-index": 0 }, preview.canvas), preview };
    grid.append(this.earlyPreview.node);
    const start = performance.now();
    if (!preview.show(fileId, buffer, { sliceType: sliceType() })) return;
    await painted();
    measure(Measure.PREVIEW, start);
  },

  setLayout(layout) {
    const [rows, columns] = layout.split("x").map(Number);
    grid.className = `viewports layout-${layout}`;
    document.getElementById("layout").value = layout;
    while (this.viewports.length < rows * columns) {
      const early = this.viewports.length === 0 ? this.earlyPreview : null;
      const viewport = new Viewport(this.viewports.length, early?.preview);
      early?.node.remove();
      this.viewports.push(viewport);
      grid.append(viewport.node);
    }
    this.viewports.forEach((v, i) => (v.node.hidden = i >= rows * columns));
    this.layout = layout;
    if (!this.active || this.active.node.hidden) this.activate(this.viewports[0]);
    for (const v of this.viewports) v.nv.resizeListener?.();
  },

  async loadStudy(studyId, pending = null) {
    const study = await (pending ?? api(`/projects/${project}/studies/${studyId}`));
    this.study = study;
    this.files = study.files;
    document.getElementById("study-title").textContent = `${study.subject} / ${study.study}`;
    const ohif = document.getElementById("open-ohif");
    ohif.href = `/p/${encodeURIComponent(project)}/ohif?study=${study.id}`;
    ohif.hidden = false;
    document.getElementById("layer-messages").replaceChildren();
    const list = document.getElementById("files");
    list.replaceChildren(...study.files.map((file) => {
      const entry = { id: file.id, name: file.path.split("/").pop(), path: file.path, kind: file.kind };
      return element("li", {
        draggable: "true", class: `file kind-${file.kind}`, "data-file-id": file.id, title: file.path,
        ondragstart: (event) => event.dataTransfer.setData(FILE_MIME, JSON.stringify(entry)),
        ondblclick: (event) => this.active.open(entry, { overlay: event.shiftKey }).catch(this.fail),
      }, file.path);
    }));
    history.replaceState(null, "", `?study=${studyId}${this.preset() ? `&preset=${encodeURIComponent(this.preset())}` : ""}`);
    root.dispatchEvent(new CustomEvent("viewer:study", { detail: study }));
  },

  preset() {
    return document.getElementById("preset").value;
  },

  async autoload() {
    for (const v of this.viewports) v.clear();
    const preset = this.preset();
    if (!preset) {
      // The first NIfTI (the one the page fetched ahead), else the first volume of another format.
      const first = this.files.find((f) => f.kind === "nifti") ?? this.files.find((f) => VOLUME_KINDS.has(f.kind));
      if (first) await this.viewports[0].open({ id: first.id, name: first.path.split("/").pop(), kind: first.kind, path: first.path });
      return;
    }
    const plan = await api(`/projects/${project}/studies/${this.study.id}/autoload?preset=${encodeURIComponent(preset)}`);
    this.setLayout(plan.layout);
    await Promise.all(plan.viewports.map(async (entry, index) => {
      if (!entry.base) return;
      const viewport = this.viewports[index];
      const fileOf = (layer) => ({ id: layer.file_id, name: layer.path.split("/").pop(), kind: layer.kind, path: layer.path });
      await viewport.open(fileOf(entry.base), { colormap: entry.base.colormap, opacity: entry.base.opacity, window: entry.base.window });
      for (const overlay of entry.overlays) {
        await viewport.open(fileOf(overlay), { overlay: true, colormap: overlay.colormap, opacity: overlay.opacity, window: overlay.window });
      }
    }));
    this.activate(this.viewports[0]);
  },

  // Arrow up/down: the previous or next study of the table as it was last filtered and sorted.
  async step(delta) {
    const table = savedTableState();
    const index = (table.index ?? 0) + delta;
    if (index < 0) return this.say("this is the first study of the table");
    const page = await studiesPage(table, index, 1);
    if (!page.rows.length) return this.say("this is the last study of the table");
    saveTableState({ ...table, index });
    await this.loadStudy(page.rows[0].id);
    await this.autoload();
    this.say(`study ${index + 1} of ${page.total}: ${page.rows[0].subject} / ${page.rows[0].study}`);
  },

  state() {
    const used = this.viewports.filter((v) => !v.node.hidden && (v.layers.length || v.meshes.length));
    return {
      layout: this.layout,
      crosshair: this.active?.crosshairMM() ?? null,
      viewports: used.map((v) => [...v.layers, ...v.meshes].map(({ file_id, colormap, opacity, window }) => ({ file_id, colormap, opacity, window }))),
    };
  },

  async share() {
    const answer = await api(`/projects/${project}/links`, { method: "POST", json: this.state() });
    const field = document.getElementById("share-url");
    field.hidden = false;
    field.value = answer.url;
    field.select();
    this.say("link created: anyone with a role on this project can open it");
  },

  async openLink(key) {
    const state = await api(`/projects/${project}/links/${encodeURIComponent(key)}`);
    this.setLayout(state.layout);
    const first = state.files[String(state.viewports[0][0].file_id)];
    await this.loadStudy(first.study_id);
    await Promise.all(state.viewports.map(async (layers, index) => {
      for (const [position, layer] of layers.entries()) {
        const named = state.files[String(layer.file_id)];
        const file = { id: layer.file_id, name: named.path.split("/").pop(), kind: named.kind, path: named.path };
        await this.viewports[index].open(file, { ...layer, overlay: position > 0 });
      }
    }));
    if (state.crosshair) {
      for (const v of this.viewports.filter((x) => x.nv.volumes.length)) {
        v.nv.scene.crosshairPos = v.nv.mm2frac(state.crosshair, 0, true);
        v.nv.drawScene();
      }
    }
    this.activate(this.viewports[0]);
  },
};
window.northancViewer = viewer;

// Give the GPU memory back as the page goes: without it, the volumes' textures outlive the
// page until garbage collection, and the next viewer page waits on a crowded GPU process.
window.addEventListener("pagehide", () => {
  for (const v of viewer.viewports) v.nv.gl?.getExtension("WEBGL_lose_context")?.loseContext();
});

document.addEventListener("keydown", (event) => {
  if (event.target.closest("input, select, textarea")) return;
  const ct = viewer.ctWindows.get(event.key);
  if (ct && viewer.active) {
    viewer.active.setWindow([ct.level - ct.width / 2, ct.level + ct.width / 2]);
  } else if (event.key === "0" && viewer.active) {
    viewer.active.setWindow(null);
  } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    viewer.step(event.key === "ArrowDown" ? 1 : -1).catch(viewer.fail);
  } else if (event.key === "x") {
    for (const v of viewer.viewports) {
      v.nv.opts.crosshairWidth = v.nv.opts.crosshairWidth ? 0 : 1;
      v.nv.drawScene();
    }
  }
});
document.getElementById("layout").addEventListener("change", (event) => viewer.setLayout(event.target.value));
document.getElementById("slice-type").addEventListener("change", (event) => {
  for (const v of viewer.viewports) v.nv.setSliceType(Number(event.target.value));
});
document.getElementById("preset").addEventListener("change", (event) => {
  showPreset(event.target.value).catch(viewer.fail);
  if (viewer.study) viewer.autoload().catch(viewer.fail);
});
document.getElementById("study-prev").addEventListener("click", () => viewer.step(-1).catch(viewer.fail));
document.getElementById("study-next").addEventListener("click", () => viewer.step(1).catch(viewer.fail));
document.getElementById("share").addEventListener("click", () => viewer.share().catch(viewer.fail));

// Fetches a study's listing and the volume the viewer will open first (without a preset, the
// page names it and preloads it), so that both arrive while NiiVue compiles; the volume's
// central slices show as soon as it is here.
function prefetch(studyId) {
  const listing = api(`/projects/${project}/studies/${studyId}`);
  const first = Number(root.dataset.volume);
  if (first) {
    const buffer = viewer.volume(first);
    viewer.prefetched.set(first, buffer);
    buffer.then((bytes) => bytes && !viewer.viewports.length && viewer.showEarly(first, bytes));
  }
  return listing;
}

// The preset editor (editors): a preset is JSON, checked by the server field by field.
async function showPreset(name) {
  const field = document.getElementById("preset-json");
  if (!field || !name) return;
  const { presets } = await api(`/projects/${project}/presets`);
  const found = presets.find((p) => p.name === name);
  if (found) {
    document.getElementById("preset-name").value = name;
    field.value = JSON.stringify(found.preset, null, 2);
  }
}

document.getElementById("preset-save")?.addEventListener("click", async () => {
  const name = document.getElementById("preset-name").value.trim();
  const error = document.getElementById("preset-error");
  error.textContent = "";
  try {
    const preset = JSON.parse(document.getElementById("preset-json").value);
    await api(`/projects/${project}/presets/${encodeURIComponent(name)}`, { method: "PUT", json: preset });
  } catch (failure) {
    error.textContent = failure.message;
    return;
  }
  const select = document.getElementById("preset");
  if (![...select.options].some((o) => o.value === name)) select.append(element("option", {}, name));
  select.value = name;
  viewer.say(`preset ${name} saved`);
  if (viewer.study) await viewer.autoload();
});

async function start() {
  const listing = root.dataset.study && !root.dataset.link ? prefetch(Number(root.dataset.study)) : null;
  const module = await niivue;
  ({ Niivue, NVMesh } = module);
  viewer.ctWindows = await ctWindows;
  viewer.setLayout("1x1");
  await Promise.all(viewer.viewports.map((v) => v.ready));
  viewer.roiTool = mountRoiTool(viewer, { NVImage: module.NVImage, canEdit: Boolean(root.dataset.canEdit) });
  if (root.dataset.link) {
    await viewer.openLink(root.dataset.link);
  } else if (root.dataset.study) {
    await viewer.loadStudy(Number(root.dataset.study), listing);
    await viewer.autoload();
  }
  root.dataset.ready = "1";
}
start().catch((error) => {
  viewer.fail(error);
  root.dataset.ready = "error";
});
