// The issue page: status actions through the API, and the chart's range buttons.
import { api } from "./api.js";
import { loadChart } from "./charts.js";
import { ACTIONS } from "./issue-actions.js";

const head = document.getElementById("issue");
const issueId = head.dataset.issueId;
const project = head.dataset.projectId;
const status = document.getElementById("action-status");

for (const button of document.querySelectorAll("#issue-actions button[data-action]")) {
  button.addEventListener("click", async () => {
    status.textContent = "Saving…";
    try {
      await api("PUT", `/api/issues/${issueId}?project=${project}`, ACTIONS[button.dataset.action]);
      location.reload();
    } catch (err) {
      status.textContent = err.message;
    }
  });
}

const figure = document.getElementById("issue-chart");
for (const button of document.querySelectorAll(".chart-periods button[data-period]")) {
  button.addEventListener("click", () => {
    for (const other of document.querySelectorAll(".chart-periods button")) other.removeAttribute("aria-pressed");
    button.setAttribute("aria-pressed", "true");
    loadChart(figure, `/api/issues/${issueId}/stats?project=${project}&statsPeriod=${button.dataset.period}`);
  });
}
