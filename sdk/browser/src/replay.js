// Session replay: the DOM recorded with rrweb, cut into chunks and posted to
// /api/sessions/<session id>/segments.
//
// A session is recorded in one of two modes, decided once per session (see index.js):
// - "full": every event, sent every flushSeconds, or sooner when a chunk reaches maxChunkBytes;
// - "error": only the last bufferSeconds kept in memory (rrweb takes a full snapshot every
//   bufferSeconds, and the events from the second-to-last one on are kept); the first error
//   sends that buffer and turns the session to "full" for the rest of its life.

import { record } from "@rrweb/record";

import { debug } from "./util.js";

const META = 4;
const FULL_SNAPSHOT = 2;

/** Split serialised events into runs whose JSON stays under `maxBytes` (a larger event goes alone). */
export function chunkEvents(events, maxBytes) {
  const chunks = [];
  let chunk = [];
  let size = 0;
  for (const event of events) {
    if (chunk.length && size + event.length + 1 > maxBytes) {
      chunks.push(chunk);
      chunk = [];
      size = 0;
    }
    chunk.push(event);
    size += event.length + 1;
  }
  if (chunk.length) chunks.push(chunk);
  return chunks;
}

/** The recorder of one page; follows the tab's session as it rolls over. */
export class Replay {
  /**
   * @param {object} options the `replay` config
   * @param {import("./session.js").SessionStore} store
   * @param {import("./transport.js").Transport} transport
   * @param {(session: object) => object} describe the segment's fields besides sequence and events
   */
  constructor(options, store, transport, describe) {
    this.options = options;
    this.store = store;
    this.transport = transport;
    this.describe = describe;
    this.session = null;
    this.mode = "off";
    this.stopRecording = null;
    this.timer = null;
    this.pending = [];
    this.pendingBytes = 0;
    this.previous = [];
    this.current = [];
    this.queuedCustom = [];
  }

  /** Record `session` in the mode it was sampled for (nothing when "off"). */
  start(session) {
    this.stop();
    this.session = session;
    this.mode = session.replay === "full" || session.replay === "error" ? session.replay : "off";
    if (this.mode === "off") return;
    const o = this.options;
    this.stopRecording = record({
      emit: (event, isCheckout) => this.onEvent(event, isCheckout),
      maskAllInputs: o.maskAllInputs,
      maskTextSelector: o.maskTextSelector || undefined,
      blockSelector: o.blockSelector || undefined,
      ignoreSelector: o.ignoreSelector || undefined,
      checkoutEveryNms: this.mode === "error" ? o.bufferSeconds * 1000 : undefined,
      recordCanvas: false,
      collectFonts: false,
      inlineImages: false,
      errorHandler: (err) => {
        debug("the recorder failed", err);
        return true;
      },
    });
    this.timer = setInterval(() => this.tick(), o.flushSeconds * 1000);
    debug(`recording session ${session.id} (${this.mode})`);
  }

  /** Stop recording; what is pending stays until flushed. */
  stop() {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    if (this.stopRecording) {
      try {
        this.stopRecording();
      } catch (err) {
        debug("stopping the recorder failed", err);
      }
    }
    this.stopRecording = null;
  }

  onEvent(event, isCheckout) {
    let json;
    try {
      json = JSON.stringify(event);
    } catch (err) {
      debug("an rrweb event could not be serialised", err);
      return;
    }
    if (this.mode === "error") {
      if (isCheckout && event.type === META) {
        this.previous = this.current;
        this.current = [];
      }
      this.current.push(json);
    } else if (this.mode === "full") {
      if (this.pending.length && this.pendingBytes + json.length + 1 > this.options.maxChunkBytes) this.flush();
      this.pending.push(json);
      this.pendingBytes += json.length + 1;
      if (this.pendingBytes >= this.options.maxChunkBytes) this.flush();
    }
    if (event.type === FULL_SNAPSHOT && this.queuedCustom.length) {
      const queued = this.queuedCustom;
      this.queuedCustom = [];
      setTimeout(() => queued.forEach(([tag, payload]) => this.addCustomEvent(tag, payload)), 0);
    }
  }

  /** Mark the timeline (page views, errors, tracked events) for the viewer. */
  addCustomEvent(tag, payload) {
    if (this.mode === "off" || !this.stopRecording) return;
    try {
      record.addCustomEvent(tag, payload);
    } catch {
      // rrweb starts once the document has loaded; until then keep the marks for its first snapshot.
      this.queuedCustom.push([tag, payload]);
    }
  }

  /** An error happened: in "error" mode, send the buffer and record the rest of the session. */
  onError() {
    if (this.mode !== "error" || !this.session) return;
    const session = this.session;
    const buffered = this.previous.concat(this.current);
    this.previous = [];
    this.current = [];
    session.replay = "full";
    this.store.update(session.id, { replay: "full" });
    this.mode = "full";
    this.pending = buffered;
    this.pendingBytes = buffered.reduce((n, e) => n + e.length + 1, 0);
    this.flush();
    // Record on without the buffer's periodic full snapshots: they were only there to bound it.
    setTimeout(() => {
      if (this.session === session) this.start(session);
    }, 0);
  }

  tick() {
    const inForce = this.store.peek();
    if (!inForce || inForce.id !== this.session.id) {
      // The session ended (idle or too old): send what belongs to it and pause until the next
      // activity starts a new session (index.js restarts the recorder then).
      this.flush();
      this.stop();
      this.mode = "off";
      return;
    }
    this.flush();
  }

  /** Send the pending events in chunks; `unloading` when the page is going away. */
  flush({ unloading = false } = {}) {
    if (this.mode !== "full" || !this.pending.length || !this.session) return;
    const events = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    const path = `/api/sessions/${encodeURIComponent(this.session.id)}/segments`;
    for (const chunk of chunkEvents(events, this.options.maxChunkBytes)) {
      let sequence = this.store.takeSequence(this.session.id);
      if (sequence === null) {
        // The tab has moved on to another session: number on from what this one had.
        sequence = this.session.sequence;
        this.session.sequence += 1;
      }
      const head = JSON.stringify({ sequence, ...this.describe(this.session) });
      const text = `${head.slice(0, -1)},"events":[${chunk.join(",")}]}`;
      this.transport.sendSegment(path, text, { unloading });
    }
  }

  /** The session rolled over: send the old one's rest under its id, then record the new one. */
  rollover(next, old) {
    if (this.session && this.session.id === old.id) {
      this.session = old;
      this.flush();
    }
    this.start(next);
  }
}
