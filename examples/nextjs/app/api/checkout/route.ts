import { reserve, type OrderLine } from '@/lib/inventory';

// POST /api/checkout {"lines": [{"sku": "pour-over-kettle", "quantity": 1}]}
// An order for something out of stock throws; Next.js answers 500 and hands the error to
// onRequestError in instrumentation.ts, which records it on the request's span.
export async function POST(request: Request): Promise<Response> {
  const order = (await request.json()) as { lines: OrderLine[] };
  const left = reserve(order.lines);
  return Response.json({ reserved: true, left });
}
