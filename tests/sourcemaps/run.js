// Runs a minified build as a browser would load it from a URL, and prints the Error.stack of
// the checkout bug as JSON: {"type", "message", "stack"}.
//
//   node run.js BUNDLE_PATH SCRIPT_URL
//
// The bundle is compiled with the URL as its file name, so V8 writes that URL into the stack
// frames, as Chromium does for a <script src>.
"use strict";

const fs = require("node:fs");
const vm = require("node:vm");

const [bundlePath, scriptUrl] = process.argv.slice(2);
if (!bundlePath || !scriptUrl) {
  console.error("usage: node run.js BUNDLE_PATH SCRIPT_URL");
  process.exit(2);
}
vm.runInThisContext(fs.readFileSync(bundlePath, "utf8"), { filename: scriptUrl });
try {
  // An expired coupon comes back from the API without a code.
  globalThis.shop.onCheckoutClicked({ id: "cart-1", items: [{ price: 20, quantity: 2 }], coupon: {} });
  console.error("the checkout did not fail");
  process.exit(1);
} catch (error) {
  process.stdout.write(JSON.stringify({ type: error.name, message: error.message, stack: error.stack }) + "\n");
}
