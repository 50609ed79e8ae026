// NORA's Marker tool: named point sets of a study, points in world millimetres (NIfTI RAS+, NiiVue's
// mm). "Add points" mode adds the crosshair's position after each click in a viewport.
//
// The points are shown in every viewport as a NiiVue connectome of nodes only (small spheres, named
// by the point), not in the drawing layer: that layer holds the ROI being drawn, and marks there
// would end up in the saved mask. The list beside it jumps the crosshair to a point.
import { api, element, project } from "./api.js";

const $ = (id) => document.getElementById(id);
const MESH_NAME = "northanc-markers";
// Node sizes are in mm; a marker shows in a 2D slice only within this distance of it.
const NODE_MM = 3;
const SLAB_MM = 4;

export function mountMarkers(viewer, { canEdit, stopDrawing }) {
  const state = { sets: [], current: null, adding: false };
  const message = (text, isError = false) => {
    $("marker-message").textContent = text;
    $("marker-message").classList.toggle("error", isError);
  };
  const fail = (error) => message(error.message ?? String(error), true);
  const studyPath = () => `/projects/${project}/studies/${viewer.study.id}`;

  async function load(keep = null) {
    if (!viewer.study) return;
    const { marker_sets: sets } = await api(`${studyPath()}/markers`);
    state.sets = sets;
    const chosen = sets.find((s) => s.id === (keep ?? state.current?.id)) ?? null;
    state.current = chosen ? copy(chosen) : null;
    render();
  }

  const copy = (set) => ({ id: set.id, name: set.name, author: set.author, points: set.points.map((p) => ({ ...p })), dirty: false });

  function render() {
    const select = $("marker-set");
    select.replaceChildren(element("option", { value: "" }, state.sets.length ? "(choose a set)" : "(no sets)"),
      ...state.sets.map((s) => element("option", { value: s.id }, `${s.name} (${s.author}, ${s.points.length})`)));
    select.value = state.current?.id ?? "";
    const current = state.current;
    $("marker-name").value = current?.name ?? "";
    $("marker-edit").disabled = !current || !canEdit;
    $("marker-add").textContent = state.adding ? "Adding points: on" : "Add points";
    $("marker-add").classList.toggle("on", state.adding);
    $("marker-state").textContent = current ? `${current.id ? "" : "new, "}${current.dirty ? "unsaved" : "saved"}` : "";
    $("marker-points").replaceChildren(...(current?.points ?? []).map((point, index) => {
      const name = element("input", { class: "marker-point-name", value: point.name, maxlength: 64, disabled: !canEdit, "aria-label": "point name" });
      name.addEventListener("input", () => {
        point.name = name.value;
        changed(false);
      });
      return element("li", { class: "marker-point", "data-index": index },
        name,
        element("span", { class: "marker-xyz" }, [point.x, point.y, point.z].map((c) => c.toFixed(1)).join(", ")),
        element("button", { type: "button", class: "marker-go", title: "go to this point", onclick: () => goTo(point) }, "◎"),
        element("button", { type: "button", class: "marker-delete", title: "delete this point", disabled: !canEdit, onclick: () => {
          current.points.splice(index, 1);
          changed();
        } }, "✕"));
    }));
    showPoints();
  }

  function changed(redraw = true) {
    state.current.dirty = true;
    if (redraw) render();
    else $("marker-state").textContent = "unsaved";
  }

  function goTo(point) {
    for (const { nv, node, layers } of viewer.viewports) {
      if (node.hidden || !layers.length) continue;
      nv.scene.crosshairPos = nv.mm2frac([point.x, point.y, point.z], 0, true);
      nv.drawScene();
    }
    viewer.say(`${point.name || "point"}: ${point.x.toFixed(1)}, ${point.y.toFixed(1)}, ${point.z.toFixed(1)} mm`);
  }

  // The current set as nodes of a connectome in every viewport with an image.
  function showPoints() {
    for (const { nv, layers } of viewer.viewports) {
      for (const mesh of nv.meshes.filter((m) => m.name === MESH_NAME)) nv.removeMesh(mesh);
      const points = state.current?.points ?? [];
      if (!layers.length || !points.length) continue;
      nv.opts.meshThicknessOn2D = SLAB_MM;
      const mesh = nv.loadConnectomeAsMesh({
        name: MESH_NAME, nodeColormap: "warm", nodeColormapNegative: "", nodeMinColor: 0, nodeMaxColor: 1, nodeScale: NODE_MM,
        edgeColormap: "warm", edgeColormapNegative: "", edgeMin: 0, edgeMax: 1, edgeScale: 1, showLegend: false,
        nodes: points.map((p, k) => ({ name: p.name || `${k + 1}`, x: p.x, y: p.y, z: p.z, colorValue: 1, sizeValue: 1 })),
        edges: [],
      });
      nv.addMesh(mesh);
    }
  }

  function newSet() {
    const name = $("marker-new-name").value.trim() || "points";
    state.current = { id: null, name, author: "", points: [], dirty: true };
    $("marker-new-name").value = "";
    setAdding(true);
    render();
    message(`new set ${name}: click in a viewport to add points`);
  }

  async function save() {
    const current = state.current;
    if (!current) return;
    const body = { name: current.name, points: current.points.map(({ x, y, z, name }) => ({ x, y, z, name })) };
    const answer = current.id
      ? await api(`/markers/${current.id}`, { method: "PUT", json: body })
      : await api(`${studyPath()}/markers`, { method: "POST", json: body });
    message(`saved ${answer.marker_set.name} (${answer.marker_set.points.length} points)`);
    await load(answer.marker_set.id);
  }

  async function remove() {
    const current = state.current;
    if (!current) return;
    if (!current.id) {
      state.current = null;
      return render();
    }
    if (!confirm(`Delete the marker set ${current.name}? It goes to the project's trash.`)) return;
    await api(`/markers/${current.id}`, { method: "DELETE" });
    message(`${current.name} deleted`);
    state.current = null;
    await load();
  }

  function setAdding(on) {
    state.adding = on && canEdit;
    if (state.adding) stopDrawing();
    $("marker-add").textContent = state.adding ? "Adding points: on" : "Add points";
    $("marker-add").classList.toggle("on", state.adding);
  }

  // A click (not a drag) in a viewport: NiiVue has moved the crosshair there on mouse down.
  $("viewports").addEventListener("click", (event) => {
    if (!state.adding || !state.current || event.shiftKey) return;
    const viewport = viewer.viewports.find((v) => v.node.contains(event.target));
    const mm = viewport?.crosshairMM();
    if (!mm) return;
    const [x, y, z] = mm.map((c) => Math.round(c * 100) / 100);
    state.current.points.push({ x, y, z, name: `${state.current.points.length + 1}` });
    changed();
  });

  const run = (action) => () => Promise.resolve().then(action).catch(fail);
  $("marker-set").addEventListener("change", () => {
    const chosen = state.sets.find((s) => String(s.id) === $("marker-set").value);
    if (state.current?.dirty && !confirm(`Discard the unsaved changes to ${state.current.name}?`)) return render();
    state.current = chosen ? copy(chosen) : null;
    render();
  });
  $("marker-name").addEventListener("input", () => {
    if (!state.current) return;
    state.current.name = $("marker-name").value;
    changed(false);
  });
  $("marker-new").addEventListener("click", run(newSet));
  $("marker-add").addEventListener("click", run(() => setAdding(!state.adding)));
  $("marker-save").addEventListener("click", run(save));
  $("marker-delete-set").addEventListener("click", run(remove));
  $("marker-new").disabled = !canEdit;
  $("marker-new-name").disabled = !canEdit;
  $("viewer").addEventListener("viewer:opened", () => showPoints());

  return { load, stopAdding: () => setAdding(false), state, showPoints };
}
