// The alert rule form: shows the fields of the chosen kind, builds the rule's JSON and sends
// it to the API, shows a refusal next to the field it names; on a saved rule also its test
// send, its deletion and its history.
import { api } from "./api.js";
import { FieldProblem, clearErrors, parseLines, parseList, runTest, showError } from "./alerts.js";

const form = document.getElementById("rule-form");
const ruleId = form.dataset.ruleId;
const one = (name) => form.querySelector(`[name="${name}"]`);
const kindSelect = one("kind");

function group(kind) {
  return form.querySelector(`fieldset[data-kind="${kind}"]`);
}

function showKind() {
  const kind = kindSelect.value;
  for (const fieldset of form.querySelectorAll("fieldset[data-kind]")) {
    const shown = fieldset.dataset.kind.split(" ").includes(kind);
    fieldset.hidden = !shown;
    fieldset.disabled = !shown;
  }
}

function showWhen() {
  const frequency = group("issue").querySelector("[name=when]").value === "frequency";
  for (const label of form.querySelectorAll("[data-when]")) label.hidden = !frequency;
}

function showUnits() {
  const threshold = group("threshold");
  const percent = threshold.querySelector("[name=compare]").value === "percent_change";
  const rate = threshold.querySelector("[name=measure]").value === "rate";
  for (const hint of threshold.querySelectorAll("[data-unit]")) {
    hint.textContent = percent ? "% change" : rate ? "errors per second" : "errors";
  }
}

function text(input) {
  return input.value.trim();
}

function setText(out, key, input) {
  const value = text(input);
  if (value !== "") out[key] = value;
}

function numberOf(input, field) {
  const value = text(input);
  if (value === "") return null;
  const parsed = Number(value);
  if (!Number.isFinite(parsed)) throw new FieldProblem(field, "must be a number");
  return parsed;
}

/** The rule as the API takes it; empty durations are left out, so the defaults apply. */
function rule() {
  const kind = kindSelect.value;
  const own = group(kind);
  const get = (name) => own.querySelector(`[name="${name}"]`);
  const body = {
    kind,
    name: text(one("name")),
    description: one("description").value.trim(),
    enabled: one("enabled").checked,
    channels: [...form.querySelectorAll("input[name=channels]:checked")].map((box) => box.value),
    labels: parseLines(one("labels").value, "labels"),
    grouping: { group_by: parseList(one("grouping.group_by").value) },
  };
  for (const key of ["group_wait", "group_interval", "repeat_interval"]) {
    setText(body.grouping, key, one(`grouping.${key}`));
  }
  if (kind === "issue" || kind === "threshold") {
    body.filters = {
      service: parseList(one("filters.service").value),
      environment: parseList(one("filters.environment").value),
      level: parseList(one("filters.level").value),
      exception_type: parseList(one("filters.exception_type").value),
      tags: parseLines(one("filters.tags").value, "filters.tags"),
    };
  }
  if (kind === "issue") {
    body.when = get("when").value;
    if (body.when === "frequency") {
      body.events = numberOf(get("events"), "events");
      body.users = numberOf(get("users"), "users");
      setText(body, "window", get("window"));
    }
    setText(body, "action_interval", get("action_interval"));
    body.severity = get("severity").value;
  } else if (kind === "threshold") {
    body.measure = get("measure").value;
    setText(body, "window", get("window"));
    body.per = [...own.querySelectorAll("input[name=per]:checked")].map((box) => box.value);
    body.compare = get("compare").value;
    body.warning = numberOf(get("warning"), "warning");
    body.critical = numberOf(get("critical"), "critical");
    setText(body, "for", get("for"));
  } else {
    body.expr = get("expr").value.trim();
    setText(body, "for", get("for"));
    body.severity = get("severity").value;
    body.annotations = parseLines(get("annotations").value, "annotations");
  }
  return body;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  const button = form.querySelector("button[type=submit]");
  const status = document.getElementById("save-status");
  button.disabled = true;
  status.textContent = "Saving…";
  try {
    const body = rule();
    if (ruleId) await api("PUT", `/api/alert-rules/${ruleId}`, body);
    else await api("POST", "/api/alert-rules", body);
    location.assign("/alerts");
  } catch (err) {
    status.textContent = "";
    showError(form, err);
  } finally {
    button.disabled = false;
  }
});

