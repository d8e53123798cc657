// Core Web Vitals from the web-vitals package, kept until the page is hidden and then sent in one
// batch.

import { onCLS, onFCP, onINP, onLCP, onTTFB } from "web-vitals";

/** Start measuring; `collect(metric)` receives each report (a later one replaces an earlier one of the same id). */
export function installVitals(collect) {
  for (const on of [onTTFB, onFCP, onLCP, onINP, onCLS]) {
    try {
      on((metric) => collect(metric));
    } catch {
      // A browser without the needed PerformanceObserver types measures less; nothing to report.
    }
  }
}

/** A web-vitals metric in the wire contract's shape. */
export function metricFields(metric) {
  return {
    name: metric.name,
    value: metric.value,
    rating: metric.rating,
    id: metric.id,
    navigation_type: metric.navigationType || "navigate",
  };
}
