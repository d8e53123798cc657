// The sign-in and registration forms: post JSON, keep the session in cookies, show errors
// next to the field they concern.
import { ApiError, api, refreshSession, withLock } from "./api.js";

const form = document.getElementById("auth-form");

function safeNext(target) {
  return target && target.startsWith("/") && !target.startsWith("//") && !target.startsWith("/\\") ? target : "/";
}

function clearErrors() {
  form.querySelector(".form-error").hidden = true;
  for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
}

function showError(err) {
  const message = err instanceof ApiError ? err.message : "The server could not be reached. Try again.";
  const slot = err instanceof ApiError && err.field ? form.querySelector(`.field-error[data-field="${err.field}"]`) : null;
  if (slot) {
    slot.textContent = message;
    return;
  }
  const general = form.querySelector(".form-error");
  general.textContent = message;
  general.hidden = false;
}

if (form) {
  const next = safeNext(form.dataset.next);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const data = { cookies: true };
    for (const [key, value] of new FormData(form)) {
      if (value !== "" || key === "email" || key === "password") data[key] = value;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await api("POST", form.dataset.endpoint, data);
      location.assign(next);
    } catch (err) {
      showError(err);
    } finally {
      button.disabled = false;
    }
  });
  // Back on the sign-in page with a live refresh cookie (the access token lapsed): go on.
  if (form.dataset.endpoint === "/api/auth/login") {
    withLock(refreshSession).then((alive) => {
      if (alive) location.replace(next);
    });
  }
}
