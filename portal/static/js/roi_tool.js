// NORA's ROI tool in the viewer's side bar: the study's ROIs (every author's version of every
// label), one current ROI drawn in NiiVue's drawing layer of a viewport (roi_draw.js), the others
// shown as coloured overlay volumes in every viewport, statistics, agreement between authors,
// morphological and set operations. The pens themselves are in roi_pens.js.
import { api, ApiError, element, project } from "./api.js";
import { Drawing, PENS } from "./roi_draw.js";
import { DISPLAY_GRID } from "./viewer_layers.js";
import { mountMarkers } from "./marker_tool.js";
import { assistantField, mountAssistant } from "./roi_assist.js";

const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const $ = (id) => document.getElementById(id);
const DEFAULT_COLOUR = "#e6194b";

export function mountRoiTool(viewer, { NVImage, canEdit }) {
  const root = $("roi-tool");
  if (!root) return null;
  const settings = {
    pen: "free", radius: 2, above: true, thresholdSource: "low", thresholdValue: 0, connected: false,
    similarity: 0.1, budget: 2_000_000, preview: true, opacity: 0.6, outline: false,
  };
  const tool = {
    rois: [],
    // id -> ROI record, shown as overlays in every viewport
    shown: new Map(),
    // {roi: saved record or null, label, colour, drawing}
    current: null,
    settings,
  };
  const say = (text) => viewer.say(text);
  const message = (text, isError = false) => {
    $("roi-message").textContent = text;
    $("roi-message").classList.toggle("error", isError);
  };
  const fail = (error) => message(error.message ?? String(error), true);
  const studyPath = () => `/projects/${project}/studies/${viewer.study.id}`;
  const contentUrl = (roi) => `/api/v1/files/${roi.id}/content`;
  const baseOf = (viewport) => viewport.layers[0]?.file_id ?? null;
  const visibleViewports = () => viewer.viewports.filter((v) => !v.node.hidden && v.layers.length);

  // --- the list ---

  async function refresh() {
    if (!viewer.study) return;
    const { rois } = await api(`${studyPath()}/rois`);
    tool.rois = rois;
    for (const id of [...tool.shown.keys()]) if (!rois.some((r) => r.id === id)) hide(id);
    render();
  }

  function render() {
    const current = tool.current?.roi?.id;
    $("roi-list").replaceChildren(...tool.rois.map((roi) => {
      const swatch = element("span", { class: "roi-swatch", title: roi.colour });
      swatch.style.backgroundColor = roi.colour;
      const shown = tool.shown.has(roi.id);
      const button = (name, text, title, action, disabled = false) =>
        element("button", { type: "button", class: `roi-${name}`, title, "aria-label": title, disabled, onclick: () => action(roi).catch(fail) }, text);
      return element("li", { class: `roi${roi.id === current ? " current" : ""}`, "data-roi-id": roi.id, title: roi.reference_path ?? "" },
        swatch,
        element("span", { class: "roi-name" }, roi.label),
        element("span", { class: "roi-meta" }, `${roi.author} v${roi.version}`),
        ["algorithm", "assisted"].includes(roi.origin) ? element("span", { class: "roi-origin", title: `proposed by ${roi.algorithm}` }, "⚙") : null,
        element("span", { class: "roi-actions" },
          button("edit", "✎", "make current: draw on it", makeCurrent, !canEdit),
          button("show", shown ? "◉" : "○", shown ? "hide in all viewports" : "show in all viewports", toggleShown),
          button("centre", "◎", "go to its centre of gravity", goToCentre),
          element("a", { class: "roi-download", href: contentUrl(roi), download: `${roi.label}-${roi.author}-v${roi.version}.nii.gz`, title: "download the mask" }, "⤓"),
          button("delete", "✕", "delete this version", remove, !canEdit)));
    }));
    const labels = [...new Set(tool.rois.map((r) => r.label))];
    fillSelect($("roi-agreement-label"), labels.map((l) => [l, l]));
    fillSelect($("roi-op-other"), tool.rois.map((r) => [r.id, `${r.label} (${r.author} v${r.version})`]), "(none)");
    renderCurrent();
  }

  function fillSelect(select, options, empty = null) {
    const kept = select.value;
    select.replaceChildren(...(empty === null ? [] : [element("option", { value: "" }, empty)]),
      ...options.map(([value, text]) => element("option", { value }, text)));
    if ([...select.options].some((o) => o.value === kept)) select.value = kept;
  }

  function renderCurrent() {
    const current = tool.current;
    $("roi-current").disabled = !current || !canEdit;
    $("roi-current-label").textContent = current
      ? `${current.label}${current.roi ? ` (v${current.roi.version})` : " (new)"}${current.drawing.dirty ? " — unsaved" : ""}`
      : "none";
    $("roi-draw").textContent = current?.drawing.enabled ? "Drawing: on" : "Drawing: off";
    $("roi-draw").classList.toggle("on", Boolean(current?.drawing.enabled));
    for (const li of $("roi-list").children) li.classList.toggle("current", Number(li.dataset.roiId) === current?.roi?.id);
  }

  // --- the current ROI ---

  async function startDrawing(viewport, { roi = null, label, colour }) {
    // NiiVue draws on the bottom volume's grid: an ROI must be on its image's own.
    if (viewport.nv.volumes[0]?.name === DISPLAY_GRID) {
      say("this viewport is drawn on the navigation tool's display grid: set it to \"first image\" to draw ROIs");
      return false;
    }
    if (tool.current?.drawing.dirty && !confirm(`Discard the unsaved changes to ${tool.current.label}?`)) return false;
    closeCurrent();
    const drawing = new Drawing(viewport, {
      settings, say, activate: (v) => viewer.activate(v), onChange: () => renderCurrent(),
    });
    tool.current = { roi, label, colour, drawing };
    try {
      await drawing.load(roi ? contentUrl(roi) : null, NVImage);
    } catch (error) {
      closeCurrent();
      throw error;
    }
    restyle();
    drawing.setEnabled(canEdit);
    renderCurrent();
    say(`${label}: ${canEdit ? "left button draws, right button erases, space toggles drawing, shift navigates" : "read only"}`);
    return true;
  }

  function closeCurrent() {
    if (tool.current) assistant.close();
    tool.current?.drawing.detach();
    tool.current = null;
    renderCurrent();
  }

  function restyle() {
    tool.current?.drawing.style({ colour: tool.current.colour, opacity: settings.opacity, outline: settings.outline });
  }

  // A viewport whose base image is `fileId`, the active one first; else the reference is opened in
  // the active viewport.
  async function viewportFor(fileId) {
    const candidates = [viewer.active, ...viewer.viewports].filter((v) => v && !v.node.hidden);
    const found = candidates.find((v) => baseOf(v) === fileId);
    if (found) return found;
    const file = viewer.files.find((f) => f.id === fileId);
    if (!file) throw new Error("the ROI's reference image is not in this study any more");
    await viewer.active.open({ id: file.id, name: file.path.split("/").pop() });
    return viewer.active;
  }

  async function makeCurrent(roi) {
    const viewport = await viewportFor(roi.reference_file_id);
    if (await startDrawing(viewport, { roi, label: roi.label, colour: roi.colour })) message(`${roi.label} by ${roi.author} is current`);
  }

  async function newRoi() {
    const label = $("roi-label").value.trim();
    if (!label) return message("type a label for the new ROI", true);
    const viewport = viewer.active;
    const file = viewer.files.find((f) => f.id === baseOf(viewport));
    if (!file || file.kind !== "nifti") return message("open the reference image (a NIfTI) in the active viewport first", true);
    if (await startDrawing(viewport, { label, colour: $("roi-colour").value })) message(`new ROI ${label} on ${file.path}`);
  }

  async function save() {
    const current = tool.current;
    if (!current) return;
    const form = new FormData();
    form.append("mask", new Blob([await current.drawing.maskFile()], { type: "application/gzip" }), "mask.nii.gz");
    form.append("reference_file_id", String(current.drawing.fileId));
    form.append("label", current.label);
    form.append("colour", current.colour);
    const accepted = assistantField(current);
    if (accepted) form.append("assistant", accepted);
    const answer = await api(`${studyPath()}/rois`, { method: "POST", form });
    current.roi = answer.roi;
    current.colour = answer.roi.colour;
    current.drawing.dirty = false;
    message(`saved ${answer.roi.label} as version ${answer.roi.version}${answer.seg_message ? `; ${answer.seg_message}` : ""}`);
    // A shown earlier version of this ROI gives way to the new one.
    if ([...tool.shown.values()].some((r) => r.label === answer.roi.label && r.author === answer.roi.author)) await show(answer.roi);
    await refresh();
  }

  async function remove(roi) {
    if (!confirm(`Delete ${roi.label} by ${roi.author} (version ${roi.version})? It goes to the project's trash.`)) return;
    await api(`/rois/${roi.id}`, { method: "DELETE" });
    if (tool.current?.roi?.id === roi.id) tool.current.roi = null;
    hide(roi.id);
    message(`${roi.label} by ${roi.author} deleted`);
    await refresh();
  }

  // --- overlays: shown ROIs in every viewport ---

  function colormapFor(nv, colour) {
    const key = `roi${colour.slice(1).toLowerCase()}`;
    const [r, g, b] = [1, 3, 5].map((k) => parseInt(colour.slice(k, k + 2), 16));
    // 0 transparent, 1 (the top of the range) in the ROI's colour.
    nv.addColormap(key, { R: [0, r], G: [0, g], B: [0, b], A: [0, 255], I: [0, 255] });
    return key;
  }

  const overlayName = (roi) => `roi-${roi.id}.nii.gz`;

  async function addOverlay(viewport, roi) {
    const { nv } = viewport;
    if (nv.volumes.some((v) => v.name === overlayName(roi))) return;
    await nv.addVolumeFromUrl({
      url: contentUrl(roi), name: overlayName(roi), colormap: colormapFor(nv, roi.colour), opacity: settings.opacity, cal_min: 0, cal_max: 1,
    });
  }

  function removeOverlays(roi) {
    for (const { nv } of viewer.viewports) {
      const volume = nv.volumes.find((v, k) => k > 0 && v.name === overlayName(roi));
      if (volume) nv.removeVolume(volume);
    }
  }

  function show(roi) {
    const previous = [...tool.shown.values()].find((r) => r.label === roi.label && r.author === roi.author && r.id !== roi.id);
    if (previous) hide(previous.id);
    tool.shown.set(roi.id, roi);
    return Promise.all(visibleViewports().map((v) => addOverlay(v, roi)));
  }

  function hide(id) {
    const roi = tool.shown.get(id);
    tool.shown.delete(id);
    if (roi) removeOverlays(roi);
  }

  async function toggleShown(roi) {
    if (tool.shown.has(roi.id)) hide(roi.id);
    else await show(roi);
    render();
  }

  // --- centre of gravity ---

  // The mean voxel of a saved mask in the file's own voxel order, through the file's affine.
  async function savedCentre(roi) {
    const image = await NVImage.loadFromUrl({ url: contentUrl(roi), name: "mask.nii.gz" });
    const [, nx, ny, nz] = image.hdr.dims;
    let n = 0;
    const sum = [0, 0, 0];
    for (let i = 0; i < nx * ny * nz; i++) {
      if (!image.img[i]) continue;
      n++;
      sum[0] += i % nx;
      sum[1] += Math.floor(i / nx) % ny;
      sum[2] += Math.floor(i / (nx * ny));
    }
    if (!n) return null;
    const voxel = sum.map((s) => s / n);
    return image.hdr.affine.slice(0, 3).map((row) => row[0] * voxel[0] + row[1] * voxel[1] + row[2] * voxel[2] + row[3]);
  }

  async function goToCentre(roi) {
    const live = tool.current?.roi?.id === roi.id ? tool.current.drawing : null;
    const mm = live ? live.centreMM() : await savedCentre(roi);
    if (!mm) return message(`${roi.label} is empty`, true);
    for (const { nv } of visibleViewports()) {
      nv.scene.crosshairPos = nv.mm2frac(mm, 0, true);
      nv.drawScene();
    }
    say(`centre of gravity of ${roi.label}: ${mm.map((c) => c.toFixed(1)).join(", ")} mm`);
  }

  // --- statistics ---

  function statisticsRequest() {
    const images = [...new Set(visibleViewports().flatMap((v) => v.layers.map((l) => l.file_id)))]
      .filter((id) => viewer.files.find((f) => f.id === id)?.kind === "nifti");
    const rois = new Set(tool.shown.keys());
    if (tool.current?.roi) rois.add(tool.current.roi.id);
    return { images, rois: [...rois] };
  }

  async function statistics() {
    const body = statisticsRequest();
    if (!body.images.length) return message("open an image first", true);
    if (!body.rois.length) return message("show an ROI (or make a saved one current) to measure it", true);
    const { rows } = await api(`${studyPath()}/roi-statistics`, { method: "POST", json: body });
    const number = (value, digits = 1) => (value === null || value === undefined ? "" : Number(value).toFixed(digits));
    const head = ["label", "author", "image", "voxels", "median", "p25", "p75", "mean", "std", "volume mL", "area cm²"];
    $("roi-stats-table").replaceChildren(
      element("thead", {}, element("tr", {}, ...head.map((h) => element("th", {}, h)))),
      element("tbody", {}, ...rows.map((row) => element("tr", { "data-roi-id": row.roi_id, "data-image-id": row.image_id },
        ...[row.label, row.author, row.image_path.split("/").slice(-2).join("/"), row.voxels, number(row.median), number(row.p25),
          number(row.p75), number(row.mean), number(row.std), number(row.volume_ml, 3), number(row.area_cm2, 2)]
          .map((cell) => element("td", {}, String(cell)))))));
    $("roi-stats-dialog").showModal();
    // The CSV is the API's own (a POST): fetched once, offered as a file.
    const link = $("roi-stats-csv");
    link.hidden = true;
    const response = await fetch(`/api/v1${studyPath()}/roi-statistics?format=csv`, {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(await response.blob());
    link.download = `roi-statistics-study-${viewer.study.id}.csv`;
    link.hidden = false;
  }

  // --- agreement and consensus ---

  async function agreement() {
    const label = $("roi-agreement-label").value;
    if (!label) return message("choose a label", true);
    const report = await api(`${studyPath()}/rois/agreement?label=${encodeURIComponent(label)}`);
    const byId = new Map(report.versions.map((r) => [r.id, `${r.author} v${r.version}`]));
    const number = (value, digits) => (value === null || value === undefined ? "—" : Number(value).toFixed(digits));
    $("roi-agreement-table").replaceChildren(
      element("thead", {}, element("tr", {}, ...["A", "B", "Dice", "HD95 mm", "ΔV mL"].map((h) => element("th", {}, h)))),
      element("tbody", {}, ...report.pairs.map((pair) => element("tr", {},
        ...[byId.get(pair.a) ?? pair.a, byId.get(pair.b) ?? pair.b, number(pair.dice, 3), number(pair.hd95_mm, 1),
          number(pair.volume_difference_ml, 3)].map((cell) => element("td", {}, String(cell)))))));
    $("roi-agreement-note").textContent = report.pairs.length
      ? `${report.versions.length} versions of ${report.label}`
      : `${report.label} has ${report.versions.length} version(s): agreement needs two authors`;
  }

  async function consensus() {
    const label = $("roi-agreement-label").value;
    if (!label) return message("choose a label", true);
    const method = $("roi-consensus-method").value;
    const { roi } = await api(`${studyPath()}/rois/consensus`, { method: "POST", json: { label, method } });
    message(`consensus (${method}) of ${label} saved as ${roi.label} by ${roi.author} v${roi.version}`);
    await refresh();
  }

  // --- operations ---

  async function operate() {
    const target = tool.current?.roi;
    if (!target) return message("make a saved ROI current first: operations work on its saved version", true);
    if (tool.current.drawing.dirty) return message("save the current ROI first: operations work on its saved version", true);
    const operation = $("roi-op").value;
    const body = { operation, iterations: Number($("roi-op-iterations").value) || 1 };
    if (["union", "intersection", "difference"].includes(operation)) {
      if (!$("roi-op-other").value) return message(`${operation} needs a second ROI`, true);
      body.other = Number($("roi-op-other").value);
    }
    if (operation === "remove_salt") body.min_voxels = Number($("roi-op-min").value) || 1;
    const label = $("roi-op-label").value.trim();
    if (label) body.label = label;
    const { roi } = await api(`/rois/${target.id}/operations`, { method: "POST", json: body });
    await refresh();
    // The result replaces what is drawn when it is the same ROI's new version.
    if (roi.label === tool.current?.label) await makeCurrent(roi);
    message(`${operation}: saved ${roi.label} by ${roi.author} v${roi.version}`);
  }

  // --- controls ---

  const run = (action) => () => Promise.resolve().then(action).catch(fail);
  const bind = (id, event, action) => $(id).addEventListener(event, run(action));
  $("roi-pen").replaceChildren(...Object.entries(PENS).map(([value, text]) => element("option", { value }, text)));
  const syncPen = () => {
    for (const node of root.querySelectorAll("[data-pens]")) node.hidden = !node.dataset.pens.split(" ").includes(settings.pen);
  };
  const setting = (id, key, read = (node) => node.value) => {
    const node = $(id);
    const update = () => {
      settings[key] = read(node);
      if (key === "pen") {
        syncPen();
        tool.current?.drawing.cancelPolygon();
      }
      if (key === "opacity" || key === "outline") {
        restyle();
        for (const { nv } of viewer.viewports) for (const volume of nv.volumes.slice(1)) if (volume.name.startsWith("roi-")) volume.opacity = settings.opacity;
        for (const { nv } of viewer.viewports) nv.updateGLVolume();
      }
    };
    node.addEventListener("input", update);
    node.addEventListener("change", update);
    update();
  };
  setting("roi-pen", "pen");
  setting("roi-radius", "radius", (n) => Number(n.value));
  setting("roi-above", "above", (n) => n.value === "above");
  setting("roi-threshold-source", "thresholdSource");
  setting("roi-threshold-value", "thresholdValue", (n) => Number(n.value));
  setting("roi-connected", "connected", (n) => n.checked);
  setting("roi-similarity", "similarity", (n) => Number(n.value) / 100);
  setting("roi-budget", "budget", (n) => Math.max(1000, Number(n.value) || 2_000_000));
  setting("roi-preview", "preview", (n) => n.checked);
  setting("roi-opacity", "opacity", (n) => Number(n.value) / 100);
  setting("roi-outline", "outline", (n) => n.checked);
  $("roi-colour").value = DEFAULT_COLOUR;
  bind("roi-new", "click", newRoi);
  bind("roi-save", "click", save);
  bind("roi-undo", "click", () => tool.current?.drawing.undo());
  bind("roi-redo", "click", () => tool.current?.drawing.redo());
  bind("roi-clear", "click", () => tool.current?.drawing.clear());
  bind("roi-close", "click", () => {
    if (tool.current?.drawing.dirty && !confirm(`Discard the unsaved changes to ${tool.current.label}?`)) return;
    closeCurrent();
  });
  bind("roi-draw", "click", () => toggleDrawing());
  bind("roi-stats", "click", statistics);
  bind("roi-stats-close", "click", () => $("roi-stats-dialog").close());
  bind("roi-agreement", "click", agreement);
  bind("roi-consensus", "click", consensus);
  bind("roi-op-apply", "click", operate);
  bind("roi-refresh", "click", refresh);
  for (const id of ["roi-label", "roi-colour", "roi-new", "roi-save", "roi-consensus", "roi-op-apply"]) $(id).disabled ||= !canEdit;

  function toggleDrawing(on = !tool.current?.drawing.enabled) {
    if (!tool.current || !canEdit) return;
    tool.current.drawing.setEnabled(on);
    if (on) {
      markers.stopAdding();
      assistant.stop();
    }
    renderCurrent();
    say(on ? `drawing on ${tool.current.label}` : "drawing off: the mouse navigates");
  }

  // NORA's keys: space toggles drawing, (shift) ctrl+z undo / redo; the polygon closes on Enter.
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, select, textarea, dialog") || !tool.current) return;
    const drawing = tool.current.drawing;
    const ctrl = event.ctrlKey || event.metaKey;
    if (event.key === " " && !ctrl) {
      event.preventDefault();
      toggleDrawing();
    } else if (ctrl && (event.key === "z" || event.key === "Z")) {
      event.preventDefault();
      if (event.shiftKey) drawing.redo();
      else drawing.undo();
    } else if (ctrl && event.key === "y") {
      event.preventDefault();
      drawing.redo();
    } else if (drawing.polygon && event.key === "Enter") {
      event.preventDefault();
      drawing.finishPolygon(event.shiftKey ? 0 : 1);
    } else if (drawing.polygon && event.key === "Escape") {
      drawing.cancelPolygon();
    } else if (drawing.polygon && event.key === "Backspace") {
      event.preventDefault();
      drawing.removeLastPoint();
    }
  });

  // The viewer's events: a new study empties the tool; a new base image in a viewport ends a drawing
  // there (the drawing lives on the old image's grid) and gets the shown ROIs as overlays.
  const viewerRoot = $("viewer");
  viewerRoot.addEventListener("viewer:study", () => {
    const lost = tool.current?.drawing.dirty ? tool.current.label : null;
    closeCurrent();
    tool.shown.clear();
    message(lost ? `${lost}: the unsaved drawing was closed with its study` : "", Boolean(lost));
    refresh().catch(fail);
    markers.load().catch(fail);
  });
  viewerRoot.addEventListener("viewer:opened", (event) => {
    const { viewport, base } = event.detail;
    if (!base) return;
    if (tool.current?.drawing.viewport === viewport && !tool.current.drawing.attached) {
      const { label, drawing } = tool.current;
      if (drawing.dirty) message(`${label}: the unsaved drawing was closed with its image`, true);
      closeCurrent();
    }
    for (const roi of tool.shown.values()) addOverlay(viewport, roi).catch(fail);
  });

  const markers = mountMarkers(viewer, { canEdit, stopDrawing: () => toggleDrawing(false) });
  const assistant = mountAssistant(tool, { canEdit, stopDrawing: () => toggleDrawing(false) });
  syncPen();
  renderCurrent();
  window.northancRoiTool = tool;
  Object.assign(tool, { refresh, makeCurrent, save, show, hide, statistics, markers, assistant });
  return tool;
}
