'use client';

import { useState } from 'react';

import { applyCoupon } from '@/lib/coupons';

const SUBTOTAL_CENTS = 2450;

function euros(cents: number): string {
  return `€${(cents / 100).toFixed(2)}`;
}

// The cart with a coupon field. React error boundaries do not see errors thrown in event
// handlers, so the handler hands its failure to the boundary by throwing it while rendering.
export function Cart() {
  const [code, setCode] = useState('');
  const [total, setTotal] = useState(SUBTOTAL_CENTS);
  const [failure, setFailure] = useState<Error | null>(null);
  if (failure !== null) {
    throw failure;
  }

  function onApply(): void {
    try {
      setTotal(applyCoupon(SUBTOTAL_CENTS, code));
    } catch (error) {
      setFailure(error instanceof Error ? error : new Error(String(error)));
    }
  }

  return (
    <section>
      <p>
        Subtotal: {euros(SUBTOTAL_CENTS)}. Total: <output id="total">{euros(total)}</output>
      </p>
      <label>
        Coupon <input name="coupon" value={code} onChange={(event) => setCode(event.target.value)} />
      </label>{' '}
      <button type="button" onClick={onApply}>
        Apply coupon
      </button>
    </section>
  );
}
