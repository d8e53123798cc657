// The projects page: create a project, change its name or platform, add and revoke keys, copy
// a DSN. Every change goes to the REST API; a refusal is shown next to the field it names.
import { api } from "./api.js";
import { FieldProblem, clearErrors, showError } from "./alerts.js";

/** Show the page again, fresh from the server, at a project's section. */
function reloadAt(projectId) {
  history.replaceState(null, "", `/projects#project-${projectId}`);
  location.reload();
}

/** On submit, `send()` the form to the API (it answers the project to show), or show why not. */
function wireForm(form, send) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      reloadAt(await send());
    } catch (err) {
      showError(form, err);
      button.disabled = false;
    }
  });
}

const valueOf = (form, name) => form.querySelector(`[name="${name}"]`).value.trim();

/** The rate limit field as the API takes it: a whole number, or left out. */
function rateLimit(form) {
  const text = valueOf(form, "rate_limit");
  if (text === "") return undefined;
  const parsed = Number(text);
  if (!Number.isInteger(parsed)) throw new FieldProblem("rate_limit", "must be a whole number");
  return parsed;
}

/** Copy the DSN; where the clipboard is out of reach, select it for the user to copy. */
async function copyDsn(code) {
  try {
    await navigator.clipboard.writeText(code.textContent);
    return "Copied";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(code);
    const selection = getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    return document.execCommand("copy") ? "Copied" : "Selected: press Ctrl+C to copy";
  }
}

function revokedBadge() {
  const badge = document.createElement("span");
  badge.className = "badge enabled-off";
  badge.textContent = "revoked";
  return badge;
}

async function revoke(row, projectId, button, status) {
  if (!confirm("Revoke this key? Events sent with its DSN will be refused from now on.")) return;
  button.disabled = true;
  try {
    const key = await api("DELETE", `/api/projects/${projectId}/keys/${row.dataset.keyId}`);
    row.dataset.active = String(key.active);
    row.querySelector(".key-status").replaceChildren(revokedBadge());
    row.querySelector("code.dsn").classList.add("muted");
    for (const action of row.querySelectorAll("button[data-action]")) action.remove();
    status.textContent = "Revoked";
  } catch (err) {
    status.textContent = err.message;
    button.disabled = false;
  }
}

function wireKeys(section) {
  const projectId = section.dataset.projectId;
  for (const row of section.querySelectorAll("tr[data-key-id]")) {
    const status = row.querySelector(".row-status");
    const copy = row.querySelector("button[data-action=copy]");
    if (copy) {
      copy.addEventListener("click", async () => {
        status.textContent = await copyDsn(row.querySelector("code.dsn"));
      });
    }
    const revokeButton = row.querySelector("button[data-action=revoke]");
    if (revokeButton) revokeButton.addEventListener("click", () => revoke(row, projectId, revokeButton, status));
  }
}

const projectForm = document.getElementById("project-form");
if (projectForm) {
  wireForm(projectForm, async () => {
    const body = { name: valueOf(projectForm, "name"), platform: valueOf(projectForm, "platform") };
    return (await api("POST", "/api/projects", body)).id;
  });
}

for (const section of document.querySelectorAll("section.project[data-project-id]")) {
  wireKeys(section);
  const projectId = section.dataset.projectId;
  const keyForm = section.querySelector("form.key-form");
  if (keyForm) {
    wireForm(keyForm, async () => {
      const body = { label: valueOf(keyForm, "label"), rate_limit: rateLimit(keyForm) };
      await api("POST", `/api/projects/${projectId}/keys`, body);
      return projectId;
    });
  }
  const settings = section.querySelector("form.settings-form");
  if (settings) {
    wireForm(settings, async () => {
      const body = { name: valueOf(settings, "name"), platform: valueOf(settings, "platform") };
      await api("PATCH", `/api/projects/${projectId}`, body);
      return projectId;
    });
  }
}
