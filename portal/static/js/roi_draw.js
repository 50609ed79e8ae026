// The ROI tool's glue to NiiVue: one editable ROI lives in the drawing layer of one viewport, on the
// grid of that viewport's base image (the ROI's reference).
//
// NiiVue keeps its drawing bitmap in its own RAS-reoriented voxel order of the base volume (its
// `back.dims`), not necessarily the file's order. Everything here works in that order: mouse
// positions go through NiiVue's own screen → texture fraction → voxel mapping, saved masks are loaded
// with NiiVue's loadDrawing (which reorients the file into that order) and written with the base
// volume's saveToDisk (which reorients back to the file's order and writes the file's affine). So
// the mask we upload has the reference's grid voxel for voxel, whatever its orientation.
//
// NiiVue's own pen stays off (opts.drawingEnabled false): its left button draws but its right button
// adjusts contrast, and it has none of NORA's pens. Our mouse handlers run in the capture phase on the
// viewport and keep the events from NiiVue while drawing; with drawing off, or with shift held (as
// in NORA), NiiVue navigates as usual.
import {
  History, centreOfGravity, countOn, diskVoxels, growRegion, magicVoxels, paint, polygonVoxels, scaled,
  strokePoints, thresholdVoxels, windowTolerance, PLANE_AXES,
} from "./roi_pens.js";

const PREVIEW = 2;
const SVG = "http://www.w3.org/2000/svg";
// Screen pixels within which a click grabs a polygon point instead of adding one.
const GRAB_PX = 7;

export const PENS = {
  free: "free pen",
  threshold: "threshold pen",
  magic: "magic pen",
  magic_connected: "magic pen (connected)",
  grow: "3D region growing",
  polygon: "polygon",
};

export function hexToRgb(hex) {
  const value = /^#[0-9a-f]{6}$/i.test(hex ?? "") ? hex : "#ff0000";
  return [1, 3, 5].map((k) => parseInt(value.slice(k, k + 2), 16));
}

// NiiVue writes the base volume's header for a drawing: a 4D base (a series with several volumes)
// would give a 4D header over one volume of bytes, and its vox_offset ignores header extensions.
// The mask is one 3D volume: dims 3, the rest 1, and the data where the bytes really start.
function asMask3D(bytes, voxels) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  view.setInt16(40, 3, true);
  for (let k = 4; k < 8; k++) view.setInt16(40 + 2 * k, 1, true);
  view.setFloat32(108, bytes.byteLength - voxels, true);
  view.setInt16(68, 0, true);
  return bytes;
}

