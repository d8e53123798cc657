// Sending to AppGuard: JSON bodies with the ingest key, keepalive when small enough to outlive the
// page, retries with backoff for what the server or the network may accept later.

import { debug } from "./util.js";

/** Bodies under this many bytes go with fetch's keepalive (the browser allows 64 KiB in flight). */
export const KEEPALIVE_LIMIT = 60 * 1024;
const MAX_RETRIES = 3;
const BASE_DELAY_MS = 1000;
const MAX_DELAY_MS = 60_000;

/** Statuses worth another try: rate limited, unavailable, other server errors. */
export function retryable(status) {
  return status === 429 || status >= 500;
}

/** Milliseconds to wait from a Retry-After header (seconds or an HTTP date); null when absent or bad. */
export function retryAfterMs(header, now = Date.now()) {
  if (!header) return null;
  const seconds = Number(header);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.min(seconds * 1000, MAX_DELAY_MS);
  const when = Date.parse(header);
  if (Number.isFinite(when)) return Math.min(Math.max(when - now, 0), MAX_DELAY_MS);
  return null;
}

function backoffMs(attempt) {
  const base = Math.min(BASE_DELAY_MS * 2 ** attempt, MAX_DELAY_MS);
  return base / 2 + Math.random() * (base / 2);
}

const encoder = new TextEncoder();

/** Gzip `text` with CompressionStream; null where the browser has none. */
export async function gzip(text) {
  if (typeof CompressionStream !== "function") return null;
  const stream = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Sends to one AppGuard endpoint with one ingest key. */
export class Transport {
  /**
   * @param {{endpoint: string, key: string}} config
   * @param {typeof fetch} fetchImpl the page's fetch as it was before the snippet wrapped it
   */
  constructor(config, fetchImpl) {
    this.endpoint = config.endpoint;
    this.key = config.key;
    this.fetch = fetchImpl;
  }

  /** POST `body` (an object) as JSON to `path`; resolves to whether the server accepted it. */
  sendJson(path, body) {
    let text;
    try {
      text = JSON.stringify(body);
    } catch (err) {
      debug(`could not serialise the body for ${path}`, err);
      return Promise.resolve(false);
    }
    return this.send(path, encoder.encode(text), {});
  }

  /**
   * POST a replay segment (its JSON text). Gzipped unless `unloading` (the page is going away and
   * cannot wait for the compressor) or the browser has no CompressionStream.
   */
  async sendSegment(path, text, { unloading = false } = {}) {
    if (!unloading) {
      try {
        const packed = await gzip(text);
        if (packed) return this.send(path, packed, { "Content-Encoding": "gzip" });
      } catch (err) {
        debug("compression failed; sending the segment uncompressed", err);
      }
    }
    return this.send(path, encoder.encode(text), {});
  }

  /** POST `bytes` with retries; resolves to true when answered 2xx, false otherwise. */
  async send(path, bytes, extraHeaders) {
    if (typeof this.fetch !== "function") return false;
    const url = this.endpoint + path;
    const headers = { "Content-Type": "application/json", "X-AppGuard-Key": this.key, ...extraHeaders };
    for (let attempt = 0; ; attempt += 1) {
      let wait;
      try {
        const response = await this.fetch.call(globalThis, url, {
          method: "POST",
          headers,
          body: bytes,
          keepalive: bytes.byteLength < KEEPALIVE_LIMIT,
          credentials: "omit",
          mode: "cors",
        });
        if (response.ok) return true;
        if (!retryable(response.status) || attempt >= MAX_RETRIES) {
          debug(`${url} answered ${response.status}; not sending it again`);
          return false;
        }
        wait = retryAfterMs(response.headers.get("Retry-After")) ?? backoffMs(attempt);
        debug(`${url} answered ${response.status}; trying again in ${Math.round(wait)} ms`);
      } catch (err) {
        if (attempt >= MAX_RETRIES) {
          debug(`${url} could not be reached; giving up`, err);
          return false;
        }
        wait = backoffMs(attempt);
        debug(`${url} could not be reached; trying again in ${Math.round(wait)} ms`, err);
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}
