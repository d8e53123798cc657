// The issue list: select issues and change their status in one request.
import { api } from "./api.js";
import { ACTIONS } from "./issue-actions.js";

const table = document.getElementById("issue-table");
const bar = document.getElementById("bulk-bar");

function chosenProject() {
  const select = document.querySelector("#filters select[name=project]");
  return select && select.value ? Number(select.value) : 1;
}

function picked() {
  return [...document.querySelectorAll("#issue-table input[name=id]:checked")].map((box) => Number(box.value));
}

function refresh() {
  const count = picked().length;
  for (const button of bar.querySelectorAll("button[data-action]")) button.disabled = count === 0;
  document.getElementById("bulk-status").textContent = count ? `${count} selected` : "";
}

if (bar && table) {
  const all = document.getElementById("select-all");
  all.addEventListener("change", () => {
    for (const box of table.querySelectorAll("input[name=id]")) box.checked = all.checked;
    refresh();
  });
  table.addEventListener("change", refresh);
  for (const button of bar.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", async () => {
      const ids = picked();
      if (!ids.length) return;
      try {
        const answer = await api("PUT", "/api/issues", { ids, project: chosenProject(), ...ACTIONS[button.dataset.action] });
        document.getElementById("bulk-status").textContent = `${answer.updated.length} changed`;
        location.reload();
      } catch (err) {
        document.getElementById("bulk-status").textContent = err.message;
      }
    });
  }
}