async function gzip(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export class Drawing {
  // viewport: viewer.js's Viewport (its `nv`, `node`, `layers`); settings: the panel's live pen settings.
  constructor(viewport, { settings, onChange, say, activate }) {
    this.viewport = viewport;
    this.nv = viewport.nv;
    this.volume = this.nv.volumes[0];
    this.fileId = viewport.layers[0].file_id;
    this.dims = Array.from(this.nv.back.dims.slice(1, 4));
    this.settings = settings;
    this.onChange = onChange;
    this.say = say;
    this.activate = activate;
    this.history = new History();
    this.enabled = false;
    this.dirty = false;
    this.stroke = null;
    this.preview = null;
    this.polygon = null;
    this.values = null;
    this.scratch = null;
    this.pending = false;
    this.listeners = new AbortController();
    this.overlay = document.createElementNS(SVG, "svg");
    this.overlay.classList.add("roi-polygon");
    viewport.node.append(this.overlay);
    const options = { capture: true, signal: this.listeners.signal };
    const node = viewport.node;
    node.addEventListener("mousedown", (e) => this.down(e), options);
    node.addEventListener("mousemove", (e) => this.move(e), options);
    node.addEventListener("dblclick", (e) => this.doubleClick(e), options);
    node.addEventListener("contextmenu", (e) => this.enabled && e.preventDefault(), options);
    node.addEventListener("mouseleave", () => this.clearPreview(), options);
    window.addEventListener("mouseup", () => this.up(), { signal: this.listeners.signal });
  }

  get bitmap() {
    return this.nv.drawBitmap;
  }

  // Whether this drawing still belongs to its viewport's base volume (opening another file replaces it).
  get attached() {
    return this.nv.volumes[0] === this.volume && this.bitmap?.length === this.dims[0] * this.dims[1] * this.dims[2];
  }

  // An empty drawing, or the mask at `url` (a NIfTI on the reference's grid) reoriented by NiiVue.
  async load(url, NVImage) {
    this.nv.setDrawingEnabled(false);
    if (url) {
      const image = await NVImage.loadFromUrl({ url, name: "mask.nii.gz" });
      // A stored ROI holds 0 and 1 only; anything else would become a second label in the drawing.
      for (let i = 0; i < image.img.length; i++) image.img[i] = image.img[i] ? 1 : 0;
      if (!this.nv.loadDrawing(image)) throw new Error("the ROI's grid does not match its reference image");
    } else {
      this.nv.createEmptyDrawing();
    }
    this.history.reset();
    this.dirty = false;
    this.refresh();
  }

  style({ colour, opacity, outline }) {
    const [r, g, b] = hexToRgb(colour);
    // Value 1 is the ROI; value 2 the live preview of the pen, a paler shade of the same colour.
    const pale = (c) => Math.round(c + (255 - c) * 0.55);
    this.nv.setDrawColormap({ R: [0, r, pale(r)], G: [0, g, pale(g)], B: [0, b, pale(b)], A: [0, 255, 200], I: [0, 1, 2] });
    // Outline: NiiVue draws the voxels at the ROI's edge at drawRimOpacity and the inside at
    // drawOpacity, which then only needs to be above zero for the edge to be found.
    this.nv.drawRimOpacity = outline ? opacity : -1;
    this.nv.setDrawOpacity(outline ? 0.02 : opacity);
  }

  setEnabled(on) {
    this.enabled = on;
    this.viewport.node.classList.toggle("roi-drawing", on);
    if (!on) {
      this.clearPreview();
      this.cancelPolygon();
    }
  }

  // The base volume's calibrated intensities in the drawing's voxel order, for the displayed frame.
  intensities() {
    const volume = this.volume;
    const frame = volume.frame4D ?? 0;
    if (this.values?.frame !== frame) {
      const voxels = this.dims[0] * this.dims[1] * this.dims[2];
      let data = volume.img2RAS(frame);
      // For a volume already in RAS order NiiVue hands back all frames.
      if (data.length > voxels) data = data.subarray(frame * voxels, (frame + 1) * voxels);
      this.values = { frame, valueAt: scaled(data, volume.hdr.scl_slope, volume.hdr.scl_inter) };
    }
    return this.values.valueAt;
  }

  threshold() {
    const { thresholdSource, thresholdValue } = this.settings;
    if (thresholdSource === "low") return this.volume.cal_min;
    if (thresholdSource === "high") return this.volume.cal_max;
    return Number(thresholdValue);
  }

  tolerance(fraction = this.settings.similarity) {
    return windowTolerance(fraction, this.volume.cal_min, this.volume.cal_max);
  }

  // The voxels the current pen takes at `voxel` in the slice across axis `plane`.
  penVoxels(voxel, plane) {
    const { pen, radius, above, connected } = this.settings;
    if (pen === "threshold") {
      return thresholdVoxels(this.dims, voxel, plane, radius, this.intensities(), { threshold: this.threshold(), above, connected });
    }
    if (pen === "magic" || pen === "magic_connected") {
      return magicVoxels(this.dims, voxel, plane, radius, this.intensities(), {
        tolerance: this.tolerance(), connected: pen === "magic_connected",
      });
    }
    return diskVoxels(this.dims, voxel, plane, radius);
  }

  // Where a mouse event falls: the 2D tile, the axis across it, the voxel (drawing order), the
  // continuous voxel coordinates and the canvas position in CSS pixels. Null outside a 2D slice.
  locate(event, tile = null) {
    const nv = this.nv;
    const pos = nv.getNoPaddingNoBorderCanvasRelativeMousePosition(event, nv.gl.canvas);
    if (!pos) return null;
    const dpr = nv.uiData.dpr;
    const x = pos.x * dpr;
    const y = pos.y * dpr;
    const index = tile ?? nv.tileIndex(x, y);
    const slice = nv.screenSlices[index];
    if (index < 0 || !slice || slice.axCorSag > 2) return null;
    const frac = nv.screenXY2TextureFrac(x, y, index, true);
    if (frac[0] < 0) return null;
    const voxel = Array.from(nv.frac2vox(frac));
    const exact = [0, 1, 2].map((k) => frac[k] * this.dims[k] - 0.5);
    return { tile: index, plane: 2 - slice.axCorSag, voxel, exact, css: [pos.x, pos.y] };
  }

  down(event) {
    if (!this.enabled || event.shiftKey || !this.attached) return;
    if (event.button !== 0 && event.button !== 2) return;
    const where = this.locate(event);
    if (!where) return;
    event.preventDefault();
    event.stopPropagation();
    // preventDefault keeps the focus where it was: a field of the panel would swallow the keys.
    if (document.activeElement?.matches?.("input, select, textarea")) document.activeElement.blur();
    this.activate(this.viewport);
    this.clearPreview();
    if (this.settings.pen === "polygon") return this.polygonDown(where, event);
    const value = event.button === 0 ? 1 : 0;
    this.history.begin(this.bitmap);
    this.stroke = { value, tile: where.tile, plane: where.plane, last: where.voxel, painted: null };
    if (this.settings.pen === "grow") {
      Object.assign(this.stroke, { seed: where.voxel, x0: event.clientX, fraction: this.settings.similarity });
      this.regrow(this.settings.similarity);
    } else {
      paint(this.bitmap, this.penVoxels(where.voxel, where.plane), value);
    }
    this.refresh();
  }

  move(event) {
    if (!this.enabled || !this.attached) return;
    if (this.polygon?.drag) return this.polygonMove(event);
    if (!this.stroke) {
      if (this.settings.preview && !event.shiftKey && !this.polygon) this.showPreview(this.locate(event));
      return;
    }
    event.stopPropagation();
    const stroke = this.stroke;
    if (this.settings.pen === "grow") {
      // NORA: dragging left / right while the button is held narrows / widens the similarity.
      this.regrow(Math.min(1, Math.max(0, stroke.fraction + (event.clientX - stroke.x0) / 400)));
      this.refresh();
      return;
    }
    const where = this.locate(event, stroke.tile);
    if (!where) return;
    const slice = stroke.last[stroke.plane];
    for (const point of strokePoints(stroke.last, where.voxel)) {
      point[stroke.plane] = slice;
      paint(this.bitmap, this.penVoxels(point, stroke.plane), stroke.value);
    }
    stroke.last = where.voxel;
    this.refresh();
  }

  up() {
    if (this.polygon?.drag) {
      this.polygon.drag = null;
      return;
    }
    if (!this.stroke) return;
    this.stroke = null;
    if (this.history.commit(this.bitmap)) this.changed();
  }

  // Region growing from the stroke's seed at similarity `fraction` of the window width: the previous
  // growth is undone first, so that dragging re-grows from the same start.
  regrow(fraction) {
    const stroke = this.stroke;
    const before = this.history.before;
    if (stroke.painted) for (const i of stroke.painted) this.bitmap[i] = before[i];
    const voxels = this.dims[0] * this.dims[1] * this.dims[2];
    if (this.scratch?.length !== voxels) this.scratch = new Uint8Array(voxels);
    const { voxels: grown, truncated } = growRegion(this.dims, stroke.seed, this.intensities(), {
      tolerance: this.tolerance(fraction), budget: this.settings.budget, scratch: this.scratch,
    });
    paint(this.bitmap, grown, stroke.value);
    stroke.painted = grown;
    this.say(`region growing: similarity ${Math.round(fraction * 100)} % of the window, ${grown.length} voxels`
      + (truncated ? ` (stopped at the budget of ${this.settings.budget})` : ""));
  }

  showPreview(where) {
    this.clearPreview(false);
    if (where && this.settings.pen !== "grow" && this.settings.pen !== "polygon") {
      const voxels = this.penVoxels(where.voxel, where.plane).filter((i) => this.bitmap[i] === 0);
      paint(this.bitmap, voxels, PREVIEW);
      this.preview = voxels;
    }
    this.refresh();
  }

  // The preview is never part of the ROI: it is taken out before anything reads or records the bitmap.
  clearPreview(redraw = true) {
    if (!this.preview) return;
    for (const i of this.preview) if (this.bitmap[i] === PREVIEW) this.bitmap[i] = 0;
    this.preview = null;
    if (redraw) this.refresh();
  }

  // --- polygon: points in one slice, movable until the polygon is rendered into the ROI ---

  polygonDown(where, event) {
    const polygon = this.polygon;
    if (polygon && (polygon.tile !== where.tile || polygon.slice !== where.voxel[polygon.plane])) this.cancelPolygon();
    if (!this.polygon) {
      this.polygon = { tile: where.tile, plane: where.plane, slice: where.voxel[where.plane], points: [], drag: null };
    }
    const near = this.polygon.points.findIndex((p) => Math.hypot(p.css[0] - where.css[0], p.css[1] - where.css[1]) <= GRAB_PX);
    if (near >= 0) {
      this.polygon.drag = { point: near };
    } else {
      this.polygon.points.push(this.polygonPoint(where));
      // Holding the button down traces the outline: points follow the mouse.
      this.polygon.drag = { trace: true, button: event.button };
    }
    this.drawPolygon();
  }

  polygonPoint(where) {
    const [a, b] = PLANE_AXES[this.polygon.plane];
    return { css: where.css, uv: [where.exact[a], where.exact[b]] };
  }

  polygonMove(event) {
    event.stopPropagation();
    const polygon = this.polygon;
    const where = this.locate(event, polygon.tile);
    if (!where) return;
    if (polygon.drag.trace) {
      const last = polygon.points[polygon.points.length - 1];
      if (Math.hypot(last.css[0] - where.css[0], last.css[1] - where.css[1]) > 2 * GRAB_PX) polygon.points.push(this.polygonPoint(where));
    } else {
      polygon.points[polygon.drag.point] = this.polygonPoint(where);
    }
    this.drawPolygon();
  }

  doubleClick(event) {
    if (!this.enabled || this.settings.pen !== "polygon" || !this.polygon) return;
    event.preventDefault();
    event.stopPropagation();
    this.finishPolygon(1);
  }

  // Renders the polygon into the ROI (value 1) or erases its inside (value 0).
  finishPolygon(value) {
    const polygon = this.polygon;
    if (!polygon) return false;
    this.cancelPolygon();
    if (polygon.points.length < 3) {
      this.say("a polygon needs three points");
      return false;
    }
    this.history.begin(this.bitmap);
    paint(this.bitmap, polygonVoxels(this.dims, polygon.plane, polygon.slice, polygon.points.map((p) => p.uv)), value);
    if (this.history.commit(this.bitmap)) this.changed();
    this.refresh();
    return true;
  }

  removeLastPoint() {
    this.polygon?.points.pop();
    this.drawPolygon();
  }

  cancelPolygon() {
    this.polygon = null;
    this.drawPolygon();
  }

  drawPolygon() {
    const points = this.polygon?.points ?? [];
    const shapes = [];
    if (points.length) {
      const outline = document.createElementNS(SVG, "polygon");
      outline.setAttribute("points", points.map((p) => p.css.join(",")).join(" "));
      shapes.push(outline);
      for (const p of points) {
        const dot = document.createElementNS(SVG, "circle");
        dot.setAttribute("cx", p.css[0]);
        dot.setAttribute("cy", p.css[1]);
        dot.setAttribute("r", 3.5);
        shapes.push(dot);
      }
    }
    this.overlay.replaceChildren(...shapes);
  }

  // --- whole-ROI actions ---

  undo() {
    this.clearPreview(false);
    if (this.history.undo(this.bitmap)) this.changed();
    else this.say("nothing to undo");
    this.refresh();
  }

  redo() {
    this.clearPreview(false);
    if (this.history.redo(this.bitmap)) this.changed();
    else this.say("nothing to redo");
    this.refresh();
  }

  clear() {
    this.clearPreview(false);
    this.history.begin(this.bitmap);
    this.bitmap.fill(0);
    if (this.history.commit(this.bitmap)) this.changed();
    this.refresh();
  }

  changed() {
    this.dirty = true;
    this.onChange?.(this);
  }

  voxelCount() {
    return this.bitmap ? countOn(this.bitmap) : 0;
  }

  // The centre of gravity in world millimetres (NIfTI RAS+, NiiVue's mm), or null for an empty ROI.
  centreMM() {
    this.clearPreview(false);
    const centre = centreOfGravity(this.bitmap, this.dims);
    if (!centre) return null;
    return Array.from(this.nv.frac2mm(this.nv.vox2frac(centre), 0, true)).slice(0, 3);
  }

  // The ROI as a gzipped NIfTI on the reference's grid (values 0 and 1), through NiiVue's writer.
  async maskFile() {
    this.clearPreview();
    const binary = this.bitmap.map((v) => (v === 1 ? 1 : 0));
    const written = await this.volume.saveToDisk("", binary);
    return gzip(asMask3D(written, binary.length));
  }

  // Texture uploads once per animation frame, however many mouse events arrive in it.
  refresh() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      if (this.attached) this.nv.refreshDrawing(true);
    });
  }

  detach() {
    this.listeners.abort();
    this.overlay.remove();
    this.viewport.node.classList.remove("roi-drawing");
    // Also after the base volume was replaced: the bitmap has the old grid's size.
    this.nv.closeDrawing();
  }
}
