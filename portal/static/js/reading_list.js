// The readings list: each reading this user reads (or, for admins, every reading) with the
// reader's progress, the way in (read, instructions, results), restarts where the reading allows
// them, and for admins configuration and the project's forms.
import { api, element, project } from "./api.js";

const base = `/p/${encodeURIComponent(project)}/readings`;
const message = document.getElementById("message");

function progress(part) {
  return part ? `${part.done} / ${part.total}` : "—";
}

async function restart(reading, phase) {
  if (!confirm(`Restart the ${phase} phase of ${reading.name}? All your ${phase} answers of this reading are deleted.`)) return;
  try {
    const { deleted } = await api(`/projects/${project}/readings/${reading.id}/restart`, { method: "POST", json: { phase, confirm: true } });
    message.textContent = `${reading.name}: ${deleted} ${phase} answer${deleted === 1 ? "" : "s"} deleted`;
    await load();
  } catch (error) {
    message.textContent = error.message;
  }
}

function actions(reading) {
  const links = [];
  const done = reading.progress.serious.total > 0 && reading.progress.serious.done >= reading.progress.serious.total;
  if (reading.assigned && reading.state === "open") {
    links.push(element("a", { href: `${base}/${reading.id}/read`, class: "button", "data-act": "read" }, done ? "review" : "read"));
  }
  if (reading.instructions_url) links.push(element("a", { href: reading.instructions_url, target: "_blank", rel: "noopener" }, "instructions"));
  if (reading.assigned || reading.can_configure) links.push(element("a", { href: `${base}/${reading.id}/results`, "data-act": "results" }, "results"));
  if (reading.can_configure) links.push(element("a", { href: `${base}/${reading.id}/configure`, "data-act": "configure" }, "configure"));
  if (reading.assigned && reading.allow_restart_training && reading.progress.training) {
    links.push(element("button", { type: "button", "data-act": "restart-training", onclick: () => restart(reading, "training") }, "restart training"));
  }
  if (reading.assigned && reading.allow_restart_serious) {
    links.push(element("button", { type: "button", "data-act": "restart-serious", onclick: () => restart(reading, "serious") }, "restart serious"));
  }
  return links;
}

async function load() {
  const { readings } = await api(`/projects/${project}/readings`);
  document.querySelector("#readings tbody").replaceChildren(...readings.map((reading) =>
    element("tr", { "data-id": reading.id },
      element("td", {}, element("strong", {}, reading.name),
        reading.instructions ? element("div", { class: "hint reading-instructions" }, reading.instructions) : null),
      element("td", { class: "reading-state" }, reading.state),
      element("td", { class: "reading-training" }, progress(reading.progress.training)),
      element("td", { class: "reading-serious" }, progress(reading.progress.serious)),
      element("td", { class: "reading-actions" }, ...actions(reading)))));
  if (!readings.length) message.textContent = "no readings assigned to you in this project";
}

async function loadForms() {
  const list = document.getElementById("forms");
  if (!list) return;
  const { forms } = await api(`/projects/${project}/reading-forms`);
  list.replaceChildren(...forms.map((form) => element("li", {},
    element("a", { href: `${base}/forms/${encodeURIComponent(form.name)}` }, form.name),
    ` ${form.title ? `“${form.title}” ` : ""}version ${form.version}, ${form.saved_at}`)));
}

document.getElementById("refresh").addEventListener("click", () => load().catch((e) => (message.textContent = e.message)));
document.getElementById("new-form")?.addEventListener("click", () => {
  const name = document.getElementById("new-form-name").value.trim();
  if (name) location.href = `${base}/forms/${encodeURIComponent(name)}`;
});

Promise.all([load(), loadForms()])
  .then(() => (document.body.dataset.ready = "1"))
  .catch((error) => (message.textContent = error.message));
