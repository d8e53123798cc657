// The session: an id kept in sessionStorage (so it lives as long as the tab and survives page
// loads), rolled over to a new id after too long idle or too long in all.

import { debug, uuid } from "./util.js";

export const STORAGE_KEY = "appguard.session";

function openStorage() {
  try {
    const storage = globalThis.sessionStorage;
    const probe = `${STORAGE_KEY}.probe`;
    storage.setItem(probe, "1");
    storage.removeItem(probe);
    return storage;
  } catch {
    // Sandboxed frames and some privacy modes refuse storage: keep the session in memory.
    return null;
  }
}

/**
 * The tab's session state: `{id, previous_id, started, last_activity, sequence, replay}`,
 * times in epoch milliseconds, `sequence` the next replay segment's number, `replay` the
 * session's sampling decision ("full", "error" or "off").
 */
export class SessionStore {
  /**
   * @param {{idleMs: number, maxMs: number, decideReplay: () => string}} options
   */
  constructor({ idleMs, maxMs, decideReplay }) {
    this.idleMs = idleMs;
    this.maxMs = maxMs;
    this.decideReplay = decideReplay;
    this.storage = openStorage();
    this.memory = null;
    this.listeners = [];
  }

  /** Call `fn(newState, oldState)` when the session rolls over to a new id. */
  onRollover(fn) {
    this.listeners.push(fn);
  }

  read() {
    if (!this.storage) return this.memory ? { ...this.memory } : null;
    try {
      const raw = this.storage.getItem(STORAGE_KEY);
      const state = raw ? JSON.parse(raw) : null;
      if (state && typeof state.id === "string" && Number.isFinite(state.started) && Number.isFinite(state.last_activity)) {
        if (!Number.isInteger(state.sequence) || state.sequence < 0) state.sequence = 0;
        return state;
      }
    } catch {
      // A corrupt entry starts a new session.
    }
    return null;
  }

  write(state) {
    this.memory = state;
    if (!this.storage) return;
    try {
      this.storage.setItem(STORAGE_KEY, JSON.stringify(state));
    } catch (err) {
      debug("could not save the session", err);
    }
  }

  /** Whether `state` has run out at `now`: idle for too long, or too old. */
  expired(state, now = Date.now()) {
    return now - state.last_activity > this.idleMs || now - state.started > this.maxMs;
  }

  /**
   * The session in force, rolling over to a new one when the stored one has expired.
   * `touch` marks the moment as activity (a user's input, a page view, a tracked event).
   */
  current({ touch = false, now = Date.now() } = {}) {
    const stored = this.read();
    if (stored && !this.expired(stored, now)) {
      // Activity is written at most every second (or every quarter of a very short idle limit).
      if (touch && now - stored.last_activity >= Math.min(1000, this.idleMs / 4)) {
        stored.last_activity = now;
        this.write(stored);
      }
      return stored;
    }
    const state = {
      id: uuid(),
      previous_id: stored ? stored.id : null,
      started: now,
      last_activity: now,
      sequence: 0,
      replay: this.decideReplay(),
    };
    this.write(state);
    if (stored) {
      debug("session rolled over", stored.id, "->", state.id);
      for (const fn of this.listeners) {
        try {
          fn(state, stored);
        } catch (err) {
          debug("rollover listener failed", err);
        }
      }
    } else {
      debug("session started", state.id, "replay:", state.replay);
    }
    return state;
  }

  /** The stored session if it is still in force, without starting a new one. */
  peek(now = Date.now()) {
    const stored = this.read();
    return stored && !this.expired(stored, now) ? stored : null;
  }

  /** Change fields of the session `id` (ignored when another session is in force by now). */
  update(id, fields) {
    const stored = this.read();
    if (!stored || stored.id !== id) return null;
    Object.assign(stored, fields);
    this.write(stored);
    return stored;
  }

  /** Take the next replay segment number of session `id`; null when it is no longer stored. */
  takeSequence(id) {
    const stored = this.read();
    if (!stored || stored.id !== id) return null;
    const n = stored.sequence;
    stored.sequence = n + 1;
    this.write(stored);
    return n;
  }
}
