const RATES = { SPRING10: 0.1, VIP: 0.25 };

export function applyCoupon(amount, coupon) {
  // The bug: a cart without a coupon has none to read the code of.
  const code = coupon.code.trim().toUpperCase();
  return amount * (1 - (RATES[code] || 0));
}
