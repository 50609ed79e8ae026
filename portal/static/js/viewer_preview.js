// A first look at a NIfTI volume while NiiVue loads it: the slices through the volume's centre,
// drawn from the decoded voxels onto a 2D canvas over the viewport. Without a GPU, NiiVue's
// texture upload and first draw take a second or more of CPU; this takes milliseconds and needs
// no NiiVue at all (on a first visit its code is still compiling).
//
// The slices are laid out as NiiVue lays out its views and oriented as NiiVue shows them by
// default: world (scanner RAS) planes, so an oblique volume appears tilted as it does in NiiVue;
// the patient's right on the screen's right, anterior up on the axial slice, superior up on the
// coronal and sagittal ones, anterior on the right of the sagittal one. The affine is the one
// NiiVue takes (the qform where its code beats the sform's). Grey, in the layer's window, the
// header's calibrated range or else the 2nd to 98th percentile, as NiiVue's first window.

// NIfTI-1 datatype codes and the arrays their voxels read into (RGB and complex are not previewed).
const VOXEL_TYPES = new Map([
  [2, Uint8Array], [4, Int16Array], [8, Int32Array], [16, Float32Array], [64, Float64Array],
  [256, Int8Array], [512, Uint16Array], [768, Uint32Array],
]);
// NiiVue's view codes (its SLICE_TYPE): the three planes alone, multiplanar, 3D render.
export const SliceType = Object.freeze({ AXIAL: 0, CORONAL: 1, SAGITTAL: 2, MULTIPLANAR: 3, RENDER: 4 });
// Each plane: the world axis across the screen (left to right), the one up it, and the one it cuts.
const PLANES = {
  axial: { across: 0, up: 1, cut: 2 },
  coronal: { across: 0, up: 2, cut: 1 },
  sagittal: { across: 1, up: 2, cut: 0 },
};
const SAMPLES_FOR_WINDOW = 65536;

// The bytes of a .nii or .nii.gz, inflated if they are gzip.
export async function inflated(buffer) {
  const head = new Uint8Array(buffer, 0, Math.min(2, buffer.byteLength));
  if (head[0] !== 0x1f || head[1] !== 0x8b) return buffer;
  return new Response(new Blob([buffer]).stream().pipeThrough(new DecompressionStream("gzip"))).arrayBuffer();
}

function affineOK(affine) {
  const rows = affine.map((row) => row.slice(0, 3));
  return rows.flat().every(Number.isFinite) && [0, 1, 2].every((i) => rows[i].some((v) => v !== 0) && rows.some((row) => row[i] !== 0));
}

function qformAffine(view, pixdim) {
  const [b, c, d] = [256, 260, 264].map((at) => view.getFloat32(at, true));
  const a = Math.sqrt(Math.max(0, 1 - (b * b + c * c + d * d)));
  const qfac = pixdim[0] === 0 ? 1 : pixdim[0];
  const rotation = [
    [a * a + b * b - c * c - d * d, 2 * b * c - 2 * a * d, 2 * b * d + 2 * a * c],
    [2 * b * c + 2 * a * d, a * a + c * c - b * b - d * d, 2 * c * d - 2 * a * b],
    [2 * b * d - 2 * a * c, 2 * c * d + 2 * a * b, a * a + d * d - c * c - b * b],
  ];
  const offset = [268, 272, 276].map((at) => view.getFloat32(at, true));
  return rotation.map((row, r) => [...row.map((v, i) => v * pixdim[i + 1] * (i === 2 ? qfac : 1)), offset[r]]);
}

// The voxel-to-world affine as NiiVue chooses it (nifti-reader's choice, then its own checks).
function affineOf(view, pixdim) {
  const [qformCode, sformCode] = [view.getInt16(252, true), view.getInt16(254, true)];
  const diagonal = [0, 1, 2].map((r) => [0, 1, 2, 3].map((i) => (i === r ? pixdim[r + 1] || 1 : 0)));
  let affine = diagonal;
  if (qformCode > 0 && sformCode < qformCode) affine = qformAffine(view, pixdim);
  else if (sformCode > 0) affine = [280, 296, 312].map((at) => [0, 1, 2, 3].map((i) => view.getFloat32(at + 4 * i, true)));
  if (!affineOK(affine)) affine = qformAffine(view, pixdim);
  return affineOK(affine) ? affine : diagonal;
}

