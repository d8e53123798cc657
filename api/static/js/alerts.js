// The alerting pages. On /alerts: the rules' enable switches, the test sends of rules and
// channels, and the dead letters' retry and delete. The rule and channel forms import the
// pieces they share with it: test results, parsing of list and key=value fields, and showing
// an error next to the field the API names.
import { ApiError, api } from "./api.js";

/** A problem with a field found before sending; `field` is named the way the API names it. */
export class FieldProblem extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

/** "a, b ,c" -> ["a", "b", "c"]. */
export function parseList(text) {
  return text
    .split(",")
    .map((part) => part.trim())
    .filter(Boolean);
}

/** Lines of key<sep>value -> an object; a line without the separator is a FieldProblem. */
export function parseLines(text, field, sep = "=") {
  const out = {};
  for (const [index, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line) continue;
    const at = line.indexOf(sep);
    if (at <= 0) throw new FieldProblem(field, `line ${index + 1}: write key${sep}value`);
    out[line.slice(0, at).trim()] = line.slice(at + sep.length).trim();
  }
  return out;
}

/** The shown error slot of `field` ("filters.service[0]" falls back to "filters.service"). */
export function errorSlot(form, field) {
  const parts = field.replace(/\[[^\]]*\]/g, "").split(".");
  while (parts.length) {
    const name = parts.join(".");
    for (const slot of form.querySelectorAll(".field-error[data-field]")) {
      if (slot.dataset.field === name && !slot.closest("[hidden]")) return slot;
    }
    parts.pop();
  }
  return null;
}

/** Empty every error slot of the form. */
export function clearErrors(form) {
  const general = form.querySelector(".form-error");
  general.hidden = true;
  general.textContent = "";
  for (const slot of form.querySelectorAll(".field-error")) slot.textContent = "";
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
}

/** Show an error next to its field when there is one, else above the buttons. */
export function showError(form, err) {
  const known = err instanceof ApiError || err instanceof FieldProblem;
  let message = known ? err.message : "The server could not be reached. Try again.";
  const slot = known && err.field ? errorSlot(form, err.field) : null;
  if (slot) {
    const prefix = `${err.field}: `;
    if (message.startsWith(prefix)) message = message.slice(prefix.length);
    const details = slot.closest("details");
    if (details) details.open = true;
    slot.textContent = message;
    const input = slot.parentElement.querySelector("input, select, textarea");
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
    return;
  }
  const general = form.querySelector(".form-error");
  general.textContent = message;
  general.hidden = false;
}

/** List each channel's answer to a test send. */
export function showResults(list, results) {
  list.replaceChildren(
    ...results.map((result) => {
      const item = document.createElement("li");
      item.className = result.ok ? "ok" : "failed";
      item.dataset.channel = result.channel;
      const name = document.createElement("span");
      name.className = "channel";
      name.textContent = result.channel;
      const outcome = document.createElement("span");
      outcome.className = "outcome";
      outcome.textContent = result.ok ? "ok" : `failed: ${result.error || "no answer"}`;
      item.append(name, " ", outcome);
      return item;
    }),
  );
  list.hidden = false;
}

/** Send a test notification through `path` and list the answers. */
export async function runTest(button, path, list, status) {
  button.disabled = true;
  list.hidden = true;
  status.textContent = "Sending…";
  try {
    const answer = await api("POST", path);
    showResults(list, answer.results);
    status.textContent = "";
  } catch (err) {
    status.textContent = err.message;
  } finally {
    button.disabled = false;
  }
}

function wireRules(table) {
  for (const row of table.querySelectorAll("tbody tr[data-rule-id]")) {
    const id = row.dataset.ruleId;
    const status = row.querySelector(".row-status");
    const toggle = row.querySelector("input[data-action=toggle]");
    if (toggle) {
      toggle.addEventListener("change", async () => {
        toggle.disabled = true;
        status.textContent = "Saving…";
        try {
          const rule = await api("PATCH", `/api/alert-rules/${id}`, { enabled: toggle.checked });
          toggle.checked = rule.enabled;
          row.dataset.enabled = String(rule.enabled);
          status.textContent = rule.enabled ? "enabled" : "disabled";
        } catch (err) {
          toggle.checked = !toggle.checked;
          status.textContent = err.message;
        } finally {
          toggle.disabled = false;
        }
      });
    }
    const test = row.querySelector("button[data-action=test]");
    if (test) {
      test.addEventListener("click", () =>
        runTest(test, `/api/alert-rules/${id}/test`, row.querySelector(".test-results"), status),
      );
    }
  }
}

function wireChannels(table) {
  for (const row of table.querySelectorAll("tbody tr[data-channel-id]")) {
    const test = row.querySelector("button[data-action=test]");
    if (test) {
      test.addEventListener("click", () =>
        runTest(
          test,
          `/api/alert-channels/${row.dataset.channelId}/test`,
          row.querySelector(".test-results"),
          row.querySelector(".row-status"),
        ),
      );
    }
  }
}

async function refreshStats() {
  const stats = await api("GET", "/api/notifications/stats");
  document.getElementById("stat-queued").textContent = String(stats.queued);
  document.getElementById("stat-pending").textContent = String(stats.pending);
  document.getElementById("stat-delayed").textContent = String(stats.delayed);
  document.getElementById("stat-dead").textContent = String(stats.dead_letters);
}

function wireDeadLetters(table) {
  const calls = {
    retry: (id) => api("POST", `/api/notifications/dead-letters/${encodeURIComponent(id)}/retry`),
    delete: (id) => api("DELETE", `/api/notifications/dead-letters/${encodeURIComponent(id)}`),
  };
  for (const row of table.querySelectorAll("tbody tr[data-dead-letter-id]")) {
    const status = row.querySelector(".row-status");
    for (const button of row.querySelectorAll("button[data-action]")) {
      button.addEventListener("click", async () => {
        const action = button.dataset.action;
        if (action === "delete" && !confirm("Delete this dead letter? Its notification will not be sent.")) return;
        button.disabled = true;
        try {
          await calls[action](row.dataset.deadLetterId);
          row.remove();
          if (!table.querySelector("tbody tr")) table.hidden = true;
          await refreshStats();
        } catch (err) {
          status.textContent = err.message;
          button.disabled = false;
        }
      });
    }
  }
}

const rules = document.getElementById("rule-table");
if (rules) wireRules(rules);
const channels = document.getElementById("channel-table");
if (channels) wireChannels(channels);
const deadLetters = document.getElementById("dead-letters");
if (deadLetters) wireDeadLetters(deadLetters);
