// The script-tag build's entry (dist/appguard.js, `window.AppGuard`). Its endpoint defaults to the
// origin the script was loaded from, and a tag with data-key starts it without any code:
//   <script src="https://appguard.example.com/sdk/appguard.js" data-key="..." data-service="shop"></script>

import { optionsFromScript } from "./config.js";
import { init as start } from "./index.js";
import { warn } from "./util.js";

export { VERSION, captureException, flush, getSessionId, setUser, track } from "./index.js";

const script = globalThis.document && globalThis.document.currentScript;
let scriptOrigin;
try {
  scriptOrigin = script && script.src ? new URL(script.src).origin : undefined;
} catch {
  scriptOrigin = undefined;
}

/** AppGuard.init(options): as index.js's init, the endpoint defaulting to where this script came from. */
export function init(options) {
  return start(options, scriptOrigin);
}

try {
  const declared = optionsFromScript(script);
  if (declared) init(declared);
} catch (err) {
  warn("could not read the script tag's data-* options", err);
}
