// Charts of events per interval, drawn with uPlot (from npm, served under /vendor/uplot/).
// Each <figure class="chart" data-src="/api/..."> on the page is filled from the API's chart
// answer: one line for the total and one per service and environment.
import uPlot from "/vendor/uplot/uPlot.esm.js";
import { api } from "./api.js";

const PALETTE = ["#3056d3", "#d9480f", "#2b8a3e", "#9c36b5", "#e67700", "#0b7285", "#c2255c", "#5c940d"];
const MAX_SERIES = 8;

/** uPlot's columns for a chart answer: time, total, then the largest series. */
export function columns(chart) {
  const xs = chart.buckets.map((b) => Date.parse(b) / 1000);
  const series = [...chart.series].sort((a, b) => b.total - a.total).slice(0, MAX_SERIES);
  return {
    data: [xs, chart.totals, ...series.map((s) => s.counts)],
    labels: ["total", ...series.map((s) => [s.service_name || "(no service)", s.environment].filter(Boolean).join(" · "))],
  };
}

function draw(figure, chart) {
  const canvas = figure.querySelector(".chart-canvas");
  const empty = figure.querySelector(".chart-empty");
  canvas.replaceChildren();
  const total = chart.totals.reduce((sum, n) => sum + n, 0);
  figure.dataset.total = String(total);
  if (empty) empty.hidden = total > 0;
  const { data, labels } = columns(chart);
  const width = Math.max(canvas.clientWidth || figure.clientWidth || 600, 300);
  const options = {
    width,
    height: 220,
    scales: { x: { time: true } },
    axes: [{}, { size: 50 }],
    series: [
      {},
      ...labels.map((label, i) => ({
        label,
        stroke: i === 0 ? "#1d2330" : PALETTE[(i - 1) % PALETTE.length],
        width: i === 0 ? 2 : 1.5,
        fill: i === 0 ? "rgba(48, 86, 211, 0.08)" : undefined,
        points: { show: false },
      })),
    ],
  };
  const plot = new uPlot(options, data, canvas);
  figure.chartPlot = plot;
  figure.dataset.ready = "true";
  return plot;
}

/** Fetch the chart at src and draw it in the figure. */
export async function loadChart(figure, src) {
  figure.dataset.ready = "false";
  try {
    const answer = await api("GET", src);
    draw(figure, answer.chart);
    figure.dataset.src = src;
  } catch (err) {
    figure.querySelector(".chart-canvas").textContent = `The chart could not be loaded: ${err.message}`;
    figure.dataset.ready = "error";
  }
}

for (const figure of document.querySelectorAll("figure.chart[data-src]")) {
  loadChart(figure, figure.dataset.src);
}
