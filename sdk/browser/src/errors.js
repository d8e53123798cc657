// Uncaught errors and unhandled promise rejections, turned into the `error` payload's own fields.

/** The error fields of the wire contract for `err`: type, message, stacktrace. */
export function describeError(err, fallbackType = "Error") {
  if (err instanceof Error || (err && typeof err === "object" && typeof err.stack === "string" && "message" in err)) {
    return {
      type: err.name || fallbackType,
      message: String(err.message ?? ""),
      stacktrace: typeof err.stack === "string" ? err.stack : "",
    };
  }
  let message;
  if (typeof err === "string") {
    message = err;
  } else {
    try {
      message = JSON.stringify(err) ?? String(err);
    } catch {
      message = String(err);
    }
  }
  return { type: fallbackType, message, stacktrace: "" };
}

/**
 * Listen for window `error` and `unhandledrejection`; call `report(fields, mechanism)` with what
 * describeError gives. Failures to load a resource (an image, a script) are not script errors and
 * are left alone.
 */
export function installErrorHandlers(report) {
  globalThis.addEventListener("error", (event) => {
    if (!(event instanceof ErrorEvent)) return;
    let fields;
    if (event.error !== undefined && event.error !== null) {
      fields = describeError(event.error);
    } else {
      // A cross-origin script's error reaches the page as "Script error." without an object.
      fields = { type: "Error", message: event.message || "Script error.", stacktrace: "" };
    }
    if (!fields.stacktrace && event.filename) {
      fields.stacktrace = `${fields.type}: ${fields.message}\n    at ${event.filename}:${event.lineno}:${event.colno}`;
    }
    report(fields, "onerror");
  });
  globalThis.addEventListener("unhandledrejection", (event) => {
    report(describeError(event.reason, "UnhandledRejection"), "onunhandledrejection");
  });
}