// The first volume of a little-endian NIfTI-1 image; null for anything the preview leaves to NiiVue.
export function niftiVolume(buffer) {
  if (buffer.byteLength < 352) return null;
  const view = new DataView(buffer);
  if (view.getInt32(0, true) !== 348) return null;
  const dims = [1, 2, 3].map((i) => Math.max(1, view.getInt16(40 + 2 * i, true)));
  const Voxels = VOXEL_TYPES.get(view.getInt16(70, true));
  const offset = view.getFloat32(108, true);
  const count = dims[0] * dims[1] * dims[2];
  if (!Voxels || offset % Voxels.BYTES_PER_ELEMENT || offset + count * Voxels.BYTES_PER_ELEMENT > buffer.byteLength) return null;
  const pixdim = [0, 1, 2, 3].map((i) => view.getFloat32(76 + 4 * i, true));
  const slope = view.getFloat32(112, true);
  const inter = view.getFloat32(116, true);
  return {
    dims, voxels: new Voxels(buffer, offset, count), affine: affineOf(view, pixdim),
    slope: Number.isFinite(slope) && slope !== 0 ? slope : 1, inter: Number.isFinite(inter) ? inter : 0,
    calibrated: [view.getFloat32(128, true), view.getFloat32(124, true)],
  };
}

function inverse(affine) {
  const [[a, b, c, x], [d, e, f, y], [g, h, i, z]] = affine;
  const det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g);
  const m = [
    [(e * i - f * h) / det, (c * h - b * i) / det, (b * f - c * e) / det],
    [(f * g - d * i) / det, (a * i - c * g) / det, (c * d - a * f) / det],
    [(d * h - e * g) / det, (b * g - a * h) / det, (a * e - b * d) / det],
  ];
  return m.map((row) => [...row, -(row[0] * x + row[1] * y + row[2] * z)]);
}

const apply = (m, p) => m.map((row) => row[0] * p[0] + row[1] * p[1] + row[2] * p[2] + row[3]);

// The world box the volume's voxels fill (their outer faces), and its centre as NiiVue's first crosshair.
function worldBox(volume) {
  const low = [Infinity, Infinity, Infinity];
  const high = [-Infinity, -Infinity, -Infinity];
  for (const i of [-0.5, volume.dims[0] - 0.5]) for (const j of [-0.5, volume.dims[1] - 0.5]) for (const k of [-0.5, volume.dims[2] - 0.5]) {
    apply(volume.affine, [i, j, k]).forEach((v, axis) => {
      low[axis] = Math.min(low[axis], v);
      high[axis] = Math.max(high[axis], v);
    });
  }
  return { low, high, size: high.map((v, axis) => v - low[axis]), centre: apply(volume.affine, volume.dims.map((n) => (n - 1) / 2)) };
}

function windowOf(volume, range) {
  if (range) return range;
  const [low, high] = volume.calibrated;
  if (Number.isFinite(low) && Number.isFinite(high) && high > low) return [low, high];
  const step = Math.max(1, Math.floor(volume.voxels.length / SAMPLES_FOR_WINDOW));
  const samples = new Float64Array(Math.ceil(volume.voxels.length / step));
  for (let n = 0, at = 0; at < volume.voxels.length; n++, at += step) samples[n] = volume.voxels[at] * volume.slope + volume.inter;
  samples.sort();
  return [samples[Math.floor(0.02 * (samples.length - 1))], samples[Math.ceil(0.98 * (samples.length - 1))]];
}

// Where NiiVue puts its tiles (CSS pixels, at a scale in pixels per mm), for a view and a canvas size.
function layout(sliceType, size, width, height) {
  const [x, y, z] = size;
  const fit = (w, h) => Math.min(width / w, height / h);
  const single = { [SliceType.AXIAL]: ["axial", x, y], [SliceType.CORONAL]: ["coronal", x, z], [SliceType.SAGITTAL]: ["sagittal", y, z] }[sliceType];
  if (single) {
    const [plane, w, h] = single;
    const scale = fit(w, h);
    return [{ plane, left: (width - w * scale) / 2, top: (height - h * scale) / 2, scale }];
  }
  // Multiplanar: NiiVue's largest of a column, a row and a 2x2 grid; a column or a row keeps room
  // for its render tile where that costs no scale.
  const widest = Math.max(x, y, z);
  const column = [widest, y + z + z];
  const row = [x + x + y, Math.max(y, z)];
  const [byColumn, byRow, byGrid] = [fit(...column), fit(...row), fit(x + y, z + y)];
  let chosen = { kind: "grid", box: [x + y, z + y] };
  if (byColumn > byRow && byColumn > byGrid) {
    chosen = { kind: "column", box: fit(widest, y + z + z + widest) >= byColumn ? [widest, y + z + z + widest] : column };
  } else if (byRow > byGrid) {
    chosen = { kind: "row", box: fit(x + x + y + widest, row[1]) >= byRow ? [x + x + y + widest, row[1]] : row };
  }
  const scale = fit(...chosen.box);
  const left = (width - chosen.box[0] * scale) / 2;
  const top = (height - chosen.box[1] * scale) / 2;
  const at = (plane, dx, dy) => ({ plane, left: left + dx * scale, top: top + dy * scale, scale });
  if (chosen.kind === "column") return [at("axial", 0, 0), at("coronal", 0, y), at("sagittal", 0, y + z)];
  if (chosen.kind === "row") return [at("axial", 0, 0), at("coronal", x, 0), at("sagittal", x + x, 0)];
  return [at("coronal", 0, 0), at("sagittal", x, 0), at("axial", 0, z)];
}

