// PACS administration: add, edit (rights included), remove and C-ECHO the peers through the API.
import { api } from "./api.js";

const form = document.getElementById("peer-form");
const error = document.getElementById("peer-error");
let editing = null;

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = Object.fromEntries(new FormData(form));
  const body = { ...data, port: Number(data.port), allow_query: form.allow_query.checked, allow_retrieve: form.allow_retrieve.checked };
  error.textContent = "";
  try {
    if (editing) await api(`/pacs/${encodeURIComponent(editing)}`, { method: "PUT", json: body });
    else await api("/pacs", { method: "POST", json: body });
    location.reload();
  } catch (failure) {
    error.textContent = failure.message;
  }
});

for (const row of document.querySelectorAll("#peers tr[data-peer]")) {
  const name = row.dataset.peer;
  const result = row.querySelector(".result");
  row.querySelector(".echo").addEventListener("click", async () => {
    result.textContent = "…";
    try {
      await api(`/pacs/${encodeURIComponent(name)}/echo`, { method: "POST", json: {} });
      result.textContent = "answers";
      result.className = "result ok";
    } catch (failure) {
      result.textContent = failure.message;
      result.className = "result error";
    }
  });
  row.querySelector(".remove").addEventListener("click", async () => {
    if (!confirm(`Remove PACS ${name}?`)) return;
    await api(`/pacs/${encodeURIComponent(name)}`, { method: "DELETE" });
    location.reload();
  });
  row.querySelector(".edit").addEventListener("click", () => {
    const peer = row.dataset;
    editing = name;
    document.getElementById("form-title").textContent = `Edit ${name}`;
    form.name.value = name;
    form.name.readOnly = true;
    [form.aet.value, form.host.value, form.port.value, form.retrieve.value] = [peer.aet, peer.host, peer.port, peer.retrieve];
    form.allow_query.checked = peer.allowQuery === "true";
    form.allow_retrieve.checked = peer.allowRetrieve === "true";
  });
}
