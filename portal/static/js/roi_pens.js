// The ROI tool's pens as pure functions over typed arrays, after NORA's ROI tool: no NiiVue,
// no DOM, so each pen can be reasoned about (and tried in node) on its own.
//
// Conventions shared by every function here:
// - a volume is a flat array in x-fastest order with dims [nx, ny, nz] (the viewer passes NiiVue's
//   RAS-reoriented order, the order of its drawing bitmap; nothing here depends on which);
// - a voxel is [x, y, z] integers; `index(voxel, dims)` is its place in the flat array;
// - a plane is the axis held fixed while drawing: 2 for axial (x, y vary), 1 for coronal (x, z),
//   0 for sagittal (y, z); pens that work "within the pen radius" work in that slice only;
// - intensities are read through `valueAt(i)` = data[i] * slope + inter, the calibrated values the
//   window limits (cal_min / cal_max) are given in;
// - a pen returns the flat indices of the voxels it would set, as an Int32Array, and never writes:
//   the caller paints them (value 1) or erases them (value 0), previews them, or records them for undo.

export const PLANE_AXES = { 2: [0, 1], 1: [0, 2], 0: [1, 2] };

export function index([x, y, z], [nx, ny]) {
  return x + nx * (y + ny * z);
}

export function voxelOf(i, [nx, ny]) {
  return [i % nx, Math.floor(i / nx) % ny, Math.floor(i / (nx * ny))];
}

function inside(voxel, dims) {
  return voxel[0] >= 0 && voxel[1] >= 0 && voxel[2] >= 0 && voxel[0] < dims[0] && voxel[1] < dims[1] && voxel[2] < dims[2];
}

export function scaled(data, slope = 1, inter = 0) {
  // NIfTI leaves scl_slope 0 to mean "no scaling".
  const s = slope || 1;
  return (i) => data[i] * s + inter;
}

// The in-plane offsets of a disk of `radius` voxels: radius 0 is one voxel, 1 the 3×3 square. r² + r
// rather than r² keeps small disks from looking like plus signs.
export function diskOffsets(radius) {
  const r = Math.max(0, Math.floor(radius));
  const offsets = [];
  for (let dv = -r; dv <= r; dv++) {
    for (let du = -r; du <= r; du++) if (du * du + dv * dv <= r * r + r) offsets.push([du, dv]);
  }
  return offsets;
}

function inPlane(centre, plane, du, dv) {
  const [a, b] = PLANE_AXES[plane];
  const voxel = centre.slice();
  voxel[a] += du;
  voxel[b] += dv;
  return voxel;
}

// The free pen: every voxel of the disk around `centre` in the slice.
export function diskVoxels(dims, centre, plane, radius) {
  const out = [];
  for (const [du, dv] of diskOffsets(radius)) {
    const voxel = inPlane(centre, plane, du, dv);
    if (inside(voxel, dims)) out.push(index(voxel, dims));
  }
  return Int32Array.from(out);
}

// The voxels of the disk that pass `keep(i)`; with `connected`, only those reachable from the centre
// through kept voxels (4-neighbours in the slice, inside the disk): NORA's RGrow pens and connected
// magic pen. The centre itself must pass, else nothing is drawn.
export function diskWhere(dims, centre, plane, radius, keep, connected) {
  if (!inside(centre, dims)) return new Int32Array();
  if (!connected) return diskVoxels(dims, centre, plane, radius).filter((i) => keep(i));
  const r = Math.max(0, Math.floor(radius));
  const limit = r * r + r;
  const side = 2 * r + 1;
  const seen = new Uint8Array(side * side);
  const out = [];
  const first = index(centre, dims);
  if (!keep(first)) return new Int32Array();
  const queue = [[0, 0]];
  seen[r * side + r] = 1;
  while (queue.length) {
    const [du, dv] = queue.pop();
    out.push(index(inPlane(centre, plane, du, dv), dims));
    for (const [eu, ev] of [[du + 1, dv], [du - 1, dv], [du, dv + 1], [du, dv - 1]]) {
      if (eu * eu + ev * ev > limit || seen[(ev + r) * side + eu + r]) continue;
      seen[(ev + r) * side + eu + r] = 1;
      const voxel = inPlane(centre, plane, eu, ev);
      if (inside(voxel, dims) && keep(index(voxel, dims))) queue.push([eu, ev]);
    }
  }
  return Int32Array.from(out);
}

