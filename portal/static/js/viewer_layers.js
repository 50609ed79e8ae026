// What the viewer opens besides NIfTI: how each kind of file the archive records is opened
// (a volume, a surface mesh or a tractogram), the checks a mesh or tract file passes before NiiVue
// reads it, and the warnings a tractogram earns when its space disagrees with the open volume.
import { inflated } from "./viewer_preview.js";

// The navigation tool's display grid: an invisible empty volume put under a viewport's images so
// that NiiVue draws them on its grid. It is no image of the study: windowing, drawing and the
// checks against "the volume" go by the first volume that is not it.
export const DISPLAY_GRID = "northanc-display-grid.nii";

export const LayerType = Object.freeze({ VOLUME: "volume", MESH: "mesh", TRACT: "tract" });

// By the archive's file kinds (FileKind's values); a kind not named here is tried as a volume.
const LAYER_OF_KIND = new Map([
  ["nifti", LayerType.VOLUME], ["roi", LayerType.VOLUME], ["nrrd", LayerType.VOLUME], ["mgh", LayerType.VOLUME],
  ["gifti", LayerType.MESH], ["stl", LayerType.MESH], ["obj", LayerType.MESH], ["fs-surface", LayerType.MESH],
  ["tck", LayerType.TRACT], ["trk", LayerType.TRACT],
]);

export function layerType(kind) {
  return LAYER_OF_KIND.get(kind) ?? LayerType.VOLUME;
}

// The kinds that make a study's first volume where it has no NIfTI.
export const VOLUME_KINDS = new Set([...LAYER_OF_KIND].filter(([, type]) => type === LayerType.VOLUME).map(([kind]) => kind));

const TRK_MAGIC = "TRACK";
const TRK_HEADER = 1000;
const FREESURFER_TRIANGLES = 0xfffffe;

class FormatError extends Error {}

function ascii(bytes, start, end) {
  return new TextDecoder("latin1").decode(new Uint8Array(bytes, start, Math.max(0, Math.min(end, bytes.byteLength) - start)));
}

// NiiVue reads a TCK's points as little-endian whatever its header says; a big-endian file is
// turned around here, and a file without MRtrix's header refused.
function checkTck(bytes) {
  const head = ascii(bytes, 0, Math.min(bytes.byteLength, 1 << 16));
  const lines = head.split("\n");
  if (!lines[0].startsWith("mrtrix tracks")) throw new FormatError("not a TCK file: it does not begin with \"mrtrix tracks\"");
  if (!lines.some((line) => line.trim() === "END")) throw new FormatError("its header has no END line");
  const field = (name) => lines.find((line) => line.toLowerCase().startsWith(`${name}:`))?.slice(name.length + 1).trim();
  const datatype = field("datatype") ?? "";
  const offset = Number((field("file") ?? "").split(/\s+/).pop());
  if (!Number.isInteger(offset) || offset < 20 || offset > bytes.byteLength) throw new FormatError("its header names no valid data offset (file: . <offset>)");
  if (datatype !== "Float32LE" && datatype !== "Float32BE") throw new FormatError(`its points are ${datatype || "of no datatype"}; the viewer reads Float32LE and Float32BE`);
  if (datatype === "Float32LE") return bytes;
  const swapped = bytes.slice(0);
  const from = new DataView(bytes);
  const to = new DataView(swapped);
  for (let at = offset; at + 4 <= bytes.byteLength; at += 4) to.setFloat32(at, from.getFloat32(at, false), true);
  return swapped;
}

// TrackVis's header: the reference grid (dim, voxel size, voxel-to-RAS) and each streamline's size.
function trkHeader(bytes) {
  if (bytes.byteLength < TRK_HEADER || ascii(bytes, 0, 5) !== TRK_MAGIC) throw new FormatError("not a TRK file: it does not begin with TRACK and a 1000-byte header");
  const view = new DataView(bytes);
  if (view.getInt32(996, true) !== TRK_HEADER) {
    throw new FormatError(view.getInt32(996, false) === TRK_HEADER ? "a big-endian TRK, which NiiVue cannot read" : "its header size is not 1000");
  }
  const affine = [0, 1, 2, 3].map((row) => [0, 1, 2, 3].map((column) => view.getFloat32(440 + 4 * (4 * row + column), true)));
  return {
    dim: [6, 8, 10].map((at) => view.getInt16(at, true)),
    voxelSize: [12, 16, 20].map((at) => view.getFloat32(at, true)),
    scalars: view.getInt16(36, true),
    properties: view.getInt16(238, true),
    affine: affine[3][3] === 0 ? null : affine,
  };
}

