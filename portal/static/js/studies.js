// The studies table's query, one definition for every page that asks for studies: the table,
// the viewer's autoloader (arrow up/down) and the upload page's study search. The table's
// state (filters and sort) is kept per project, so that the viewer steps through the studies
// as the table last showed them.
import { api, project } from "./api.js";

export const DEFAULT_SORT = "patient_id";

// state: {sort, filters: {column: bar text}}; the API's f_<column>, sort, offset and limit, or
// instead of the offset the cursor a page gave for the next one (after), which the server finds
// in its index rather than by counting rows off.
export function studiesQuery({ sort = DEFAULT_SORT, filters = {} }, offset, limit, after = null) {
  const params = new URLSearchParams(after ? { sort, after, limit } : { sort, offset, limit });
  for (const [column, text] of Object.entries(filters)) if (text.trim()) params.set(`f_${column}`, text);
  return params;
}

// One page of the project's studies: {total, offset, limit, next, rows}.
export function studiesPage(state, offset, limit, after = null) {
  return api(`/projects/${encodeURIComponent(project)}/studies?${studiesQuery(state, offset, limit, after)}`);
}

export function savedTableState() {
  return JSON.parse(sessionStorage.getItem(`northanc.table.${project}`) ?? "{}");
}

export function saveTableState(state) {
  sessionStorage.setItem(`northanc.table.${project}`, JSON.stringify(state));
}
