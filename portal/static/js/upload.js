// Uploads: a DICOM archive through the import path, or files into one study, with progress.
import { element, project, upload } from "./api.js";
import { studiesPage } from "./studies.js";

function wire(formId, progressId, resultId, target) {
  const form = document.getElementById(formId);
  const progress = document.getElementById(progressId);
  const result = document.getElementById(resultId);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    progress.hidden = false;
    progress.value = 0;
    result.textContent = "uploading…";
    try {
      const answer = await upload(target(), new FormData(form), (fraction) => {
        progress.value = fraction;
        if (fraction >= 1) result.textContent = "uploaded; processing…";
      });
      result.textContent = JSON.stringify(answer, null, 2);
      result.className = "ok";
    } catch (error) {
      result.textContent = `failed: ${error.message}`;
      result.className = "error";
    }
  });
}

const choice = document.getElementById("study-choice");
async function findStudies(text) {
  const page = await studiesPage({ filters: { patient_id: text } }, 0, 100);
  choice.replaceChildren(...page.rows.map((row) => element("option", { value: row.id }, `${row.subject} / ${row.study}`)));
}
let timer = null;
document.getElementById("study-search").addEventListener("input", (event) => {
  clearTimeout(timer);
  timer = setTimeout(() => findStudies(event.target.value).catch(() => choice.replaceChildren()), 250);
});

wire("dicom-form", "dicom-progress", "dicom-result", () => `/projects/${project}/import`);
wire("files-form", "files-progress", "files-result", () => `/projects/${project}/studies/${choice.value}/files`);
findStudies("");
