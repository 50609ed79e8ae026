// The segmentation assistant in the ROI tool: clicks (points), painted strokes (scribbles) or a box on
// the current ROI's image go to the assistant through the portal; its proposal shows in the drawing's
// preview shade, and Accept merges it into the ROI, which is then saved as usual.
//
// The assistant works in the NIfTI file's voxel order, the drawing in NiiVue's RAS-reoriented order
// (roi_draw.js). Both ways go through the base volume's permRAS, the permutation and flips with which
// NiiVue's loadDrawing and saveToDisk reorient a mask, so a click lands on the file's voxel under the
// mouse and a proposal on the drawing's voxels, whatever the image's orientation.
import { api, element, project } from "./api.js";
import { PLANE_AXES, paint, strokePoints } from "./roi_pens.js";

// The drawing's value for a voxel that is proposed, not part of the ROI (roi_draw.js's pen preview).
const PROPOSAL = 2;
const SVG = "http://www.w3.org/2000/svg";
const OTHER = { foreground: "background", background: "foreground" };
const $ = (id) => document.getElementById(id);

// The file's voxel [i, j, k] of the drawing's voxel `ras`.
export function fileVoxel(volume, ras) {
  const file = [0, 0, 0];
  volume.permRAS.forEach((p, axis) => {
    const a = Math.abs(p) - 1;
    file[a] = p < 0 ? volume.hdr.dims[a + 1] - 1 - ras[axis] : ras[axis];
  });
  return file;
}

// A function from a file voxel (i, j, k) to its index in the drawing bitmap of dims `dims`.
export function drawingIndexer(volume, dims) {
  const strides = [1, dims[0], dims[0] * dims[1]];
  const step = [0, 0, 0];
  let offset = 0;
  volume.permRAS.forEach((p, axis) => {
    const a = Math.abs(p) - 1;
    step[a] = p < 0 ? -strides[axis] : strides[axis];
    if (p < 0) offset += (volume.hdr.dims[a + 1] - 1) * strides[axis];
  });
  return (i, j, k) => offset + i * step[0] + j * step[1] + k * step[2];
}

// The drawing indices of a packed proposal ({origin, shape, bits}: a bounding box in file order,
// i fastest, most significant bit first).
export function proposalVoxels(packed, toDrawing) {
  if (!packed) return new Int32Array();
  const bytes = Uint8Array.from(atob(packed.bits), (c) => c.charCodeAt(0));
  const [ni, nj, nk] = packed.shape;
  const [oi, oj, ok] = packed.origin;
  const out = [];
  for (let n = 0; n < ni * nj * nk; n++) {
    if (!((bytes[n >> 3] >> (7 - (n & 7))) & 1)) continue;
    out.push(toDrawing(oi + (n % ni), oj + (Math.floor(n / ni) % nj), ok + Math.floor(n / (ni * nj))));
  }
  return Int32Array.from(out);
}

function describe(answer) {
  const took = `(${Number(answer.seconds).toFixed(2)} s)`;
  if (answer.model) return `model ${answer.model.name} v${answer.model.version} → ${answer.voxels} voxels proposed ${took}`;
  const counts = answer.interactions ?? {};
  const parts = [];
  for (const key of ["foreground", "background", "foreground_scribbles", "background_scribbles"]) {
    if (counts[key]) parts.push(`${counts[key]} ${key.replace("_", " ")}`);
  }
  if (counts.box) parts.push("box");
  return `${answer.tool}: ${parts.join(", ") || "nothing"} → ${answer.voxels} voxels proposed ${took}`;
}

