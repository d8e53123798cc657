// W3C baggage on the page's own requests: fetch and XMLHttpRequest calls to the origins named in
// `propagateTo` carry `session.id=<id>`, so backend spans can be joined to the session.

import { debug } from "./util.js";

const MEMBER_KEY = "session.id";

/** Whether `url` (absolute) is one `propagateTo` names: an origin, a URL prefix or a RegExp. */
export function matchesTargets(url, targets) {
  let parsed;
  try {
    parsed = new URL(url, globalThis.location && globalThis.location.href);
  } catch {
    return false;
  }
  const href = parsed.href;
  for (const target of targets) {
    if (target instanceof RegExp) {
      target.lastIndex = 0;
      if (target.test(href)) return true;
      continue;
    }
    let base;
    try {
      base = new URL(target);
    } catch {
      continue;
    }
    // A bare origin ("https://api.example.com") matches that origin only, never a longer host
    // name that merely starts the same; anything with a path is a prefix of the URL.
    const bareOrigin = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]+\/?$/i.test(target);
    if (bareOrigin ? parsed.origin === base.origin : href.startsWith(base.href)) return true;
  }
  return false;
}

/** `existing` baggage with `session.id` set to `sessionId`, other members kept as they were. */
export function mergeBaggage(existing, sessionId) {
  const members = (existing || "")
    .split(",")
    .map((m) => m.trim())
    .filter((m) => m && m.split(/[=;]/, 1)[0].trim() !== MEMBER_KEY);
  members.push(`${MEMBER_KEY}=${encodeURIComponent(sessionId)}`);
  return members.join(",");
}

function requestUrl(input) {
  if (typeof input === "string") return input;
  if (input instanceof URL) return input.href;
  if (input && typeof input.url === "string") return input.url;
  return String(input);
}

/**
 * Wrap window.fetch and XMLHttpRequest so that requests to `targets` carry the session's baggage.
 * `sessionId()` gives the id in force. Returns the fetch the page had before (for the snippet's
 * own requests, which never carry baggage).
 */
export function installBaggage(targets, sessionId) {
  const originalFetch = globalThis.fetch;
  if (!targets.length) return originalFetch;
  if (typeof originalFetch === "function") {
    globalThis.fetch = function fetchWithBaggage(input, init) {
      let args = [input, init];
      try {
        if (matchesTargets(requestUrl(input), targets)) {
          const id = sessionId();
          if (id) args = withBaggage(input, init, id);
        }
      } catch (err) {
        debug("could not add baggage to fetch", err);
      }
      return originalFetch.apply(globalThis, args);
    };
  }
  patchXhr(targets, sessionId);
  return originalFetch;
}

function withBaggage(input, init, id) {
  if (typeof Request === "function" && input instanceof Request) {
    const request = new Request(input, init);
    request.headers.set("baggage", mergeBaggage(request.headers.get("baggage"), id));
    return [request];
  }
  const headers = new Headers((init && init.headers) || undefined);
  headers.set("baggage", mergeBaggage(headers.get("baggage"), id));
  return [input, { ...(init || {}), headers }];
}

function patchXhr(targets, sessionId) {
  const XHR = globalThis.XMLHttpRequest;
  if (typeof XHR !== "function") return;
  const proto = XHR.prototype;
  const state = new WeakMap();
  const { open, setRequestHeader, send } = proto;
  proto.open = function openWithBaggage(method, url, ...rest) {
    try {
      state.set(this, { url: String(url), baggage: null });
    } catch {
      // Never in the page's way.
    }
    return open.call(this, method, url, ...rest);
  };
  proto.setRequestHeader = function setRequestHeaderWithBaggage(name, value) {
    const s = state.get(this);
    // Hold the page's own baggage back until send(): setRequestHeader appends, so setting the
    // merged value then would repeat the members.
    if (s && String(name).toLowerCase() === "baggage" && matchesTargets(s.url, targets)) {
      s.baggage = s.baggage ? `${s.baggage},${value}` : String(value);
      return undefined;
    }
    return setRequestHeader.call(this, name, value);
  };
  proto.send = function sendWithBaggage(body) {
    try {
      const s = state.get(this);
      if (s && matchesTargets(s.url, targets)) {
        const id = sessionId();
        const value = id ? mergeBaggage(s.baggage, id) : s.baggage;
        if (value) setRequestHeader.call(this, "baggage", value);
      }
    } catch (err) {
      debug("could not add baggage to XMLHttpRequest", err);
    }
    return send.call(this, body);
  };
}
