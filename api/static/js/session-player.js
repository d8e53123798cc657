// The session replay page: rrweb-player (from npm, under /vendor/) fed with the recording, a
// timeline of the session's errors, page views and custom events, and the lists beside it.
// Every marker and list entry seeks the player; errors link to their issue. `?t=<ms since the
// epoch>&event=<event id>` (the issue page's "Session replay" link) opens the replay paused at
// that moment with that error highlighted.
import Player from "/vendor/rrweb-player/rrweb-player.js";
import { api } from "./api.js";

const FULL_SNAPSHOT = 2;
const META = 4;
const CUSTOM = 5;
const PAGEVIEW = "appguard.pageview";
const ERROR = "appguard.error";
const EVENT = "appguard.event";
// The tallest replay the page draws, in CSS pixels; the player scales the recording down to fit.
const MAX_HEIGHT = 560;

const root = document.getElementById("replay");
const sessionId = root.dataset.sessionId;
const status = document.getElementById("player-status");
const track = document.getElementById("timeline-track");
const playhead = document.getElementById("timeline-playhead");
const errorList = document.getElementById("session-errors");
const eventList = document.getElementById("session-events");

/** `m:ss` (or `h:mm:ss`) for an offset in milliseconds. */
export function clock(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** An event id as the error store writes it (lower-case uuid with dashes), else as given. */
export function normalizeId(value) {
  const text = String(value || "").trim().toLowerCase();
  const hex = text.replaceAll("-", "");
  if (/^[0-9a-f]{32}$/.test(hex)) {
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }
  return text;
}

/**
 * What the recording shows on a timeline: page views (a Meta event or an appguard.pageview whose
 * URL differs from the page before, as the session's page count has them), recorded errors and
 * custom events, each with its timestamp.
 */
export function markersOf(events) {
  const found = [];
  let page = null;
  for (const [i, event] of events.entries()) {
    if (event.type === META) {
      const href = event.data && event.data.href;
      if (href && href !== page) found.push({ kind: "page", at: shownAt(events, i), url: href, title: "" });
      if (href) page = href;
    } else if (event.type === CUSTOM && event.data) {
      const payload = event.data.payload || {};
      if (event.data.tag === PAGEVIEW && payload.url) {
        if (payload.url !== page) found.push({ kind: "page", at: event.timestamp, url: payload.url, title: payload.title || "" });
        page = payload.url;
      } else if (event.data.tag === ERROR) {
        found.push({
          kind: "error",
          at: event.timestamp,
          eventId: payload.event_id ? normalizeId(payload.event_id) : "",
          type: payload.type || "Error",
          message: payload.message || "",
        });
      } else if (event.data.tag === EVENT) {
        found.push({ kind: "custom", at: event.timestamp, name: payload.name || "event", properties: payload.properties || {} });
      }
    }
  }
  return found;
}

/**
 * When the page loaded at `events[i]` (a Meta event) is on screen: just past its full snapshot,
 * which rrweb takes a few milliseconds after the Meta. A seek applies only the events before the
 * moment sought, so a seek to the Meta itself would leave whatever page the player showed before.
 */
function shownAt(events, i) {
  const snapshot = events.find((e, j) => j > i && e.type === FULL_SNAPSHOT);
  return (snapshot ? snapshot.timestamp : events[i].timestamp) + 1;
}

function say(text, problem = false) {
  status.textContent = text;
  status.classList.toggle("error", problem);
}

function seekButton(offset, label) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link seek";
  button.dataset.offset = String(Math.round(offset));
  button.textContent = clock(offset);
  button.setAttribute("aria-label", `Play from ${clock(offset)}: ${label}`);
  return button;
}

function describe(marker) {
  if (marker.kind === "page") return `Page ${marker.url}`;
  if (marker.kind === "custom") return `Event ${marker.name}`;
  return `${marker.type}: ${marker.message}`.trim();
}