// tool: roi_tool.js's tool (its `current` drawing); stopDrawing turns the pens off while the assistant has the mouse.
export function mountAssistant(tool, { canEdit, stopDrawing }) {
  const state = {
    available: false, mode: "", proposal: null, answer: null, clicked: false, gesture: null, listeners: null,
    // Ours, not the user's: the portal puts the user before it; the assistant keeps clicks per session and image.
    session: `page-${Math.random().toString(36).slice(2, 12)}`,
    queue: Promise.resolve(),
  };
  const drawing = () => tool.current?.drawing ?? null;
  const status = (text, isError = false) => {
    $("roi-assist-status").textContent = text;
    $("roi-assist-status").classList.toggle("error", isError);
  };
  const overlay = document.createElementNS(SVG, "svg");
  overlay.classList.add("roi-assist-marks");

  async function check() {
    if (!canEdit) return status("the assistant proposes ROIs to editors");
    const answer = await api(`/projects/${project}/assistant`);
    state.available = answer.available;
    const offered = new Set(answer.tools.map((t) => t.name));
    for (const option of $("roi-assist-tool").options) {
      option.disabled = Boolean(option.value) && !offered.has(option.value);
      const found = answer.tools.find((t) => t.name === option.value);
      if (found) option.title = found.description;
    }
    $("roi-assist-tool").disabled = !answer.available;
    $("roi-assist-model").replaceChildren(...answer.models.map((m) => element("option", {
      value: m.id, title: m.val_dice === null ? "registered" : `validation Dice ${m.val_dice.toFixed(3)}`,
    }, `${m.name} v${m.version} (${m.label})`)));
    $("roi-assist-models").hidden = !answer.available || !answer.models.length;
    status(answer.available ? "choose a tool, then click, paint or drag a box on the image" : `unavailable: ${answer.reason}`, !answer.available);
  }

  // --- the proposal in the drawing ---

  function clearProposal() {
    const current = drawing();
    if (state.proposal && current?.attached) {
      for (const i of state.proposal) if (current.bitmap[i] === PROPOSAL) current.bitmap[i] = 0;
      current.refresh();
    }
    state.proposal = null;
    state.answer = null;
    renderButtons();
  }

  function showProposal(answer) {
    clearProposal();
    const current = drawing();
    if (!current?.attached) return;
    const voxels = proposalVoxels(answer.mask, drawingIndexer(current.volume, current.dims));
    paint(current.bitmap, voxels.filter((i) => current.bitmap[i] === 0), PROPOSAL);
    state.proposal = voxels;
    state.answer = answer;
    current.refresh();
    status(describe(answer));
    renderButtons();
  }

  function accept() {
    const current = drawing();
    if (!state.proposal || !current?.attached) return;
    current.history.begin(current.bitmap);
    paint(current.bitmap, state.proposal, 1);
    if (current.history.commit(current.bitmap)) current.changed();
    current.refresh();
    // What the save reports as the ROI's provenance (portal/api/assistant.py, accepted()).
    const proposal = state.answer.model ? { model: state.answer.model.id } : { tool: state.answer.tool, interactions: state.answer.interactions };
    tool.current.accepted = [...(tool.current.accepted ?? []), proposal];
    const voxels = state.proposal.length;
    state.proposal = null;
    state.answer = null;
    renderButtons();
    status(`accepted ${voxels} voxels into ${tool.current.label}; save to keep them`);
    forget({ quiet: true });
  }

  // --- requests, one at a time and in the order the user made them ---

  function ask(mode, body, { quiet = false } = {}) {
    const current = drawing();
    if (!current) return state.queue;
    const url = `/projects/${project}/files/${current.fileId}/assistant/${mode}`;
    if (!quiet) status("asking the assistant…");
    state.queue = state.queue.then(async () => {
      try {
        const answer = await api(url, { method: "POST", json: { session: state.session, ...body } });
        // A model's proposal takes no clicks: nothing for the assistant to forget.
        if (mode !== "model") state.clicked = !answer.reset;
        if (answer.reset) {
          clearProposal();
          if (!quiet) status("reset: the assistant forgot your clicks on this image");
        } else if (drawing() === current) {
          showProposal(answer);
        }
      } catch (error) {
        status(error.message ?? String(error), true);
      }
    });
    return state.queue;
  }

  // The assistant forgets this page's clicks on the current image (a new ROI starts afresh).
  function forget({ quiet = false } = {}) {
    if (!state.clicked || !drawing()) return state.queue;
    state.clicked = false;
    return ask(state.mode || "points", { reset: true }, { quiet });
  }

  // --- the mouse, while a tool is chosen ---

  function listen(on) {
    state.listeners?.abort();
    state.listeners = null;
    overlay.remove();
    const current = drawing();
    if (!on || !current) return;
    state.listeners = new AbortController();
    const options = { capture: true, signal: state.listeners.signal };
    const node = current.viewport.node;
    node.append(overlay);
    node.classList.add("roi-assisting");
    state.listeners.signal.addEventListener("abort", () => node.classList.remove("roi-assisting"));
    node.addEventListener("mousedown", down, options);
    node.addEventListener("mousemove", move, options);
    node.addEventListener("contextmenu", (e) => e.preventDefault(), options);
    window.addEventListener("mouseup", up, { signal: state.listeners.signal });
  }

  function down(event) {
    const current = drawing();
    if (event.shiftKey || !current?.attached || (event.button !== 0 && event.button !== 2)) return;
    const where = current.locate(event);
    if (!where) return;
    event.preventDefault();
    event.stopPropagation();
    const chosen = $("roi-assist-label").value;
    const label = event.button === 0 ? chosen : OTHER[chosen];
    if (state.mode === "points") {
      ask("points", { [label]: [fileVoxel(current.volume, where.voxel)] });
      return;
    }
    state.gesture = { label, tile: where.tile, plane: where.plane, start: where, last: where, voxels: [where.voxel], css: [where.css] };
    drawGesture();
  }

  function move(event) {
    const gesture = state.gesture;
    if (!gesture) return;
    event.stopPropagation();
    const where = drawing()?.locate(event, gesture.tile);
    if (!where) return;
    if (state.mode === "scribbles") {
      const slice = gesture.start.voxel[gesture.plane];
      for (const point of strokePoints(gesture.last.voxel, where.voxel)) {
        point[gesture.plane] = slice;
        gesture.voxels.push(point);
      }
      gesture.css.push(where.css);
    }
    gesture.last = where;
    drawGesture();
  }

  function up() {
    const gesture = state.gesture;
    const current = drawing();
    state.gesture = null;
    drawGesture();
    if (!gesture || !current) return;
    if (state.mode === "scribbles") {
      const unique = [...new Map(gesture.voxels.map((v) => [v.join(","), v])).values()];
      ask("scribbles", { [`${gesture.label}_scribbles`]: unique.map((v) => fileVoxel(current.volume, v)) });
    } else if (state.mode === "box") {
      ask("box", { box: boxCorners(current, gesture).map((v) => fileVoxel(current.volume, v)) });
    }
  }

  // A box dragged on one slice reaches as far across the slice as its larger side (in mm), so that a
  // roughly round structure fits whatever view it was boxed in.
  function boxCorners(current, { plane, start, last }) {
    const [a, b] = PLANE_AXES[plane];
    const pixel = current.volume.pixDimsRAS.slice(1, 4);
    const side = Math.max(Math.abs(last.voxel[a] - start.voxel[a]) * pixel[a], Math.abs(last.voxel[b] - start.voxel[b]) * pixel[b]);
    const half = Math.round(side / 2 / pixel[plane]);
    const low = start.voxel.slice();
    const high = last.voxel.slice();
    low[plane] = Math.max(0, start.voxel[plane] - half);
    high[plane] = Math.min(current.dims[plane] - 1, start.voxel[plane] + half);
    return [low, high];
  }

  function drawGesture() {
    const gesture = state.gesture;
    const shapes = [];
    if (gesture && state.mode === "scribbles") {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", gesture.css.map((p) => p.join(",")).join(" "));
      line.classList.add(gesture.label);
      shapes.push(line);
    } else if (gesture && state.mode === "box") {
      const [x0, y0] = gesture.start.css;
      const [x1, y1] = gesture.last.css;
      const rect = document.createElementNS(SVG, "rect");
      for (const [name, value] of [["x", Math.min(x0, x1)], ["y", Math.min(y0, y1)], ["width", Math.abs(x1 - x0)], ["height", Math.abs(y1 - y0)]]) {
        rect.setAttribute(name, value);
      }
      shapes.push(rect);
    }
    overlay.replaceChildren(...shapes);
  }

  // --- controls ---

  function choose(mode) {
    state.mode = mode;
    $("roi-assist-tool").value = mode;
    for (const node of $("roi-assist").querySelectorAll("[data-assist]")) node.hidden = !node.dataset.assist.split(" ").includes(mode);
    if (mode) stopDrawing();
    listen(Boolean(mode) && state.available);
  }

  function renderButtons() {
    $("roi-assist-accept").disabled = !state.proposal;
  }

  const run = (action) => () => Promise.resolve().then(action).catch((error) => status(error.message ?? String(error), true));
  $("roi-assist-tool").addEventListener("change", run(() => choose($("roi-assist-tool").value)));
  $("roi-assist-accept").addEventListener("click", run(accept));
  $("roi-assist-run").addEventListener("click", run(() => ask("model", { model: Number($("roi-assist-model").value) })));
  $("roi-assist-reset").addEventListener("click", run(() => {
    clearProposal();
    state.clicked = true;
    return forget();
  }));
  choose("");
  renderButtons();
  check().catch((error) => status(`unavailable: ${error.message ?? error}`, true));

  return {
    // The pens take the mouse back.
    stop: () => choose(""),
    // The current ROI closes or changes: its proposal and the assistant's clicks go with it.
    close() {
      clearProposal();
      forget({ quiet: true });
      choose("");
    },
    state,
    accept,
  };
}

export function assistantField(current) {
  return current?.accepted?.length ? JSON.stringify(current.accepted) : null;
}