// NiiVue walks a TRK by the sizes it finds in it: a size past the end would read garbage, or
// loop for a very long time. Each streamline must fit in what is left of the file.
function checkTrk(bytes) {
  const header = trkHeader(bytes);
  if ((bytes.byteLength - TRK_HEADER) % 4) throw new FormatError("its data is not a whole number of 4-byte values");
  const view = new DataView(bytes);
  const words = (bytes.byteLength - TRK_HEADER) / 4;
  const perPoint = 3 + header.scalars;
  let at = 0;
  let count = 0;
  while (at < words) {
    const points = view.getInt32(TRK_HEADER + 4 * at, true);
    count += 1;
    if (points < 1 || at + 1 + points * perPoint + header.properties > words) {
      throw new FormatError(`streamline ${count} (${points} points) does not fit in the file: truncated or corrupt`);
    }
    at += 1 + points * perPoint + header.properties;
  }
  if (!count) throw new FormatError("it holds no streamline");
  return bytes;
}

// NiiVue's FreeSurfer reader allocates what the header's counts say before reading: a count past
// the end of the file is refused here instead. It also reads a tag after the triangles (where
// FreeSurfer keeps the volume geometry, whose centre it adds to every vertex), which other writers
// leave out: such a file gets an empty tag, else NiiVue reads past its end.
function checkFreeSurfer(bytes) {
  const view = new DataView(bytes);
  if (bytes.byteLength < 3 || (view.getUint32(0, false) >>> 8) !== FREESURFER_TRIANGLES) {
    throw new FormatError("not a FreeSurfer triangle surface (its magic number is missing)");
  }
  const created = new Uint8Array(bytes).indexOf(10, 3);
  const at = created + 2;
  if (created < 0 || at + 8 > bytes.byteLength) throw new FormatError("its header is truncated");
  const [vertices, faces] = [view.getUint32(at, false), view.getUint32(at + 4, false)];
  const end = at + 8 + 12 * vertices + 12 * faces;
  if (end > bytes.byteLength) {
    throw new FormatError(`its header promises ${vertices} vertices and ${faces} triangles, more than the file holds: truncated or corrupt`);
  }
  if (end + 12 <= bytes.byteLength) return bytes;
  const padded = new Uint8Array(end + 12);
  padded.set(new Uint8Array(bytes, 0, end));
  return padded.buffer;
}

// A detached NRRD header (.nhdr) names its data file, relative to itself. NiiVue 0.69 reads NRRD
// data only where it follows the header, so the header (less that line) and the study's data file
// are joined here into one attached NRRD. Bytes of a NRRD with its data attached come back as they are.
export async function attachedNrrd(file, bytes, studyFiles) {
  const text = ascii(bytes, 0, Math.min(bytes.byteLength, 1 << 16));
  if (!text.startsWith("NRRD")) throw new FormatError("not a NRRD file: it does not begin with NRRD");
  const end = text.indexOf("\n\n");
  const lines = (end < 0 ? text : text.slice(0, end)).split("\n").filter((line) => line.trim());
  const line = lines.find((l) => /^data ?file:/i.test(l));
  if (!line) return bytes;
  const named = line.slice(line.indexOf(":") + 1).trim();
  if (/^LIST\b|%/.test(named) || named.split(/\s+/).length > 1) throw new FormatError(`its data is split over several files (${named}), which the viewer does not read`);
  const parts = (file.path ?? "").split("/").slice(0, -1);
  for (const part of named.split("/")) {
    if (part === "..") parts.pop();
    else if (part !== ".") parts.push(part);
  }
  const path = parts.join("/");
  const data = studyFiles.find((f) => f.path === path);
  if (!data) throw new FormatError(`its data file ${path} is not a file of the study`);
  const response = await fetch(`/api/v1/files/${data.id}/content`);
  if (!response.ok) throw new FormatError(`its data file ${path} could not be read (${response.status})`);
  const header = new TextEncoder().encode(`${lines.filter((l) => l !== line).join("\n")}\n\n`);
  const voxels = new Uint8Array(await response.arrayBuffer());
  const joined = new Uint8Array(header.length + voxels.length);
  joined.set(header);
  joined.set(voxels, header.length);
  return joined.buffer;
}