async function main() {
  let recording;
  try {
    recording = await api("GET", `/api/sessions/${encodeURIComponent(sessionId)}/recording`);
  } catch (err) {
    say(`The recording could not be loaded: ${err.message}`, true);
    return;
  }
  // rrweb replays in timestamp order; segments may overlap by a few events at their edges.
  const events = [...(recording.events || [])].sort((a, b) => a.timestamp - b.timestamp);
  if (events.length < 2 || !events.some((e) => e.type === 2)) {
    say("This session has no replayable recording yet (no full snapshot received).", true);
    return;
  }
  const start = events[0].timestamp;
  const total = Math.max(1, events[events.length - 1].timestamp - start);
  // Nothing is on screen before the first full snapshot: the earliest moment worth seeking to.
  const snapshot = events.find((e) => e.type === FULL_SNAPSHOT);
  const first = snapshot ? Math.min(total, snapshot.timestamp + 1 - start) : 0;
  const offsetOf = (at) => Math.min(total, Math.max(first, at - start));

  const meta = events.find((e) => e.type === META && e.data && e.data.width && e.data.height);
  const frame = document.getElementById("player");
  const width = Math.max(320, Math.floor(frame.clientWidth));
  const ratio = meta ? meta.data.height / meta.data.width : 9 / 16;
  const height = Math.min(MAX_HEIGHT, Math.round(width * ratio));
  const player = new Player({
    target: frame,
    props: {
      events,
      width,
      height,
      autoPlay: false,
      skipInactive: true,
      mouseTail: false,
      tags: { [ERROR]: "#b42318", [PAGEVIEW]: "#3056d3", [EVENT]: "#8a5cd1" },
    },
  });

  // The markers: the recording's, joined with the error events the server stored for the session.
  const recorded = markersOf(events);
  const errorItems = new Map();
  for (const item of errorList ? errorList.querySelectorAll("li[data-event-id]") : []) {
    errorItems.set(normalizeId(item.dataset.eventId), item);
  }
  const markers = [];
  const placed = new Set();
  for (const marker of recorded) {
    if (marker.kind === "error" && marker.eventId) {
      if (placed.has(marker.eventId)) continue;
      placed.add(marker.eventId);
      marker.item = errorItems.get(marker.eventId) || null;
    }
    markers.push(marker);
  }
  for (const [eventId, item] of errorItems) {
    if (placed.has(eventId)) continue;
    // A backend error of the session (or one whose marker did not reach the recording).
    markers.push({
      kind: "error",
      at: Number(item.dataset.timestamp),
      eventId,
      type: item.dataset.type || "Error",
      message: item.dataset.message || "",
      item,
    });
  }
  markers.sort((a, b) => a.at - b.at);

  const chosen = normalizeId(root.dataset.event || "");
  const timeline = [];
  for (const marker of markers) {
    const offset = offsetOf(marker.at);
    marker.offset = offset;
    const dot = document.createElement("button");
    dot.type = "button";
    dot.className = `marker marker-${marker.kind}`;
    dot.dataset.offset = String(Math.round(offset));
    if (marker.eventId) dot.dataset.eventId = marker.eventId;
    dot.title = `${clock(offset)} ${describe(marker)}`;
    dot.setAttribute("aria-label", dot.title);
    dot.style.left = `${(100 * offset) / total}%`;
    track.appendChild(dot);
    timeline.push(dot);
    marker.dot = dot;

    if (marker.kind === "error") {
      if (marker.item) {
        marker.item.querySelector(".when").replaceChildren(seekButton(offset, describe(marker)));
      } else {
        // Recorded in the browser but not (yet) stored as an error event: no issue to link to.
        const item = document.createElement("li");
        item.className = "session-error unstored";
        item.dataset.eventId = marker.eventId;
        const what = document.createElement("span");
        what.className = "what";
        what.textContent = describe(marker);
        const note = document.createElement("span");
        note.className = "muted";
        note.textContent = " (not stored as an issue)";
        item.append(seekButton(offset, describe(marker)), " ", what, note);
        errorList.appendChild(item);
        marker.item = item;
      }
    } else {
      const item = document.createElement("li");
      item.className = `session-event event-${marker.kind}`;
      const what = document.createElement("span");
      what.className = "what";
      if (marker.kind === "page") {
        const label = document.createElement("span");
        label.className = "badge";
        label.textContent = "page";
        const url = document.createElement("span");
        url.className = "url";
        url.textContent = marker.url;
        if (marker.title) url.title = marker.title;
        what.append(label, " ", url);
      } else {
        const label = document.createElement("span");
        label.className = "badge custom";
        label.textContent = "event";
        const name = document.createElement("span");
        name.className = "name";
        name.textContent = marker.name;
        what.append(label, " ", name);
        const props = Object.entries(marker.properties || {});
        if (props.length) {
          const detail = document.createElement("span");
          detail.className = "muted props";
          detail.textContent = ` ${props.map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ")}`;
          what.append(detail);
        }
      }
      item.append(seekButton(offset, describe(marker)), " ", what);
      eventList.appendChild(item);
      marker.item = item;
    }
  }
  const noEvents = document.getElementById("no-session-events");
  if (noEvents) noEvents.hidden = eventList.children.length > 0;
  const noErrors = document.getElementById("no-session-errors");
  if (noErrors) noErrors.hidden = errorList.children.length > 0;

  function highlight(marker) {
    for (const m of markers) {
      const on = m === marker;
      m.dot.classList.toggle("current", on);
      if (m.item) {
        if (on) m.item.setAttribute("aria-current", "true");
        else m.item.removeAttribute("aria-current");
      }
    }
    if (marker && marker.item) marker.item.scrollIntoView({ block: "nearest" });
  }

  function follow(offset) {
    playhead.style.left = `${(100 * Math.min(total, Math.max(0, offset))) / total}%`;
    root.dataset.currentOffset = String(Math.round(offset));
  }
  player.addEventListener("ui-update-current-time", ({ payload }) => follow(payload));
  player.addEventListener("ui-update-player-state", ({ payload }) => {
    root.dataset.state = payload;
  });

  function seek(offset, marker) {
    player.goto(offset);
    follow(offset);
    if (marker !== undefined) highlight(marker);
  }
  for (const marker of markers) {
    marker.dot.addEventListener("click", () => seek(marker.offset, marker));
    const button = marker.item && marker.item.querySelector("button.seek");
    if (button) button.addEventListener("click", () => seek(marker.offset, marker));
  }
  track.addEventListener("click", (event) => {
    if (event.target !== track && event.target !== playhead) return;
    const box = track.getBoundingClientRect();
    seek(offsetOf(start + (total * (event.clientX - box.left)) / box.width), null);
  });

  // Open paused at the moment asked for (clamped to the recording), else at the error asked
  // for, else at the start.
  const target = chosen ? markers.find((m) => m.kind === "error" && m.eventId === chosen) : undefined;
  const t = Number(root.dataset.t);
  let asked = 0;
  if (root.dataset.t !== "" && Number.isFinite(t)) asked = offsetOf(t);
  else if (target) asked = target.offset;
  player.goto(asked, false);
  follow(asked);
  if (target) highlight(target);
  root.dataset.start = String(start);
  root.dataset.total = String(total);
  root.dataset.ready = "true";
  say(`${events.length} events in ${recording.segments} segment${recording.segments === 1 ? "" : "s"}, ${clock(total)} long`);
}

main().catch((err) => say(`The replay failed: ${err.message}`, true));