kindSelect.addEventListener("change", showKind);
group("issue").querySelector("[name=when]").addEventListener("change", showWhen);
for (const name of ["compare", "measure"]) group("threshold").querySelector(`[name=${name}]`).addEventListener("change", showUnits);
showKind();
showWhen();
showUnits();

// ---- a saved rule: test, delete, history

const testButton = document.getElementById("test-rule");
if (testButton) {
  testButton.addEventListener("click", () =>
    runTest(
      testButton,
      `/api/alert-rules/${ruleId}/test`,
      document.getElementById("test-results"),
      document.querySelector("#rule-test .row-status"),
    ),
  );
}

const deleteButton = document.getElementById("delete-rule");
if (deleteButton) {
  deleteButton.addEventListener("click", async () => {
    if (!confirm(`Delete the rule ${one("name").defaultValue}? Its history goes with it.`)) return;
    clearErrors(form);
    deleteButton.disabled = true;
    try {
      await api("DELETE", `/api/alert-rules/${ruleId}`);
      location.assign("/alerts");
    } catch (err) {
      showError(form, err);
      deleteButton.disabled = false;
    }
  });
}

const HISTORY_PAGE = 50;
const HIDDEN_LABELS = new Set(["alertname", "rule", "severity"]);
let oldest = null;

function cell(row, ...content) {
  const td = row.insertCell();
  td.append(...content);
  return td;
}

function badge(text, className) {
  const span = document.createElement("span");
  span.className = `badge ${className}`;
  span.textContent = text;
  return span;
}

function historyRow(tbody, change) {
  const row = tbody.insertRow();
  const when = document.createElement("time");
  when.dateTime = change.at;
  when.textContent = `${new Date(change.at).toISOString().slice(0, 19).replace("T", " ")} UTC`;
  cell(row, when);
  cell(
    row,
    badge(change.from_state, `alert-state state-${change.from_state}`),
    " → ",
    badge(change.to_state, `alert-state state-${change.to_state}`),
  );
  cell(row, badge(change.severity, `severity severity-${change.severity}`));
  cell(row, change.value === null ? "" : String(change.value)).className = "num";
  const labels = Object.entries(change.labels)
    .filter(([key]) => !HIDDEN_LABELS.has(key))
    .map(([key, value]) => {
      const code = document.createElement("code");
      code.className = "chip";
      code.textContent = `${key}=${value}`;
      return code;
    });
  cell(row, ...labels);
}

async function loadHistory() {
  const table = document.getElementById("history-table");
  const status = document.getElementById("history-status");
  const more = document.getElementById("history-more");
  const query = new URLSearchParams({ limit: String(HISTORY_PAGE) });
  if (oldest) query.set("before", oldest);
  more.disabled = true;
  try {
    const answer = await api("GET", `/api/alert-rules/${ruleId}/history?${query}`);
    for (const change of answer.history) historyRow(table.tBodies[0], change);
    if (answer.history.length) oldest = answer.history[answer.history.length - 1].at;
    const count = table.tBodies[0].rows.length;
    table.hidden = count === 0;
    table.dataset.count = String(count);
    status.textContent = count ? "" : "No state changes yet.";
    more.hidden = answer.history.length < HISTORY_PAGE;
  } catch (err) {
    status.textContent = `The history could not be loaded: ${err.message}`;
  } finally {
    more.disabled = false;
  }
}

if (ruleId) {
  document.getElementById("history-more").addEventListener("click", loadHistory);
  loadHistory();
}