// Draws one plane through the centre into the canvas, nearest voxel, grey in the window.
function drawPlane(context, volume, box, toVoxel, tile, range, ratio) {
  const { across, up, cut } = PLANES[tile.plane];
  const width = Math.max(1, Math.round(box.size[across] * tile.scale * ratio));
  const height = Math.max(1, Math.round(box.size[up] * tile.scale * ratio));
  const image = context.createImageData(width, height);
  const [d0, d1, d2] = volume.dims;
  const [low, high] = range;
  const gain = 255 / (high - low || 1);
  // Along a row, the voxel position moves by a constant step: one product per row, not per pixel.
  const stepMM = box.size[across] / width;
  const step = toVoxel.map((row) => row[across] * stepMM);
  const point = [0, 0, 0];
  point[cut] = box.centre[cut];
  point[across] = box.low[across] + 0.5 * stepMM;
  const data = image.data;
  for (let row = 0; row < height; row++) {
    point[up] = box.high[up] - ((row + 0.5) / height) * box.size[up];
    const [i0, j0, k0] = apply(toVoxel, point);
    for (let column = 0, pixel = 4 * row * width; column < width; column++, pixel += 4) {
      data[pixel + 3] = 255;
      const i = Math.round(i0 + column * step[0]);
      const j = Math.round(j0 + column * step[1]);
      const k = Math.round(k0 + column * step[2]);
      if (i < 0 || j < 0 || k < 0 || i >= d0 || j >= d1 || k >= d2) continue;
      const value = volume.voxels[i + d0 * (j + d1 * k)] * volume.slope + volume.inter;
      data[pixel] = data[pixel + 1] = data[pixel + 2] = (value - low) * gain;
    }
  }
  context.putImageData(image, Math.round(tile.left * ratio), Math.round(tile.top * ratio));
  return { plane: tile.plane, left: Math.round(tile.left * ratio), top: Math.round(tile.top * ratio), width, height };
}

// A canvas laid over a viewport's NiiVue canvas that shows a volume's central slices until
// NiiVue has drawn it. ``drawn`` is the key of the volume drawn last and ``tiles`` where each of
// its planes went (canvas pixels), for a test to read.
export class Preview {
  constructor() {
    this.canvas = document.createElement("canvas");
    this.canvas.className = "preview";
    // The portal's style sheet sizes a viewport's canvases; the display, not the hidden attribute, hides this one.
    Object.assign(this.canvas.style, { position: "absolute", inset: "0", pointerEvents: "none", display: "none" });
    this.key = null;
    this.drawn = null;
    this.tiles = [];
  }

  // Draws the volume if it is one the preview reads and not the one drawn last (by key); true when it drew.
  show(key, buffer, { sliceType = SliceType.MULTIPLANAR, window: range = null } = {}) {
    if (this.key === key) return false;
    this.key = key;
    const volume = niftiVolume(buffer);
    const host = this.canvas.parentElement;
    if (!volume || !host || !host.clientWidth || !host.clientHeight) return false;
    const ratio = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(host.clientWidth * ratio);
    this.canvas.height = Math.round(host.clientHeight * ratio);
    const context = this.canvas.getContext("2d");
    context.fillStyle = "#000";
    context.fillRect(0, 0, this.canvas.width, this.canvas.height);
    const box = worldBox(volume);
    const toVoxel = inverse(volume.affine);
    const shown = windowOf(volume, range);
    this.tiles = layout(sliceType, box.size, host.clientWidth, host.clientHeight)
      .map((tile) => drawPlane(context, volume, box, toVoxel, tile, shown, ratio));
    this.canvas.style.display = "block";
    this.drawn = key;
    return true;
  }

  hide() {
    this.canvas.style.display = "none";
    this.key = null;
  }
}

// Resolves once the page has painted what was drawn before the call.
export function painted() {
  return new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
}
