// The options AppGuard.init() takes, their defaults, and how a script tag's data-* attributes map
// onto them.

import { warn } from "./util.js";

const KEY = /^[0-9a-f]{32}$/;

/** The replay options' defaults (the `replay` object of AppGuard.init). */
export const REPLAY_DEFAULTS = Object.freeze({
  sampleRate: 1.0,
  onErrorSampleRate: 1.0,
  bufferSeconds: 60,
  maskAllInputs: true,
  maskTextSelector: null,
  blockSelector: ".ag-block",
  ignoreSelector: null,
  flushSeconds: 5,
  maxChunkBytes: 256 * 1024,
});

/** The top-level defaults; `endpoint` defaults to the origin the script was loaded from. */
export const DEFAULTS = Object.freeze({
  endpoint: null,
  key: null,
  service: "web",
  environment: "production",
  release: null,
  user: null,
  propagateTo: [],
  sessionIdleMinutes: 30,
  sessionMaxHours: 4,
  debug: false,
});

/** A configuration the snippet cannot start with. */
export class ConfigError extends Error {}

function rate(value, name) {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new ConfigError(`${name} must be a number from 0 to 1 (got ${value})`);
  return n;
}

function positive(value, name) {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new ConfigError(`${name} must be a positive number (got ${value})`);
  return n;
}

function selector(value, name) {
  if (value === null || value === undefined || value === "") return null;
  if (typeof value !== "string") throw new ConfigError(`${name} must be a CSS selector string`);
  return value;
}

/** `user` as the wire wants it: {id, email, username}, strings, only those set; null when empty. */
export function normalizeUser(user) {
  if (!user || typeof user !== "object") return null;
  const out = {};
  for (const field of ["id", "email", "username"]) {
    const value = user[field];
    if (value !== undefined && value !== null && value !== "") out[field] = String(value);
  }
  return Object.keys(out).length ? out : null;
}

function propagation(value) {
  const list = value === undefined || value === null ? [] : Array.isArray(value) ? value : [value];
  for (const item of list) {
    if (!(typeof item === "string" || item instanceof RegExp)) {
      throw new ConfigError("propagateTo must be a list of origins, URL prefixes or regular expressions");
    }
  }
  return list.slice();
}

function replayOptions(value) {
  if (value === false) return null;
  const given = value && typeof value === "object" ? value : {};
  const unknown = Object.keys(given).filter((k) => !(k in REPLAY_DEFAULTS));
  if (unknown.length) warn(`unknown replay option(s) ignored: ${unknown.join(", ")}`);
  const r = { ...REPLAY_DEFAULTS, ...given };
  return {
    sampleRate: rate(r.sampleRate, "replay.sampleRate"),
    onErrorSampleRate: rate(r.onErrorSampleRate, "replay.onErrorSampleRate"),
    bufferSeconds: positive(r.bufferSeconds, "replay.bufferSeconds"),
    maskAllInputs: r.maskAllInputs !== false,
    maskTextSelector: selector(r.maskTextSelector, "replay.maskTextSelector"),
    blockSelector: selector(r.blockSelector, "replay.blockSelector"),
    ignoreSelector: selector(r.ignoreSelector, "replay.ignoreSelector"),
    flushSeconds: positive(r.flushSeconds, "replay.flushSeconds"),
    maxChunkBytes: Math.floor(positive(r.maxChunkBytes, "replay.maxChunkBytes")),
  };
}

/**
 * The full configuration from what AppGuard.init() was given. Throws ConfigError naming the
 * option at fault.
 */
export function resolveConfig(options, defaultEndpoint) {
  const given = options && typeof options === "object" ? options : {};
  const unknown = Object.keys(given).filter((k) => !(k in DEFAULTS) && k !== "replay");
  if (unknown.length) warn(`unknown option(s) ignored: ${unknown.join(", ")}`);
  const o = { ...DEFAULTS, ...given };
  if (typeof o.key !== "string" || !KEY.test(o.key)) {
    throw new ConfigError("key must be the project's ingest key: 32 lowercase hex digits");
  }
  const endpointText = o.endpoint || defaultEndpoint;
  let endpoint;
  try {
    endpoint = new URL(endpointText);
  } catch {
    throw new ConfigError(`endpoint must be an absolute URL (got ${endpointText})`);
  }
  if (endpoint.protocol !== "http:" && endpoint.protocol !== "https:") {
    throw new ConfigError(`endpoint must be an http(s) URL (got ${endpointText})`);
  }
  for (const name of ["service", "environment"]) {
    if (typeof o[name] !== "string" || !o[name]) throw new ConfigError(`${name} must be a non-empty string`);
  }
  return {
    endpoint: endpoint.href.replace(/\/+$/, ""),
    key: o.key,
    service: o.service,
    environment: o.environment,
    release: o.release === null || o.release === undefined || o.release === "" ? null : String(o.release),
    user: normalizeUser(o.user),
    propagateTo: propagation(o.propagateTo),
    replay: replayOptions(given.replay),
    sessionIdleMinutes: positive(o.sessionIdleMinutes, "sessionIdleMinutes"),
    sessionMaxHours: positive(o.sessionMaxHours, "sessionMaxHours"),
    debug: Boolean(o.debug),
  };
}

function bool(text) {
  return !["false", "0", "no", "off"].includes(String(text).trim().toLowerCase());
}

function number(text) {
  return text === undefined ? undefined : Number(text);
}

/**
 * The options a `<script data-key=... data-service=...>` tag gives, for AppGuard.init().
 * null when the tag has no data-key (then the page calls AppGuard.init itself).
 */
export function optionsFromScript(script) {
  const d = script && script.dataset;
  if (!d || !d.key) return null;
  const options = { key: d.key };
  for (const name of ["endpoint", "service", "environment", "release"]) {
    if (d[name]) options[name] = d[name];
  }
  if (d.propagateTo) options.propagateTo = d.propagateTo.split(/[\s,]+/).filter(Boolean);
  if (d.sessionIdleMinutes) options.sessionIdleMinutes = number(d.sessionIdleMinutes);
  if (d.sessionMaxHours) options.sessionMaxHours = number(d.sessionMaxHours);
  if (d.debug !== undefined) options.debug = d.debug === "" || bool(d.debug);
  if (d.replay !== undefined && !bool(d.replay)) {
    options.replay = false;
  } else {
    const replay = {};
    const map = {
      replaySampleRate: "sampleRate",
      replayOnErrorSampleRate: "onErrorSampleRate",
      replayBufferSeconds: "bufferSeconds",
      replayFlushSeconds: "flushSeconds",
      replayMaxChunkBytes: "maxChunkBytes",
    };
    for (const [attr, option] of Object.entries(map)) {
      if (d[attr] !== undefined) replay[option] = number(d[attr]);
    }
    if (d.maskAllInputs !== undefined) replay.maskAllInputs = bool(d.maskAllInputs);
    for (const name of ["maskTextSelector", "blockSelector", "ignoreSelector"]) {
      if (d[name] !== undefined) replay[name] = d[name];
    }
    if (Object.keys(replay).length) options.replay = replay;
  }
  return options;
}
