import { parseCoupon } from "./coupons.js";

export function applyDiscount(subtotal, coupon) {
  if (!coupon) {
    return subtotal;
  }
  const rate = parseCoupon(coupon);
  return Math.round(subtotal * (1 - rate) * 100) / 100;
}

export function computeTotal(items, coupon) {
  let subtotal = 0;
  for (const item of items) {
    subtotal += item.price * item.quantity;
  }
  return applyDiscount(subtotal, coupon);
}
