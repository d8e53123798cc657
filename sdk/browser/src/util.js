// Small helpers shared by the snippet's modules: ids, time, logging and value cleaning.

const PREFIX = "[AppGuard]";
let debugEnabled = false;

/** Turn the debug log on or off (the `debug` option). */
export function setDebug(on) {
  debugEnabled = Boolean(on);
}

/** Log when `debug` is on; the snippet never writes to the console otherwise, except for a bad config. */
export function debug(...args) {
  if (debugEnabled) {
    try {
      console.debug(PREFIX, ...args);
    } catch {
      // A page may have replaced console; logging must never fail the caller.
    }
  }
}

/** A warning the developer must see even without `debug` (a config the snippet cannot use). */
export function warn(...args) {
  try {
    console.warn(PREFIX, ...args);
  } catch {
    // As above.
  }
}

/** `bytes` random bytes as lowercase hex. */
export function randomHex(bytes) {
  const buf = new Uint8Array(bytes);
  const crypto = globalThis.crypto;
  if (crypto && typeof crypto.getRandomValues === "function") {
    crypto.getRandomValues(buf);
  } else {
    for (let i = 0; i < bytes; i += 1) buf[i] = Math.floor(Math.random() * 256);
  }
  let out = "";
  for (const b of buf) out += b.toString(16).padStart(2, "0");
  return out;
}

/** A version 4 UUID: crypto.randomUUID() where the page is a secure context, built by hand elsewhere. */
export function uuid() {
  const crypto = globalThis.crypto;
  if (crypto && typeof crypto.randomUUID === "function") {
    try {
      return crypto.randomUUID();
    } catch {
      // Fall through to the hand-made one.
    }
  }
  const h = randomHex(16).split("");
  h[12] = "4";
  h[16] = ((parseInt(h[16], 16) & 0x3) | 0x8).toString(16);
  const s = h.join("");
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
}

/** An error event's id: 32 lowercase hex digits. */
export function eventId() {
  return randomHex(16);
}

/** Now as an ISO 8601 string in UTC. */
export function isoNow() {
  return new Date().toISOString();
}

/**
 * A copy of `obj` whose values are all strings, finite numbers or booleans, as the wire contract
 * wants for `attributes` and `properties`: other values become their JSON text (or their string
 * form); undefined, functions and symbols are left out.
 */
export function scalars(obj) {
  const out = {};
  if (!obj || typeof obj !== "object") return out;
  for (const [key, value] of Object.entries(obj)) {
    if (typeof value === "string" || typeof value === "boolean") {
      out[key] = value;
    } else if (typeof value === "number") {
      out[key] = Number.isFinite(value) ? value : String(value);
    } else if (typeof value === "bigint") {
      out[key] = value.toString();
    } else if (value === null) {
      out[key] = "null";
    } else if (typeof value === "object") {
      out[key] = safeJson(value);
    }
  }
  return out;
}

function safeJson(value) {
  try {
    const text = JSON.stringify(value);
    return text === undefined ? String(value) : text;
  } catch {
    return String(value);
  }
}

/** Run `fn` and swallow what it throws: the snippet must never throw into the page. */
export function guard(what, fn) {
  return function guarded(...args) {
    try {
      return fn.apply(this, args);
    } catch (err) {
      debug(`${what} failed`, err);
      return undefined;
    }
  };
}
