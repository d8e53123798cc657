import { computeTotal } from "./pricing.js";

export function checkout(cart) {
  const total = computeTotal(cart.items, cart.coupon);
  return { id: cart.id, total };
}