// The threshold pen: voxels of the disk above (or below) `threshold`, optionally connected to the centre.
export function thresholdVoxels(dims, centre, plane, radius, valueAt, { threshold, above = true, connected = false }) {
  const keep = above ? (i) => valueAt(i) > threshold : (i) => valueAt(i) < threshold;
  return diskWhere(dims, centre, plane, radius, keep, connected);
}

// The magic pen: voxels of the disk whose intensity is within `tolerance` of the centre voxel's.
export function magicVoxels(dims, centre, plane, radius, valueAt, { tolerance, connected = false }) {
  if (!inside(centre, dims)) return new Int32Array();
  const reference = valueAt(index(centre, dims));
  return diskWhere(dims, centre, plane, radius, (i) => Math.abs(valueAt(i) - reference) <= tolerance, connected);
}

// The similarity tolerance of the magic pen and region growing: a fraction of the window width, so
// that "similar" follows the contrast the user is looking at, as in NORA.
export function windowTolerance(fraction, calMin, calMax) {
  return Math.max(0, fraction) * Math.abs(calMax - calMin);
}

// Unconstrained 3D region growing: 6-connected flood fill from `seed` over voxels within `tolerance`
// of the seed's intensity. It stops after `budget` voxels (then `truncated` is true) so that a
// tolerance wide enough to leak into the whole volume stays responsive while the user drags.
// `scratch` (a Uint8Array of the volume's size, all zero) may be passed to avoid allocating one per
// call; it is left all zero again.
export function growRegion(dims, seed, valueAt, { tolerance, budget = 2_000_000, scratch = null }) {
  if (!inside(seed, dims)) return { voxels: new Int32Array(), truncated: false };
  const [nx, ny, nz] = dims;
  const plane = nx * ny;
  const seen = scratch ?? new Uint8Array(nx * ny * nz);
  const start = index(seed, dims);
  const reference = valueAt(start);
  const low = reference - tolerance;
  const high = reference + tolerance;
  const found = new Int32Array(Math.min(budget, nx * ny * nz));
  let count = 0;
  let head = 0;
  let truncated = false;
  seen[start] = 1;
  found[count++] = start;
  // `found` doubles as the queue: voxels are appended once, visited in order.
  while (head < count) {
    const i = found[head++];
    const x = i % nx;
    const y = Math.floor(i / nx) % ny;
    const z = Math.floor(i / plane);
    const neighbours = [
      x > 0 ? i - 1 : -1, x < nx - 1 ? i + 1 : -1,
      y > 0 ? i - nx : -1, y < ny - 1 ? i + nx : -1,
      z > 0 ? i - plane : -1, z < nz - 1 ? i + plane : -1,
    ];
    for (const j of neighbours) {
      if (j < 0 || seen[j]) continue;
      seen[j] = 1;
      const v = valueAt(j);
      if (v < low || v > high) continue;
      if (count === found.length) {
        truncated = true;
        break;
      }
      found[count++] = j;
    }
    if (truncated) break;
  }
  // Reset only what was touched: the visited voxels and their neighbours.
  if (scratch) {
    for (let k = 0; k < count; k++) {
      const i = found[k];
      scratch[i] = 0;
      for (const j of [i - 1, i + 1, i - nx, i + nx, i - plane, i + plane]) if (j >= 0 && j < scratch.length) scratch[j] = 0;
    }
  }
  return { voxels: found.slice(0, count), truncated };
}

