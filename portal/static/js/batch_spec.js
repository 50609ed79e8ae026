// The batchtool's model: the jobs as the composer holds them (one row per argument) and the
// specification they stand for (jobs/spec.py). Import and export go through here, so a batch
// read from JSON or from the saved list comes back out unchanged.

// The argument types that name a file and so a study: at subject level one of the subject's, at either an analysis.
export const LOCATED = new Set(["FILE", "OUT", "PATHOUT"]);
const REFERENCE = /\$\{?([fopsnbc][1-9])\b/g;
// Python scripts read their arguments from the environment rather than as $f1.
const PYTHON_REFERENCE = /\b(?:environ(?:\.get)?\s*[[(]|getenv\s*\()\s*["']([fopsnbc][1-9])["']/g;
const RESOURCES = ["queue", "cpus", "memory_mb", "time_minutes", "network"];

export class ImportError extends Error {}

function blank(type) {
  if (type === "LOGICAL") return false;
  return type === "NUMERIC" ? null : "";
}

// The arguments a generic job's script uses.
export function scriptReferences(job, script) {
  const patterns = job === "python" ? [REFERENCE, PYTHON_REFERENCE] : [REFERENCE];
  return [...new Set(patterns.flatMap((pattern) => [...script.matchAll(pattern)].map((match) => match[1])))];
}

// Inputs first, then outputs, then the rest; by number within a type.
const byName = (a, b) => "fopsnbc".indexOf(a.name[0]) - "fopsnbc".indexOf(b.name[0]) || a.name.localeCompare(b.name);

function scriptRow(name, argTypes) {
  const type = argTypes[name[0]];
  return { name, type, value: blank(type), study: "", options: [], help: `${type} of the script`, required: true };
}

function definedRow(argument) {
  const value = argument.default ?? (argument.type === "OPTION" ? argument.options[0] : blank(argument.type));
  return { name: argument.name, type: argument.type, value, study: "", options: [...argument.options],
    help: argument.help, required: argument.required };
}

export function newJob(definition, argTypes) {
  const job = { job: definition.name, definition, script: definition.script ? "" : null, rows: definition.args.map(definedRow) };
  if (definition.script) syncScriptRows(job, argTypes);
  return job;
}

// Rows follow the script: one for each argument it uses (a row keeps what was typed into it while
// the script still uses it). Answers whether the set of rows changed.
export function syncScriptRows(job, argTypes) {
  const names = scriptReferences(job.job, job.script);
  const kept = job.rows.filter((row) => names.includes(row.name));
  const added = names.filter((name) => !kept.some((row) => row.name === name)).map((name) => scriptRow(name, argTypes));
  const changed = added.length > 0 || kept.length !== job.rows.length;
  job.rows = [...kept, ...added].sort(byName);
  return changed;
}

function isBlank(value) {
  return value === null || value === "";
}

function argumentSpec(row, level) {
  const spec = { type: row.type, value: row.value };
  if (LOCATED.has(row.type)) {
    // At study level an argument is the batch's own study unless it names an analysis.
    const study = level === "subject" ? row.study || "first" : row.study;
    if (study && (level === "subject" || study.startsWith("analysis:"))) spec.study = study;
  }
  if (row.type === "OPTION") spec.options = [...row.options];
  return spec;
}

export function toSpec(name, level, jobs, resources) {
  const spec = {
    name, level,
    jobs: jobs.map((job) => ({
      job: job.job,
      ...(job.script !== null ? { script: job.script } : {}),
      // An optional argument left empty is left out, which is how a spec says "not given".
      args: Object.fromEntries(job.rows.filter((row) => row.required || !isBlank(row.value))
        .map((row) => [row.name, argumentSpec(row, level)])),
    })),
  };
  const given = Object.entries(resources).filter(([key, value]) => (key === "network" ? value === true : !isBlank(value)));
  if (given.length) spec.resources = Object.fromEntries(given);
  return spec;
}

function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function checkedValue(type, value, field) {
  const fits = type === "NUMERIC" ? typeof value === "number" : type === "LOGICAL" ? typeof value === "boolean" : typeof value === "string";
  if (!fits) throw new ImportError(`${field}.value: ${type} needs ${type === "NUMERIC" ? "a number" : type === "LOGICAL" ? "true or false" : "a string"}`);
  return value;
}

function importedRow(row, document, field) {
  if (!isObject(document)) throw new ImportError(`${field}: must be an object with type and value`);
  if (document.type !== row.type) throw new ImportError(`${field}.type: ${row.name} is a ${row.type} argument, not ${JSON.stringify(document.type)}`);
  if (document.study !== undefined && typeof document.study !== "string") throw new ImportError(`${field}.study: must be a string`);
  const imported = { ...row, value: checkedValue(row.type, document.value, field), study: document.study ?? "" };
  if (row.type === "OPTION" && !row.options.length) {
    const options = document.options;
    if (!Array.isArray(options) || !options.every((o) => typeof o === "string")) throw new ImportError(`${field}.options: must be a list of strings`);
    imported.options = [...options];
  }
  return imported;
}

function importedJob(document, field, definitions, argTypes) {
  if (!isObject(document)) throw new ImportError(`${field}: must be an object`);
  const definition = definitions.find((d) => d.name === document.job);
  if (!definition) {
    throw new ImportError(`${field}.job: unknown job ${JSON.stringify(document.job)}; known: ${definitions.map((d) => d.name).join(", ")}`);
  }
  const args = document.args ?? {};
  if (!isObject(args)) throw new ImportError(`${field}.args: must be an object of named arguments`);
  const job = { job: definition.name, definition, script: null, rows: [] };
  if (definition.script) {
    if (typeof document.script !== "string") throw new ImportError(`${field}.script: a ${definition.name} job needs its script`);
    job.script = document.script;
    job.rows = Object.keys(args).map((name) => {
      if (!/^[fopsnbc][1-9]$/.test(name)) throw new ImportError(`${field}.args.${name}: arguments are named f1..f9, o1..o9, p1..p9, s1..s9, n1..n9, b1..b9 or c1..c9`);
      return importedRow(scriptRow(name, argTypes), args[name], `${field}.args.${name}`);
    });
    // The script may use arguments the JSON forgot: they get their (empty) rows.
    const missing = scriptReferences(job.job, job.script).filter((name) => !(name in args));
    job.rows = [...job.rows, ...missing.map((name) => scriptRow(name, argTypes))].sort(byName);
  } else {
    const unknown = Object.keys(args).filter((name) => !definition.args.some((a) => a.name === name));
    if (unknown.length) throw new ImportError(`${field}.args.${unknown[0]}: ${definition.name} takes ${definition.args.map((a) => a.name).join(", ")}`);
    job.rows = definition.args.map((argument) => {
      const row = definedRow(argument);
      if (argument.name in args) return importedRow(row, args[argument.name], `${field}.args.${argument.name}`);
      return argument.required ? row : { ...row, value: blank(row.type) };
    });
  }
  return job;
}

// The composer's content for a specification; an ImportError names the field it cannot take.
export function fromSpec(document, definitions, argTypes) {
  if (!isObject(document)) throw new ImportError("the batch must be a JSON object");
  const unknown = Object.keys(document).filter((key) => !["name", "level", "jobs", "resources"].includes(key));
  if (unknown.length) throw new ImportError(`unknown key(s) ${unknown.join(", ")}; a batch has name, level, jobs and resources`);
  const level = document.level ?? "study";
  if (!["study", "subject", "project"].includes(level)) {
    throw new ImportError(`level: must be "study", "subject" or "project", not ${JSON.stringify(level)}`);
  }
  if (!Array.isArray(document.jobs)) throw new ImportError("jobs: must be a list of jobs");
  const resources = document.resources ?? {};
  if (!isObject(resources)) throw new ImportError("resources: must be an object");
  const strange = Object.keys(resources).filter((key) => !RESOURCES.includes(key));
  if (strange.length) throw new ImportError(`resources: unknown key(s) ${strange.join(", ")}; known: ${RESOURCES.join(", ")}`);
  return {
    name: typeof document.name === "string" ? document.name : null,
    level,
    jobs: document.jobs.map((job, index) => importedJob(job, `jobs[${index}]`, definitions, argTypes)),
    resources: Object.fromEntries(RESOURCES.map((key) => [key, resources[key] ?? (key === "network" ? false : null)])),
  };
}
