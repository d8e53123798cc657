// Coupon arithmetic, run in the browser. An unknown code throws CouponError: a client-side bug
// report for AppGuard, caught by the page's error boundary and sent with @sentry/browser.

export class CouponError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CouponError';
  }
}

const COUPONS: Record<string, number> = { WELCOME10: 0.1, SPRING25: 0.25 };

export function applyCoupon(totalCents: number, code: string): number {
  const rate = COUPONS[code.trim().toUpperCase()];
  if (rate === undefined) {
    throw new CouponError(`coupon ${JSON.stringify(code)} does not exist`);
  }
  return Math.round(totalCents * (1 - rate));
}
