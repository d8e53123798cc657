// The AppGuard browser snippet: errors, page views, custom events, Web Vitals and session replay,
// sent to an AppGuard server with a project's ingest key.
//
// Public API (also `window.AppGuard` in the script-tag build): init, setUser, track,
// captureException, flush, getSessionId.

import { installBaggage } from "./baggage.js";
import { ConfigError, normalizeUser, resolveConfig } from "./config.js";
import { describeError, installErrorHandlers } from "./errors.js";
import { installPageviews } from "./pageviews.js";
import { Replay } from "./replay.js";
import { SessionStore } from "./session.js";
import { Transport } from "./transport.js";
import { debug, eventId, guard, isoNow, scalars, setDebug, warn } from "./util.js";
import { installVitals, metricFields } from "./vitals.js";

export const VERSION = "0.1.0";

const ACTIVITY_EVENTS = ["pointerdown", "keydown", "scroll", "touchstart"];

let client = null;

function sampled(rate) {
  return rate > 0 && Math.random() < rate;
}

class Client {
  constructor(config) {
    this.config = config;
    this.user = config.user;
    this.vitals = new Map();
    // Web Vitals measure the document: they belong to the URL it was loaded at, not to where a
    // client-side navigation has taken the page by the time the batch leaves.
    this.loadUrl = globalThis.location.href;
    const replay = config.replay;
    this.store = new SessionStore({
      idleMs: config.sessionIdleMinutes * 60_000,
      maxMs: config.sessionMaxHours * 3_600_000,
      decideReplay: () => {
        if (!replay) return "off";
        if (sampled(replay.sampleRate)) return "full";
        return sampled(replay.onErrorSampleRate) ? "error" : "off";
      },
    });
    const pageFetch = installBaggage(config.propagateTo, () => this.store.current().id);
    this.transport = new Transport(config, pageFetch);
    this.replay = replay ? new Replay(replay, this.store, this.transport, (s) => this.segmentFields(s)) : null;
    this.store.onRollover((next, old) => {
      if (this.replay) this.replay.rollover(next, old);
    });
  }

  start() {
    const session = this.store.current({ touch: true });
    if (this.replay) this.replay.start(session);
    const touch = guard("activity", () => this.store.current({ touch: true }));
    for (const type of ACTIVITY_EVENTS) globalThis.addEventListener(type, touch, { capture: true, passive: true });
    installErrorHandlers(guard("error capture", (fields, mechanism) => this.reportError(fields, mechanism, false, null)));
    installPageviews(guard("page view", (navigation, referrer) => this.pageview(navigation, referrer)));
    installVitals(guard("web vitals", (metric) => this.vitals.set(metric.id, metricFields(metric))));
    // web-vitals reports CLS, INP and LCP from its own visibilitychange listener (window, capture
    // phase); this one runs in the bubble phase, after it, so the batch includes them.
    globalThis.addEventListener(
      "visibilitychange",
      guard("hide", () => {
        if (globalThis.document.visibilityState === "hidden") this.flush(false);
      }),
    );
    globalThis.addEventListener("pagehide", guard("pagehide", () => this.flush(true)));
  }

  /** The fields every telemetry body carries. */
  common(session) {
    const body = {
      timestamp: isoNow(),
      session_id: session.id,
      service: this.config.service,
      environment: this.config.environment,
      url: globalThis.location.href,
      user_agent: globalThis.navigator.userAgent,
    };
    if (session.previous_id) body.previous_session_id = session.previous_id;
    if (this.config.release) body.release = this.config.release;
    if (this.user) body.user = this.user;
    return body;
  }

  /** A replay segment's fields besides `sequence` and `events`. */
  segmentFields(session) {
    const fields = {
      url: globalThis.location.href,
      user_agent: globalThis.navigator.userAgent,
      service: this.config.service,
      environment: this.config.environment,
    };
    if (this.config.release) fields.release = this.config.release;
    if (this.user) fields.user = this.user;
    if (session.previous_id) fields.previous_session_id = session.previous_id;
    return fields;
  }

  pageview(navigation, referrer) {
    const session = this.store.current({ touch: true });
    const title = globalThis.document.title || "";
    this.transport.sendJson("/api/telemetry/pageview", { ...this.common(session), referrer, title, navigation });
    if (this.replay) this.replay.addCustomEvent("appguard.pageview", { url: globalThis.location.href, title, navigation });
  }

  track(name, properties) {
    const session = this.store.current({ touch: true });
    const props = scalars(properties);
    this.transport.sendJson("/api/telemetry/event", { ...this.common(session), name, properties: props });
    if (this.replay) this.replay.addCustomEvent("appguard.event", { name, properties: props });
  }

  reportError(fields, mechanism, handled, attributes) {
    const session = this.store.current({ touch: true });
    const id = eventId();
    const body = { ...this.common(session), event_id: id, ...fields, mechanism, handled };
    if (attributes) body.attributes = scalars(attributes);
    this.transport.sendJson("/api/telemetry/error", body);
    if (this.replay) {
      this.replay.addCustomEvent("appguard.error", { event_id: id, type: fields.type, message: fields.message });
      this.replay.onError();
    }
    return id;
  }

  /** Send the Web Vitals batch and the replay's pending events; `unloading` on pagehide. */
  flush(unloading) {
    if (this.vitals.size) {
      const metrics = [...this.vitals.values()];
      this.vitals.clear();
      const session = this.store.current();
      this.transport.sendJson("/api/telemetry/performance", { ...this.common(session), url: this.loadUrl, metrics });
    }
    if (this.replay) this.replay.flush({ unloading });
  }
}

/**
 * Start the snippet. Options: endpoint, key (required), service, environment, release, user,
 * propagateTo, replay {sampleRate, onErrorSampleRate, bufferSeconds, maskAllInputs,
 * maskTextSelector, blockSelector, ignoreSelector, flushSeconds, maxChunkBytes} (or false),
 * sessionIdleMinutes, sessionMaxHours, debug. Returns false (and warns) when it cannot start.
 */
export function init(options, defaultEndpoint) {
  if (client) {
    debug("init called again; the first configuration stays");
    return true;
  }
  try {
    const fallback = defaultEndpoint || (globalThis.location && globalThis.location.origin);
    const config = resolveConfig(options, fallback);
    setDebug(config.debug);
    client = new Client(config);
    client.start();
    debug("started", config);
    return true;
  } catch (err) {
    if (err instanceof ConfigError) warn(`not started: ${err.message}`);
    else warn("not started", err);
    client = null;
    return false;
  }
}

/** Set (or with null, clear) the user sent with everything from now on. */
export function setUser(user) {
  if (client) client.user = normalizeUser(user);
}

/** Send a custom event `name` with scalar `properties`. */
export const track = guard("track", (name, properties) => {
  if (client && typeof name === "string" && name) client.track(name, properties);
});

/**
 * Report an error the page caught itself; returns its event id (undefined before init).
 * `context.attributes` adds scalar attributes to the event.
 */
export const captureException = guard("captureException", (err, context) => {
  if (!client) return undefined;
  return client.reportError(describeError(err), "manual", true, context && context.attributes);
});

/** Send what is waiting (Web Vitals, replay events) now. */
export const flush = guard("flush", () => {
  if (client) client.flush(false);
});

/** The session id in force (undefined before init). */
export const getSessionId = guard("getSessionId", () => (client ? client.store.current().id : undefined));
