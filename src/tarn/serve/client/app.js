/* tarn browser client: score rows on this device with the published bundle and onnxruntime-web.
 *
 * Loads bundle/metadata.json, bundle/schema.json and bundle/model.onnx (the bundle the backend
 * serves now), checks the model's sha256 against the metadata, and feeds the graph exactly as
 * tarn.edge_runner.build_feeds does, so a row gets the backend's probability:
 *   numbers  -> float32 [n, 1], NaN when missing (the graph imputes it);
 *   strings  -> string  [n, 1], the bundle's missing category (schema.json
 *               missing.onnx_string_feed, "missing") when missing: the graph has no string
 *               imputer, the Python pipeline imputes that same category.
 * CSV cells are read like tarn.edge_runner.read_csv_columns: a cell holding one of the
 * contract's missing markers (schema.json missing_values; an empty cell when it has none) is
 * missing.
 *
 * What a row gets depends on the task the version was trained for (metadata.json task, classes,
 * threshold, as the server answers /predict): binary, the probability of class 1 and the label
 * (1 when it reaches the version's threshold) with its class name; multiclass, every class's
 * probability and the most probable class; regression, the predicted value (graph output
 * "variable").
 *
 * One rule with the ETL, the server and the edge runner (tarn.core.columns): a CSV header or a
 * record key may be a column's name or one of its aliases (schema.json columns[].aliases),
 * compared after the ETL's normalization (lower case, runs of spaces and "-" read as "_"):
 * "education-num" is education_num. A column the model does not use (schema.json ignored:
 * excluded features, the target, the lake's batch) is accepted and ignored, so a lake row or
 * file is scored as it is; another name is refused when schema.json extra_columns is "error"
 * (ignored otherwise, and by bundles from before the rule). A required input
 * (columns[].required) with no value refuses the row, naming the column. In a category column of
 * integer codes a whole number is that code's text (2 is "2"). A value the ETL would quarantine
 * (a category schema.json does not list, a number outside the column's min/max) is refused with
 * its line (or row) and column named. Messages are the server's, client values cut to 80
 * characters and names to the first 10 and a count.
 *
 * Why a row got its score: after a form row is scored here, the page asks the backend that
 * served it (same origin, POST /explain) for the row's contributions and shows the largest
 * (TOP_CONTRIBUTIONS; for multiclass those of the predicted class), with the base value and
 * raw score they add up to. The bundle does not compute contributions: without a reachable
 * backend the page says so (#why data-explained="unavailable"), and the score stays local.
 *
 * For tests and scripts: window.tarnReady (true once the session is loaded), window.tarnError
 * (a message when loading failed), window.tarn.predict(records) and window.tarnResults; every
 * shown probability carries its full-precision value in a data-probability attribute (binary),
 * data-probabilities (multiclass, JSON by class name) or data-prediction (regression).
 */
"use strict";