// A polygon in the slice `slice` of `plane`, its points [u, v] in continuous voxel coordinates of the
// plane's two axes (voxel centres at integers): the voxels whose centres lie inside it (even-odd rule),
// found row by row.
export function polygonVoxels(dims, plane, slice, points) {
  if (points.length < 3) return new Int32Array();
  const [a, b] = PLANE_AXES[plane];
  const nu = dims[a];
  const nv = dims[b];
  const out = [];
  const vs = points.map((p) => p[1]);
  const vFrom = Math.max(0, Math.ceil(Math.min(...vs)));
  const vTo = Math.min(nv - 1, Math.floor(Math.max(...vs)));
  for (let v = vFrom; v <= vTo; v++) {
    const crossings = [];
    for (let k = 0; k < points.length; k++) {
      const [u0, v0] = points[k];
      const [u1, v1] = points[(k + 1) % points.length];
      // Half-open in v, so a vertex on the row counts once.
      if ((v0 <= v && v < v1) || (v1 <= v && v < v0)) crossings.push(u0 + ((v - v0) / (v1 - v0)) * (u1 - u0));
    }
    crossings.sort((p, q) => p - q);
    for (let k = 0; k + 1 < crossings.length; k += 2) {
      for (let u = Math.max(0, Math.ceil(crossings[k])); u <= Math.min(nu - 1, Math.floor(crossings[k + 1])); u++) {
        const voxel = [0, 0, 0];
        voxel[plane] = slice;
        voxel[a] = u;
        voxel[b] = v;
        out.push(index(voxel, dims));
      }
    }
  }
  return Int32Array.from(out);
}

// The centres of the steps from voxel `from` to voxel `to` (both included), one voxel apart along the
// longest axis: a fast stroke paints a continuous line, not dots where mouse events happened to land.
export function strokePoints(from, to) {
  const steps = Math.max(1, ...from.map((c, k) => Math.abs(to[k] - c)));
  const points = [];
  for (let s = 0; s <= steps; s++) points.push(from.map((c, k) => Math.round(c + ((to[k] - c) * s) / steps)));
  return points;
}

export function paint(bitmap, voxels, value) {
  for (const i of voxels) bitmap[i] = value;
}

export function countOn(bitmap) {
  let n = 0;
  for (let i = 0; i < bitmap.length; i++) if (bitmap[i] === 1) n++;
  return n;
}

// The mean voxel of the mask (value 1), or null when it is empty.
export function centreOfGravity(bitmap, dims) {
  const [nx, ny] = dims;
  let n = 0;
  let sx = 0;
  let sy = 0;
  let sz = 0;
  for (let i = 0; i < bitmap.length; i++) {
    if (bitmap[i] !== 1) continue;
    n++;
    sx += i % nx;
    sy += Math.floor(i / nx) % ny;
    sz += Math.floor(i / (nx * ny));
  }
  return n ? [sx / n, sy / n, sz / n] : null;
}

// Undo and redo as sparse deltas: each step keeps only the voxels it changed (their values before and
// after), so a long session on a large volume does not hold a full copy per stroke.
export class History {
  constructor(limit = 100) {
    this.limit = limit;
    this.undoSteps = [];
    this.redoSteps = [];
    this.before = null;
  }

  begin(bitmap) {
    this.before = bitmap.slice();
  }

  // Records what changed since begin(); false when nothing did.
  commit(bitmap) {
    const before = this.before;
    this.before = null;
    if (!before) return false;
    const changed = [];
    for (let i = 0; i < bitmap.length; i++) if (bitmap[i] !== before[i]) changed.push(i);
    if (!changed.length) return false;
    const voxels = Int32Array.from(changed);
    this.undoSteps.push({ voxels, old: voxels.map((i) => before[i]), now: voxels.map((i) => bitmap[i]) });
    if (this.undoSteps.length > this.limit) this.undoSteps.shift();
    this.redoSteps = [];
    return true;
  }

  undo(bitmap) {
    const step = this.undoSteps.pop();
    if (!step) return false;
    step.voxels.forEach((i, k) => (bitmap[i] = step.old[k]));
    this.redoSteps.push(step);
    return true;
  }

  redo(bitmap) {
    const step = this.redoSteps.pop();
    if (!step) return false;
    step.voxels.forEach((i, k) => (bitmap[i] = step.now[k]));
    this.undoSteps.push(step);
    return true;
  }

  reset() {
    this.undoSteps = [];
    this.redoSteps = [];
    this.before = null;
  }
}
