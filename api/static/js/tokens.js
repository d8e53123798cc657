// The API tokens page: create a token (its secret is shown once, here), copy it, revoke tokens.
// Every change goes to the REST API (/api/tokens); a refusal is shown next to the field it names.
import { api } from "./api.js";
import { FieldProblem, clearErrors, showError } from "./alerts.js";

const form = document.getElementById("token-form");
const table = document.getElementById("token-table");
const empty = document.getElementById("no-tokens");

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

/** The row of a token just created, like those the server renders. */
function tokenRow(token) {
  const row = document.createElement("tr");
  row.dataset.tokenId = String(token.id);
  const prefix = document.createElement("code");
  prefix.textContent = `${token.prefix}…`;
  const shown = cell("");
  shown.append(prefix);
  const actions = cell("", "row-actions");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "small danger";
  button.dataset.action = "revoke";
  button.textContent = "Revoke";
  const status = document.createElement("span");
  status.className = "row-status muted";
  status.setAttribute("role", "status");
  actions.append(button, " ", status);
  row.append(
    cell(token.name, "token-name"),
    shown,
    cell(token.role || "same as mine"),
    cell("just now"),
    cell("never"),
    cell(token.expires_at ? token.expires_at.slice(0, 10) : "never"),
    actions,
  );
  wireRow(row);
  return row;
}

function wireRow(row) {
  const button = row.querySelector("button[data-action=revoke]");
  const status = row.querySelector(".row-status");
  button.addEventListener("click", async () => {
    const name = row.querySelector(".token-name").textContent;
    if (!confirm(`Revoke the token "${name}"? Whatever uses it will be refused from now on.`)) return;
    button.disabled = true;
    try {
      await api("DELETE", `/api/tokens/${row.dataset.tokenId}`);
      row.remove();
      if (!table.querySelector("tbody tr")) {
        table.hidden = true;
        empty.hidden = false;
      }
    } catch (err) {
      status.textContent = err.message;
      button.disabled = false;
    }
  });
}

/** The form as the API takes it; empty optional fields are left out. */
function request() {
  const body = { name: form.elements.name.value.trim() };
  if (form.elements.role.value) body.role = form.elements.role.value;
  const days = form.elements.expires_in_days.value.trim();
  if (days !== "") {
    const parsed = Number(days);
    if (!Number.isInteger(parsed)) throw new FieldProblem("expires_in_days", "must be a whole number of days");
    body.expires_in_days = parsed;
  }
  return body;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const token = await api("POST", "/api/tokens", request());
    document.getElementById("token-secret").textContent = token.token;
    document.getElementById("copy-status").textContent = "";
    document.getElementById("token-created").hidden = false;
    table.querySelector("tbody").prepend(tokenRow(token));
    table.hidden = false;
    empty.hidden = true;
    form.reset();
  } catch (err) {
    showError(form, err);
  } finally {
    button.disabled = false;
  }
});

document.getElementById("copy-token").addEventListener("click", async () => {
  const secret = document.getElementById("token-secret");
  const status = document.getElementById("copy-status");
  try {
    await navigator.clipboard.writeText(secret.textContent);
    status.textContent = "Copied";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(secret);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    status.textContent = "Selected: press Ctrl+C to copy";
  }
});

for (const row of table.querySelectorAll("tbody tr[data-token-id]")) wireRow(row);
