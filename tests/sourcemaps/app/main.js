// The shop's front end: checks a cart out when the page asks it to. Builds made with
// SHOW_BANNER=true also show the spring promotion (more code: other minified names).
import { renderBanner } from "./banner.js";
import { checkout } from "./cart.js";

export function onCheckoutClicked(cart) {
  if (SHOW_BANNER) {
    renderBanner(null, "spring", 10);
  }
  return checkout(cart);
}

globalThis.shop = { onCheckoutClicked };