(function () {
  const PROBA_OUTPUT = "probabilities";
  const VALUE_OUTPUT = "variable";
  const DEFAULT_MISSING = "missing";
  const DEFAULT_THRESHOLD = 0.5;
  const CSV_MISSING = new Set([""]);  // a bundle whose contract names no markers
  const CSV_SHOWN_ROWS = 1000;  // every row is scored; the table shows the first ones
  const CHUNK_ROWS = 4096;
  const TOP_CONTRIBUTIONS = 6;

  const $ = (id) => document.getElementById(id);
  const state = {
    session: null, metadata: null, schema: null, fields: [], missing: DEFAULT_MISSING,
    threshold: DEFAULT_THRESHOLD, queue: Promise.resolve(), formRuns: 0, csvRuns: 0,
    lookup: new Map(), csvMissing: CSV_MISSING, rules: [], task: "binary", classes: ["0", "1"],
    output: PROBA_OUTPUT, names: [], kinds: new Map(), required: new Set(), codes: new Map(),
    ignored: new Set(), ignoredNames: [], extraColumns: "ignore",
  };
  const ECHO_CHARS = 80;  // characters of a value a message repeats (tarn.core.columns)
  const ECHO_NAMES = 10;  // names a message lists
  const CODE = /^-?(0|[1-9][0-9]*)$/;

  /** The ETL's header rule (tarn.core.schema.normalize_name). */
  function normalizeName(name) {
    return String(name).trim().toLowerCase().replace(/[\s-]+/g, "_");
  }

  /** Names, aliases, kinds, required inputs, categories (and integer codes), ranges, the
   * names accepted and ignored and the policy for others, from schema.json. */
  function readContract(schema) {
    state.lookup = new Map();
    state.rules = [];
    state.names = schema.columns.map((c) => c.name);
    state.kinds = new Map(schema.columns.map((c) => [c.name, c.type]));
    state.required = new Set(schema.columns.filter((c) => c.required).map((c) => c.name));
    state.codes = new Map();
    const checkCategories = schema.unknown_categories !== "keep";
    for (const c of schema.columns) {
      for (const alias of [c.name, ...(Array.isArray(c.aliases) ? c.aliases : [])]) {
        const key = normalizeName(alias);
        if (!state.lookup.has(key)) state.lookup.set(key, c.name);
      }
      const codes = c.type === "string" && Array.isArray(c.categories)
        ? c.categories.filter((k) => CODE.test(String(k))) : [];
      if (codes.length) state.codes.set(c.name, new Set(codes));
      const cats = checkCategories && Array.isArray(c.categories) ? new Set(c.categories) : null;
      const min = typeof c.min === "number" ? c.min : null;
      const max = typeof c.max === "number" ? c.max : null;
      if (cats || min !== null || max !== null) state.rules.push({ name: c.name, cats, min, max });
    }
    state.ignoredNames = Array.isArray(schema.ignored) ? schema.ignored.map(String).sort() : [];
    state.ignored = new Set(state.ignoredNames.map(normalizeName)
      .filter((k) => !state.lookup.has(k)));
    state.extraColumns = schema.extra_columns || "ignore";  // bundles before the rule: ignore
    state.csvMissing = Array.isArray(schema.missing_values) ? new Set(schema.missing_values)
      : CSV_MISSING;
    const shown = [...state.csvMissing].map((m) => (m === "" ? "an empty cell" : `"${m}"`));
    $("csv-missing").textContent = shown.join(" or ");
  }

  /** Task, classes and threshold of the version (bundles before tasks: binary). */
  function readTask(metadata) {
    state.task = ["binary", "multiclass", "regression"].includes(metadata.task)
      ? metadata.task : "binary";
    state.classes = Array.isArray(metadata.classes) && metadata.classes.length
      ? metadata.classes.map(String) : (state.task === "regression" ? [] : ["0", "1"]);
    state.threshold = Number.isFinite(metadata.threshold) ? metadata.threshold : DEFAULT_THRESHOLD;
    state.output = state.task === "regression" ? VALUE_OUTPUT : PROBA_OUTPUT;
    document.body.dataset.task = state.task;
  }

  /** The column a header name or record key means, or undefined. */
  function resolveName(name) {
    return state.lookup.get(normalizeName(name));
  }

  /** A name that is no input's: accepted (not read), or refused. */
  function acceptsUnread(name) {
    return state.ignored.has(normalizeName(name)) || state.extraColumns !== "error";
  }

  function fmt(x) {
    return x === null ? "None" : String(x);
  }

  /** Python's repr of a string, cut to ECHO_CHARS characters (tarn.core.columns.clip). */
  function quote(s) {
    s = String(s);
    const q = (t) => (t.includes("'") && !t.includes('"') ? `"${t}"`
      : `'${t.replace(/'/g, "\\'")}'`);
    return s.length > ECHO_CHARS
      ? `${q(s.slice(0, ECHO_CHARS))}... (${s.length.toLocaleString("en-US")} characters)`
      : q(s);
  }

  function nameList(names) {
    const head = `[${names.slice(0, ECHO_NAMES).map(quote).join(", ")}]`;
    return names.length <= ECHO_NAMES ? head
      : `${head} and ${(names.length - ECHO_NAMES).toLocaleString("en-US")} more`;
  }

  function unknownMessage(unknown) {
    const ignored = state.ignoredNames.length
      ? `; accepted and ignored: [${state.ignoredNames.map(quote).join(", ")}]` : "";
    return `unknown column(s) ${nameList([...unknown].map(String).sort())}; expected ` +
      `[${state.names.map(quote).join(", ")}] (or their aliases in the contract)${ignored}`;
  }

  function requiredText(name) {
    return `column ${quote(name)} is required: the model cannot answer without it (send a ` +
      "value; the contract does not impute it)";
  }

  /** The first value the contract refuses, as text, or null. `where(i)` names row i. */
  function contractProblem(columns, n, where) {
    const found = [];
    for (const r of state.rules) {
      const values = columns[r.name];
      if (!values) continue;
      for (let i = 0; i < n; i++) {
        const v = values[i];
        if (isMissing(v)) continue;
        if (r.cats && !r.cats.has(v)) {
          const known = [...r.cats].sort();
          found.push([i, `${where(i)}: column ${quote(r.name)}: unknown category ${quote(v)}` +
            `; the contract's categories: ${known.slice(0, 12).join(", ")}` +
            (known.length > 12 ? `, ... (${known.length} in all)` : "")]);
        } else if (!r.cats && ((r.min !== null && v < r.min) || (r.max !== null && v > r.max))) {
          found.push([i, `${where(i)}: column ${quote(r.name)}: ${fmt(v)} outside ` +
            `[${fmt(r.min)}, ${fmt(r.max)}]`]);
        }
      }
    }
    if (!found.length) return null;
    found.sort((a, b) => a[0] - b[0]);  // the first row's; stable: contract order within it
    const more = found.length > 1
      ? ` (${found.length - 1} more value(s) outside the contract)` : "";
    return found[0][1] + more;
  }
  window.tarnReady = false;
  window.tarnError = null;
  window.tarnResults = { form: null, csv: null, explanation: null };

  // ------------------------------------------------------------------ loading
  async function fetchOk(url) {
    const r = await fetch(url, { cache: "no-store" });
    if (!r.ok) {
      let detail = "";
      try { detail = (await r.json()).message || ""; } catch (e) { /* not JSON */ }
      throw new Error(`${url}: HTTP ${r.status}${detail ? ` (${detail})` : ""}`);
    }
    return r;
  }

  async function sha256Hex(bytes) {
    if (!(window.crypto && crypto.subtle)) return null;  // only in secure contexts
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function graphFields(session, schema) {
    // The graph's own inputs, in its order, decide the feeds (as OnnxScorer.fields does).
    const columns = new Map(schema.columns.map((c) => [c.name, c]));
    const meta = Array.isArray(session.inputMetadata) ? session.inputMetadata : [];
    return session.inputNames.map((name, i) => {
      const m = meta[i];
      const column = columns.get(name);
      if (!column) throw new Error(`the model's input ${name} is not in schema.json`);
      const isString = m && m.isTensor && typeof m.type === "string"
        ? m.type === "string" : column.type === "string";
      return { name, isString };
    });
  }

  async function load() {
    const [metadata, schema] = await Promise.all([
      fetchOk("bundle/metadata.json").then((r) => r.json()),
      fetchOk("bundle/schema.json").then((r) => r.json()),
    ]);
    state.metadata = metadata;
    state.schema = schema;
    readTask(metadata);
    state.missing = (schema.missing && schema.missing.onnx_string_feed) || DEFAULT_MISSING;
    readContract(schema);
    $("model-name").textContent = metadata.name || "?";
    $("model-version").textContent = String(metadata.version);
    document.body.dataset.modelVersion = String(metadata.version);
    $("model-detail").textContent = metadata.created ? `(exported ${metadata.created})` : "";

    const bytes = new Uint8Array(await (await fetchOk("bundle/model.onnx")).arrayBuffer());
    const digest = await sha256Hex(bytes);
    if (digest !== null && metadata.sha256 && digest !== metadata.sha256) {
      throw new Error("model.onnx does not match the sha256 in metadata.json (the bundle " +
                      "changed while loading, or was altered): reload the page");
    }

    if (typeof ort === "undefined") {
      throw new Error("onnxruntime-web is missing (vendor/ort.wasm.min.js): run `make client`");
    }
    ort.env.wasm.wasmPaths = new URL("vendor/", document.baseURI).href;  // never a CDN
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.proxy = false;
    ort.env.logLevel = "error";
    $("ort-version").textContent = (ort.env.versions && ort.env.versions.web) || "";
    const session = await ort.InferenceSession.create(bytes, {
      executionProviders: ["wasm"], graphOptimizationLevel: "all", logSeverityLevel: 3,
    });
    if (!session.outputNames.includes(state.output)) {
      throw new Error(`the ${state.task} model has no ${state.output} output (has ` +
                      `${session.outputNames})`);
    }
    state.fields = graphFields(session, schema);
    state.session = session;

    buildForm(schema);
    $("predict").disabled = false;
    $("csv").disabled = false;
    const what = state.task === "binary" ? `threshold ${state.threshold}`
      : state.task === "multiclass" ? `classes ${state.classes.join(", ")}` : "regression";
    setStatus("ready", `Ready: scoring runs in this browser (${what}).`);
    document.body.dataset.ready = "true";
    window.tarnReady = true;
  }

  function setStatus(kind, text) {
    const s = $("status");
    s.dataset.state = kind;
    s.textContent = text;
  }

  // ------------------------------------------------------------------ scoring
  function isMissing(v) {
    return v === null || v === undefined || (typeof v === "number" && Number.isNaN(v));
  }

  function buildFeeds(columns, n) {
    const feeds = {};
    for (const f of state.fields) {
      const values = columns[f.name];
      if (!values) throw new Error(`missing input column ${f.name}`);
      if (values.length !== n) throw new Error(`column ${f.name} has ${values.length} values`);
      feeds[f.name] = f.isString
        ? new ort.Tensor("string", values.map((v) => (isMissing(v) ? state.missing : String(v))),
                         [n, 1])
        : new ort.Tensor("float32", Float32Array.from(values, (v) => (v === null ||
                           v === undefined ? NaN : Number(v))), [n, 1]);
    }
    return feeds;
  }

  async function runChunk(columns, start, end) {
    const n = end - start;
    const part = {};
    for (const f of state.fields) part[f.name] = columns[f.name].slice(start, end);
    const out = await state.session.run(buildFeeds(part, n), [state.output]);
    const t = out[state.output];
    const width = t.dims.length > 1 ? t.dims[1] : 1;
    const scores = new Array(n);
    for (let i = 0; i < n; i++) {
      if (state.task === "multiclass") {
        scores[i] = Array.from(t.data.slice(i * width, (i + 1) * width));
      } else if (state.task === "binary") scores[i] = t.data[i * width + 1];  // class 1
      else scores[i] = t.data[i * width];
    }
    return scores;
  }

  /** A row's result from its score, as the server's /predict answers it. */
  function result(score) {
    if (state.task === "regression") return { prediction: score };
    if (state.task === "binary") {
      const label = score >= state.threshold ? 1 : 0;
      return { probability: score, label, class: state.classes[label] };
    }
    let label = 0;
    for (let k = 1; k < score.length; k++) if (score[k] > score[label]) label = k;
    const probabilities = Object.fromEntries(state.classes.map((c, k) => [c, score[k]]));
    return { probabilities, label, class: state.classes[label] };
  }

  /** One result per row (see result()), from input columns (arrays of equal length). */
  function predictColumns(columns, n) {
    // One run at a time: a wasm session is not reentrant.
    const job = state.queue.then(async () => {
      const scores = [];
      for (let s = 0; s < n; s += CHUNK_ROWS) {
        scores.push(...(await runChunk(columns, s, Math.min(n, s + CHUNK_ROWS))));
      }
      return scores.map(result);
    });
    state.queue = job.catch(() => {});
    return job;
  }

  function pyType(v) {
    if (typeof v === "string") return "str";
    if (typeof v === "boolean") return "bool";
    if (Array.isArray(v)) return "list";
    if (typeof v === "number") return Number.isInteger(v) ? "int" : "float";
    return "dict";
  }

  /** A whole number's integer text (2 -> "2"), else null (tarn.core.columns.code_text). */
  function codeText(v) {
    return typeof v === "number" && Number.isInteger(v) && Math.abs(v) < 2 ** 53
      ? String(v) : null;
  }

  /** One column's record values, checked in the server's order (tarn.serve.inputs). */
  function recordValues(name, values) {
    if (state.required.has(name)) {
      const i = values.findIndex(isMissing);
      if (i >= 0) throw new Error(`row ${i}: ${requiredText(name)}`);
    }
    const kind = state.kinds.get(name);
    if (kind === "string") {
      const codes = state.codes.get(name);
      return values.map((v, i) => {
        if (isMissing(v) || typeof v === "string") return isMissing(v) ? null : v;
        const text = codes ? codeText(v) : null;
        if (text === null) {
          const hint = codes ? " (or a whole number naming one of its integer codes)" : "";
          throw new Error(`row ${i}: column ${quote(name)} must be a string${hint}, got ` +
                          pyType(v));
        }
        return text;
      });
    }
    values.forEach((v, i) => {
      if (!isMissing(v) && typeof v !== "number") {
        throw new Error(`row ${i}: column ${quote(name)} must be a number, got ${pyType(v)}`);
      }
    });
    values.forEach((v, i) => {
      if (!isMissing(v) && !Number.isFinite(v)) {
        throw new Error(`row ${i}: column ${quote(name)} must be finite, got ${v}`);
      }
    });
    if (kind === "long") {
      values.forEach((v, i) => {
        if (!isMissing(v) && !Number.isInteger(v)) {
          throw new Error(`row ${i}: column ${quote(name)} must be an integer, got ${v}`);
        }
      });
    }
    return values.map((v) => (isMissing(v) ? null : v));
  }

  /** Input columns from records by the server's rule and with its messages: names (inputs,
   * accepted and ignored, or refused), required values, types, integer codes. */
  function columnsFromRecords(records) {
    if (!Array.isArray(records) || !records.length) {
      throw new Error("no rows to score: send at least one record");
    }
    if (records.some((r) => r === null || typeof r !== "object" || Array.isArray(r))) {
      throw new Error("each row must be an object of column values (or a list in column order)");
    }
    const wanted = new Set(state.fields.map((f) => f.name));
    const rename = new Map();
    const unknown = [];
    for (const key of new Set(records.flatMap((r) => Object.keys(r)))) {
      if (wanted.has(key)) continue;
      const name = resolveName(key);
      if (wanted.has(name)) rename.set(key, name);
      else if (!acceptsUnread(key)) unknown.push(key);
    }
    if (unknown.length) throw new Error(unknownMessage(unknown));
    const raw = {};
    for (const f of state.fields) raw[f.name] = new Array(records.length).fill(null);
    records.forEach((r, i) => {
      const seen = new Map();
      for (const [key, v] of Object.entries(r)) {
        const name = rename.get(key) || key;
        if (!wanted.has(name)) continue;
        if (seen.has(name)) {
          const spelled = [seen.get(name), key].map(String).sort();
          throw new Error(`row ${i}: two names for column ${quote(name)} (${quote(spelled[0])} ` +
                          `and ${quote(spelled[1])})`);
        }
        seen.set(name, key);
        raw[name][i] = v === undefined ? null : v;
      }
    });
    const columns = {};
    for (const name of state.names) {
      if (wanted.has(name)) columns[name] = recordValues(name, raw[name]);
    }
    return columns;
  }

  /** For scripts: records are objects of column values (names or the contract's aliases),
   * null (or NaN) for missing; a value outside the contract is refused, naming it. */
  async function predict(records) {
    if (!state.session) throw new Error("the model is not loaded yet");
    const columns = columnsFromRecords(records);
    const problem = contractProblem(columns, records.length, (i) => `row ${i}`);
    if (problem) throw new Error(problem);
    return predictColumns(columns, records.length);
  }

  // ------------------------------------------------------------------ the form
  function buildForm(schema) {
    const box = $("fields");
    box.textContent = "";
    for (const c of schema.columns) {
      const label = document.createElement("label");
      const title = document.createElement("span");
      title.textContent = c.required ? c.name : `${c.name} (may be missing)`;
      label.append(title);
      let input;
      if (c.type === "string" && Array.isArray(c.categories) && c.categories.length) {
        input = document.createElement("select");
        const none = new Option("(missing)", "");
        none.dataset.missing = "true";
        input.append(none, ...c.categories.map((k) => new Option(k, k)));
        input.value = c.required ? c.categories[0] : "";
      } else if (c.type === "string") {
        input = document.createElement("input");
        input.type = "text";
        input.placeholder = "empty = missing";
      } else {
        input = document.createElement("input");
        input.type = "number";
        input.step = "any";
        if (typeof c.min === "number") input.min = String(c.min);
        if (typeof c.max === "number") input.max = String(c.max);
        input.placeholder = "empty = missing";
      }
      input.name = c.name;
      input.id = `in-${c.name}`;
      input.dataset.kind = c.type === "string" ? "string" : "number";
      label.append(input);
      box.append(label);
    }
  }

  function formRecord() {
    const record = {};
    for (const el of $("fields").querySelectorAll("[name]")) {
      const v = el.value.trim();
      if (el.dataset.kind === "string") record[el.name] = v === "" ? null : v;
      else record[el.name] = v === "" ? NaN : Number(v);
    }
    return record;
  }

  async function onSubmit(event) {
    event.preventDefault();
    const out = $("result");
    try {
      const [r] = await predict([formRecord()]);
      state.formRuns += 1;
      out.classList.remove("error");
      for (const k of ["probability", "probabilities", "prediction", "label", "class"]) {
        delete out.dataset[k];
      }
      const version = `model version ${state.metadata.version}`;
      if (state.task === "regression") {
        out.dataset.prediction = String(r.prediction);
        out.title = String(r.prediction);
        out.textContent = `Prediction ${formatValue(r.prediction)} (${version})`;
      } else if (state.task === "binary") {
        out.dataset.probability = String(r.probability);
        out.title = String(r.probability);
        out.textContent = `Probability ${r.probability.toFixed(4)}, label ${r.label} ` +
          `(${r.class}; ${version}, threshold ${state.threshold})`;
      } else {
        out.dataset.probabilities = JSON.stringify(r.probabilities);
        out.title = out.dataset.probabilities;
        const each = state.classes.map((c) => `${c} ${r.probabilities[c].toFixed(4)}`);
        out.textContent = `Class ${r.class} (label ${r.label}; ${version}): ${each.join(", ")}`;
      }
      if (state.task !== "regression") {
        out.dataset.label = String(r.label);
        out.dataset.class = r.class;
      }
      out.dataset.version = String(state.metadata.version);
      out.dataset.run = String(state.formRuns);
      window.tarnResults.form = { ...r, run: state.formRuns };
      explainRow(formRecord(), r, state.formRuns);
    } catch (e) {
      state.formRuns += 1;
      out.classList.add("error");
      for (const k of ["probability", "probabilities", "prediction", "label", "class"]) {
        delete out.dataset[k];
      }
      out.dataset.run = String(state.formRuns);
      out.textContent = `Error: ${e.message || e}`;
    }
  }

  // ------------------------------------------------------------------ why
  /** Ask the backend for one row's contributions; show the largest, or say why there are none. */
  async function explainRow(record, local, run) {
    const box = $("why"), status = $("why-status"), table = $("why-table");
    table.hidden = true;
    table.replaceChildren();
    box.dataset.explained = "pending";
    status.textContent = "Asking the backend why…";
    let body;
    try {
      const r = await fetch(new URL("/explain", location.origin), {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify([record]), cache: "no-store",
      });
      body = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(body.message || `HTTP ${r.status}`);
    } catch (e) {
      if (run !== state.formRuns) return;
      box.dataset.explained = "unavailable";
      status.textContent = "No contributions: the backend's /explain did not answer " +
        `(${e.message || e}). The bundle in this browser does not compute them.`;
      window.tarnResults.explanation = null;
      return;
    }
    if (run !== state.formRuns) return;  // a newer row was scored meanwhile
    const p = body.predictions[0], e = p.explanation;
    const multi = typeof e.raw_score === "object";
    const cls = multi ? (p.class in e.contributions ? p.class : Object.keys(e.contributions)[0])
      : null;
    const contributions = multi ? e.contributions[cls] : e.contributions;
    const base = multi ? e.base_value[cls] : e.base_value;
    const raw = multi ? e.raw_score[cls] : e.raw_score;
    const top = Object.entries(contributions).slice(0, TOP_CONTRIBUTIONS);  // largest first
    const head = document.createElement("tr");
    for (const h of ["column", "value", "contribution"]) {
      const th = document.createElement("th");
      th.textContent = h;
      head.append(th);
    }
    table.append(head);
    for (const [name, v] of top) {
      const tr = document.createElement("tr");
      tr.dataset.column = name;
      tr.dataset.contribution = String(v);
      const value = record[name];
      const cells = [[name, ""], [isMissing(value) ? "missing" : String(value), ""],
                     [(v >= 0 ? "+" : "") + v.toFixed(4), `num ${v >= 0 ? "up" : "down"}`]];
      for (const [text, cls_] of cells) {
        const td = document.createElement("td");
        td.textContent = text;
        if (cls_) td.className = cls_;
        tr.append(td);
      }
      table.append(tr);
    }
    table.hidden = false;
    box.dataset.explained = "true";
    const others = Object.keys(contributions).length - top.length;
    const agree = body.model_version === String(state.metadata.version) ? ""
      : ` Note: the backend serves version ${body.model_version}, this page scored with ` +
        `version ${state.metadata.version}.`;
    status.textContent = `Backend version ${body.model_version}${multi ? `, class ${cls}` : ""}: ` +
      `base value ${base.toFixed(4)} + the contributions = raw score ${raw.toFixed(4)} ` +
      `(${body.explanation.raw_score}); the ${top.length} largest shown` +
      `${others > 0 ? `, ${others} smaller not` : ""}.${agree}`;
    window.tarnResults.explanation = { ...p, run, local };
  }

  // ------------------------------------------------------------------ CSV
  /** Rows of cells (with the line each ends on), like Python's csv.reader with
   * skipinitialspace=True: quoted fields, doubled quotes, CRLF or LF. */
  function parseCsv(text) {
    if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    const rows = [];
    let row = [], field = "", quoted = false, atStart = true, line = 1;
    const endField = () => { row.push(field); field = ""; atStart = true; };
    for (let i = 0; i < text.length; i++) {
      const ch = text[i];
      if (quoted) {
        if (ch === '"') {
          if (text[i + 1] === '"') { field += '"'; i++; } else quoted = false;
        } else {
          if (ch === "\n") line++;
          field += ch;
        }
      } else if (ch === '"' && atStart) {
        quoted = true;
        atStart = false;
      } else if (ch === " " && atStart) {
        // skip spaces after a delimiter
      } else if (ch === ",") {
        endField();
      } else if (ch === "\n" || ch === "\r") {
        if (ch === "\r" && text[i + 1] === "\n") i++;
        endField();
        rows.push({ cells: row, line });
        row = [];
        line++;
      } else {
        field += ch;
        atStart = false;
      }
    }
    if (quoted) throw new Error(`line ${line}: a quoted field is not closed`);
    if (field !== "" || row.length) { endField(); rows.push({ cells: row, line }); }
    return rows.filter((r) => !(r.cells.length === 1 && r.cells[0] === ""));  // blank lines
  }

  const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
  const SPECIAL = /^[+-]?(inf|infinity|nan)$/i;

  function parseNumber(cell) {
    if (NUMBER.test(cell)) return Number(cell);
    if (SPECIAL.test(cell)) {
      const sign = cell.startsWith("-") ? -1 : 1;
      return /nan/i.test(cell) ? NaN : sign * Infinity;
    }
    return undefined;
  }

  /** Input columns from CSV text: {columns, n}; throws naming the line and column. */
  function csvColumns(text) {
    const rows = parseCsv(text);
    if (!rows.length) throw new Error("empty file (expected a header row of column names)");
    const header = rows[0].cells.map((h) => h.trim());
    const wanted = new Set(state.fields.map((f) => f.name));
    const index = {};
    const unknown = [];
    header.forEach((h, i) => {
      const name = wanted.has(h) ? h : resolveName(h);
      if (!wanted.has(name)) {  // excluded, the target, batch: accepted, not an input
        if (!acceptsUnread(h)) unknown.push(h);
        return;
      }
      if (name in index) {
        throw new Error(`columns ${header[index[name]]} and ${h} both name ${name}`);
      }
      index[name] = i;
    });
    if (unknown.length) throw new Error(unknownMessage(unknown));
    const absent = state.fields.map((f) => f.name).filter((name) => !(name in index));
    if (absent.length) throw new Error(`missing column(s) ${absent.join(", ")}`);
    const columns = Object.fromEntries(state.fields.map((f) => [f.name, []]));
    const lines = [];
    for (const { cells, line } of rows.slice(1)) {
      if (cells.length !== header.length) {
        throw new Error(`line ${line}: ${cells.length} fields, the header has ${header.length}`);
      }
      for (const f of state.fields) {
        const cell = cells[index[f.name]].trim();
        let value;
        if (state.csvMissing.has(cell) && state.required.has(f.name)) {
          throw new Error(`line ${line}: ${requiredText(f.name)}`);
        }
        if (state.csvMissing.has(cell)) value = f.isString ? null : NaN;
        else if (f.isString) value = cell;
        else {
          value = parseNumber(cell);
          if (value === undefined) {
            throw new Error(`line ${line}: column ${quote(f.name)}: ${quote(cell)} ` +
                            "is not a number");
          }
        }
        columns[f.name].push(value);
      }
      lines.push(line);
    }
    const problem = contractProblem(columns, rows.length - 1, (i) => `line ${lines[i]}`);
    if (problem) throw new Error(problem);
    return { columns, n: rows.length - 1 };
  }

  function cellText(v) {
    return isMissing(v) ? "(missing)" : String(v);
  }

  function formatValue(v) {
    return Math.abs(v) >= 1000 ? v.toFixed(1) : v.toPrecision(6);
  }

  /** The result columns of the table: [header, cell text, class] per task. */
  function resultCells(r) {
    if (state.task === "regression") return [[formatValue(r.prediction), "num prediction"]];
    if (state.task === "binary") {
      return [[r.probability.toFixed(4), "num proba"], [String(r.label), "num label"],
              [r.class, "class"]];
    }
    return [[String(r.label), "num label"], [r.class, "class"],
            ...state.classes.map((c) => [r.probabilities[c].toFixed(4), "num proba"])];
  }

  function resultHeaders() {
    if (state.task === "regression") return ["prediction"];
    if (state.task === "binary") return ["probability", "label", "class"];
    return ["label", "class", ...state.classes.map((c) => `P(${c})`)];
  }

  function renderTable(columns, results) {
    const table = $("csv-results");
    table.textContent = "";
    const names = state.schema.columns.map((c) => c.name).filter((n) => n in columns);
    const head = table.createTHead().insertRow();
    for (const h of ["row", ...resultHeaders(), ...names]) {
      const th = document.createElement("th");
      th.textContent = h;
      head.append(th);
    }
    const body = table.createTBody();
    const shown = Math.min(results.length, CSV_SHOWN_ROWS);
    for (let i = 0; i < shown; i++) {
      const r = results[i];
      const tr = body.insertRow();
      tr.dataset.row = String(i);
      if (state.task === "binary") tr.dataset.probability = String(r.probability);
      if (state.task === "multiclass") tr.dataset.probabilities = JSON.stringify(r.probabilities);
      if (state.task === "regression") tr.dataset.prediction = String(r.prediction);
      else {
        tr.dataset.label = String(r.label);
        tr.dataset.class = r.class;
      }
      const cells = [[String(i + 1), "num"], ...resultCells(r)];
      for (const name of names) {
        const v = columns[name][i];
        cells.push([cellText(v), isMissing(v) ? "missing" : ""]);
      }
      for (const [text, cls] of cells) {
        const td = tr.insertCell();
        td.textContent = text;
        if (cls) td.className = cls;
      }
      tr.cells[1].title = String(state.task === "regression" ? r.prediction
        : state.task === "binary" ? r.probability : tr.dataset.probabilities);
    }
    table.dataset.rows = String(results.length);
    table.hidden = false;
  }

  /** The same columns as `tarn edge predict` writes for the task. */
  function downloadLink(results) {
    let header, line;
    if (state.task === "binary") {
      header = "proba,label";
      line = (r) => `${r.probability},${r.label}`;
    } else if (state.task === "multiclass") {
      header = [...state.classes.map((_, k) => `proba_${k}`), "label", "class"].join(",");
      line = (r) => [...state.classes.map((c) => r.probabilities[c]), r.label,
                     JSON.stringify(r.class)].join(",");
    } else {
      header = "prediction";
      line = (r) => String(r.prediction);
    }
    const text = `${header}\n` + results.map(line).join("\n");
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([text + "\n"], { type: "text/csv" }));
    a.download = "predictions.csv";
    a.textContent = `download ${header}`;
    return a;
  }

  /** One line about a file's results: labels of class 1, rows per class, or the mean. */
  function summary(results) {
    if (state.task === "binary") {
      return `${results.filter((r) => r.label === 1).length} with label 1`;
    }
    if (state.task === "multiclass") {
      const count = (c) => results.filter((r) => r.class === c).length;
      return state.classes.map((c) => `${count(c)} ${c}`).join(", ");
    }
    const mean = results.reduce((a, r) => a + r.prediction, 0) / results.length;
    return `mean prediction ${formatValue(mean)}`;
  }

  async function onCsv() {
    const file = $("csv").files[0];
    const status = $("csv-status");
    if (!file) return;
    state.csvRuns += 1;
    const run = String(state.csvRuns);
    status.classList.remove("error");
    status.dataset.state = "running";
    status.textContent = `Scoring ${file.name}…`;
    try {
      const { columns, n } = csvColumns(await file.text());
      if (n === 0) throw new Error("no rows under the header");
      const t0 = performance.now();
      const results = await predictColumns(columns, n);
      const ms = performance.now() - t0;
      renderTable(columns, results);
      status.textContent = `${file.name}: ${n} row(s) scored in ${ms.toFixed(0)} ms by model ` +
        `version ${state.metadata.version}; ${summary(results)}` +
        (n > CSV_SHOWN_ROWS ? `; the table shows the first ${CSV_SHOWN_ROWS}. ` : ". ");
      status.append(downloadLink(results));
      window.tarnResults.csv = { file: file.name, results, run: state.csvRuns };
      status.dataset.state = "done";
    } catch (e) {
      status.classList.add("error");
      status.dataset.state = "error";
      status.textContent = `${file.name}: ${e.message || e}`;
      $("csv-results").hidden = true;
    }
    status.dataset.run = run;
  }

  // ------------------------------------------------------------------ start
  function start() {
    $("row-form").addEventListener("submit", onSubmit);
    $("csv").addEventListener("change", onCsv);
    load().catch((e) => {
      const message = e && e.message ? e.message : String(e);
      window.tarnError = message;
      document.body.dataset.ready = "error";
      setStatus("error", `Cannot load the model: ${message}`);
    });
  }

  window.tarn = { predict, csvColumns, state };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
