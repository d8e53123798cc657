// Page views: the load, and the client-side navigations of single-page applications
// (history.pushState / replaceState when the path or query changes, back/forward, hash changes).

function pathAndQuery(href) {
  try {
    const url = new URL(href);
    return url.origin + url.pathname + url.search;
  } catch {
    return href;
  }
}

/**
 * Call `report(navigation, referrer)` on the load and at each navigation; `navigation` is
 * "load", "push", "replace", "pop" or "hash" and `referrer` the URL the page was on before.
 */
export function installPageviews(report) {
  let last = globalThis.location.href;
  report("load", globalThis.document.referrer || "");

  const moved = (navigation) => {
    const referrer = last;
    last = globalThis.location.href;
    report(navigation, referrer);
  };

  const history = globalThis.history;
  for (const [method, navigation] of [["pushState", "push"], ["replaceState", "replace"]]) {
    const original = history[method];
    if (typeof original !== "function") continue;
    history[method] = function patchedHistory(...args) {
      const result = original.apply(this, args);
      try {
        if (pathAndQuery(globalThis.location.href) !== pathAndQuery(last)) moved(navigation);
        else last = globalThis.location.href;
      } catch {
        // The page's navigation happened; our report is what failed, and it must not show.
      }
      return result;
    };
  }
  // Going back or forward over a hash-only step fires popstate and then hashchange: popstate
  // reports path or query changes, hashchange the rest, so one move is one page view.
  globalThis.addEventListener("popstate", () => {
    if (pathAndQuery(globalThis.location.href) !== pathAndQuery(last)) moved("pop");
  });
  globalThis.addEventListener("hashchange", () => {
    if (globalThis.location.href !== last) moved("hash");
  });
}
