import { computeTotal } from "./pricing.js";

export function checkout(cart) {
  const total = computeTotal(cart.items, cart.coupon);
  return Math.round(total * 100) / 100;
}
