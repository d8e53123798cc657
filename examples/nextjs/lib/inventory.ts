// The shop's stock, as the checkout route handler sees it. Reserving more than is left throws
// OutOfStockError: a server-side bug report for AppGuard, found on the request's span.

export class OutOfStockError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OutOfStockError';
  }
}

export type OrderLine = { sku: string; quantity: number };

const STOCK: Record<string, number> = {
  'espresso-beans': 12,
  'pour-over-kettle': 0,
  'paper-filters': 40,
};

export function reserve(lines: OrderLine[]): Record<string, number> {
  const left = { ...STOCK };
  for (const { sku, quantity } of lines) {
    const available = left[sku] ?? 0;
    if (quantity > available) {
      throw new OutOfStockError(`only ${available} of ${sku} left, ${quantity} ordered`);
    }
    left[sku] = available - quantity;
  }
  return left;
}
