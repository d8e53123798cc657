// The notification channel form: shows the fields of the chosen type, builds the channel's
// JSON and sends it to the API, shows a refusal next to the field it names; on a saved
// channel also its test send and its deletion. Secrets come as ******** and are sent back so
// (the API then keeps the stored value); an emptied optional secret is removed.
import { api } from "./api.js";
import { FieldProblem, clearErrors, parseLines, parseList, runTest, showError } from "./alerts.js";

const form = document.getElementById("channel-form");
const channelId = form.dataset.channelId;
const one = (name) => form.querySelector(`[name="${name}"]`);
const typeSelect = one("type");

function showType() {
  for (const fieldset of form.querySelectorAll("fieldset[data-type]")) {
    const shown = fieldset.dataset.type === typeSelect.value;
    fieldset.hidden = !shown;
    fieldset.disabled = !shown;
  }
}

function valueOf(input) {
  const field = `spec.${input.name}`;
  if (input.type === "checkbox") return input.checked;
  if (input.name === "to") return parseList(input.value);
  if (input.name === "headers") return parseLines(input.value, field, ":");
  // Secrets as typed (spaces may belong to them); other text trimmed.
  const value = input.dataset.secret !== undefined ? input.value : input.value.trim();
  if (value === "") return input.dataset.optional !== undefined ? null : "";
  if (input.type === "number") {
    const parsed = Number(value);
    if (!Number.isInteger(parsed)) throw new FieldProblem(field, "must be a whole number");
    return parsed;
  }
  return value;
}

/** The channel as the API takes it. */
function channel() {
  const type = typeSelect.value;
  const spec = { type };
  const own = form.querySelector(`fieldset[data-type="${type}"]`);
  for (const input of own.querySelectorAll("[name]")) spec[input.name] = valueOf(input);
  const timeout = one("timeout").value.trim();
  if (timeout !== "") spec.timeout = timeout;
  return { name: one("name").value.trim(), spec };
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  const button = form.querySelector("button[type=submit]");
  const status = document.getElementById("save-status");
  button.disabled = true;
  status.textContent = "Saving…";
  try {
    const body = channel();
    if (channelId) await api("PUT", `/api/alert-channels/${channelId}`, body);
    else await api("POST", "/api/alert-channels", body);
    location.assign("/alerts");
  } catch (err) {
    status.textContent = "";
    showError(form, err);
  } finally {
    button.disabled = false;
  }
});

typeSelect.addEventListener("change", showType);
showType();

const testButton = document.getElementById("test-channel");
if (testButton) {
  testButton.addEventListener("click", () =>
    runTest(
      testButton,
      `/api/alert-channels/${channelId}/test`,
      document.getElementById("test-results"),
      document.querySelector("#channel-test .row-status"),
    ),
  );
}

const deleteButton = document.getElementById("delete-channel");
if (deleteButton) {
  deleteButton.addEventListener("click", async () => {
    if (!confirm(`Delete the channel ${one("name").defaultValue}?`)) return;
    clearErrors(form);
    deleteButton.disabled = true;
    try {
      await api("DELETE", `/api/alert-channels/${channelId}`);
      location.assign("/alerts");
    } catch (err) {
      // A channel rules send to is refused (409): say so on the form.
      showError(form, err);
      deleteButton.disabled = false;
    }
  });
}
