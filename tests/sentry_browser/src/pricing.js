import { applyCoupon } from "./coupons.js";

export function computeTotal(items, coupon) {
  const subtotal = items.reduce((sum, item) => sum + item.price, 0);
  return applyCoupon(subtotal, coupon);
}
