// Coupons typed in at checkout: "SPRING10" takes 10 % off.

const KNOWN_COUPONS = { SPRING10: 0.1, WELCOME5: 0.05 };

export function parseCoupon(coupon) {
  // The bug: a coupon object without a code (an expired one the API sends back as {}) fails here.
  const code = coupon.code.trim().toUpperCase();
  return KNOWN_COUPONS[code] || 0;
}
