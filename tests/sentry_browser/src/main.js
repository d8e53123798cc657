// The shop's entry: reports to AppGuard through Sentry's browser SDK, with Session Replay.
// The page sets window.SHOP_CONFIG ({dsn, release, environment}) before loading the bundle, so
// one build serves whichever port the test's AppGuard listens on.
import * as Sentry from "@sentry/browser";

import { checkout } from "./cart.js";

const config = window.SHOP_CONFIG;

Sentry.init({
  dsn: config.dsn,
  release: config.release,
  environment: config.environment,
  integrations: [
    Sentry.replayIntegration({ maskAllText: false, blockAllMedia: false, flushMinDelay: 200, flushMaxDelay: 500 }),
  ],
  replaysSessionSampleRate: 1.0,
  replaysOnErrorSampleRate: 1.0,
});

function onCheckoutClicked() {
  document.getElementById("status").textContent = "Checking out your cart";
  const total = checkout({ items: [{ sku: "A-42", price: 12.5 }] });
  document.getElementById("status").textContent = `Total: ${total}`;
}

document.getElementById("checkout").addEventListener("click", onCheckoutClicked);
document.getElementById("status").textContent = "Your cart holds 1 item";