// A GIFTI file cut short loses its closing tag; NiiVue would say only that it found no triangle.
function checkGifti(bytes) {
  const tail = ascii(bytes, Math.max(0, bytes.byteLength - 64), bytes.byteLength).trim();
  if (!ascii(bytes, 0, 512).includes("<GIFTI")) throw new FormatError("not a GIFTI file: no <GIFTI> element at its start");
  if (!tail.endsWith("</GIFTI>")) throw new FormatError("it does not end with </GIFTI>: truncated or corrupt");
  return bytes;
}

const CHECKS = new Map([["tck", checkTck], ["trk", checkTrk], ["fs-surface", checkFreeSurfer], ["gifti", checkGifti]]);

// The bytes NiiVue is given for a mesh or tract file of this kind: inflated where gzipped,
// refused with a FormatError (a sentence a user can act on) where NiiVue would misread them.
export async function meshBytes(kind, raw) {
  const bytes = await inflated(raw);
  return (CHECKS.get(kind) ?? ((b) => b))(bytes);
}

// What NiiVue made of the bytes: finite points, triangles that name existing vertices.
export function checkMesh(mesh, type) {
  const { pts } = mesh;
  if (!pts?.length) throw new FormatError("it holds no points");
  for (let i = 0; i < pts.length; i++) {
    if (!Number.isFinite(pts[i])) throw new FormatError(`point ${Math.floor(i / 3) + 1} is not a number: corrupt`);
  }
  if (type === LayerType.MESH) {
    const vertices = pts.length / 3;
    const tris = mesh.tris ?? [];
    for (let i = 0; i < tris.length; i++) {
      if (tris[i] >= vertices) throw new FormatError(`triangle ${Math.floor(i / 3) + 1} names vertex ${tris[i]}, of ${vertices}: corrupt`);
    }
  }
}

function apply(affine, point) {
  return [0, 1, 2].map((row) => affine[row][0] * point[0] + affine[row][1] * point[1] + affine[row][2] * point[2] + affine[row][3]);
}

// The box (min and max corner, world millimetres) covered by a grid's voxels, edges included.
function gridBox(affine, dim) {
  const corners = [];
  for (const i of [-0.5, dim[0] - 0.5]) for (const j of [-0.5, dim[1] - 0.5]) for (const k of [-0.5, dim[2] - 0.5]) corners.push(apply(affine, [i, j, k]));
  return [0, 1].map((end) => [0, 1, 2].map((axis) => (end ? Math.max : Math.min)(...corners.map((c) => c[axis]))));
}

function volumeBox(volume) {
  return gridBox(volume.hdr.affine, volume.hdr.dims.slice(1, 4));
}

const millimetres = (point) => `(${point.map((v) => v.toFixed(1)).join(", ")})`;
const boxText = ([low, high]) => `${millimetres(low)} to ${millimetres(high)} mm`;

// Where a tractogram's header (TRK) or its points (any tract) disagree with the volume it is drawn
// over: sentences for the user. The tract is drawn where its file says all the same.
export function tractWarnings(kind, bytes, mesh, volume) {
  if (!volume) return [];
  const box = volumeBox(volume);
  const slack = Math.max(...volume.hdr.pixDims.slice(1, 4).map(Math.abs));
  const warnings = [];
  if (kind === "trk") {
    const header = trkHeader(bytes);
    if (!header.affine) {
      warnings.push("its header has no voxel-to-RAS matrix: its points are shown in TrackVis's voxel millimetres");
    } else {
      const own = gridBox(header.affine, header.dim);
      const apart = Math.max(...[0, 1].flatMap((end) => [0, 1, 2].map((axis) => Math.abs(own[end][axis] - box[end][axis]))));
      if (apart > slack) {
        warnings.push(`its header's grid covers ${boxText(own)}, the volume ${volume.name} ${boxText(box)}: the header space differs from the volume's`);
      }
    }
  }
  const { pts } = mesh;
  let outside = 0;
  for (let i = 0; i < pts.length; i += 3) {
    if ([0, 1, 2].some((axis) => pts[i + axis] < box[0][axis] - slack || pts[i + axis] > box[1][axis] + slack)) outside += 1;
  }
  if (outside) warnings.push(`${outside} of ${pts.length / 3} points lie outside the volume ${volume.name} (${boxText(box)})`);
  return warnings;
}
