'use strict';
// A tiny storefront instrumented with the OpenTelemetry JavaScript SDK from npm.
//
//   node tests/js/send_error.js <otlp-http-port>
//
// It fails to total a cart (a real TypeError with a V8 stack), records the exception on its
// span as any instrumented Node.js app does, exports the span over OTLP/HTTP (protobuf) to
// 127.0.0.1:<port>, and prints the span's ids as one JSON line for the test to look up.

const { SpanStatusCode } = require('@opentelemetry/api');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { BasicTracerProvider, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } = require('@opentelemetry/semantic-conventions');

function priceOf(item) {
  return item.price.amount;
}

function cartTotal(cart) {
  return cart.items.reduce((sum, item) => sum + priceOf(item), 0);
}

async function main() {
  const port = Number(process.argv[2]);
  if (!Number.isInteger(port) || port <= 0) {
    throw new Error('usage: node send_error.js <otlp-http-port>');
  }
  let exported = null;
  const exporter = new OTLPTraceExporter({ url: `http://127.0.0.1:${port}/v1/traces` });
  const export_ = exporter.export.bind(exporter);
  // Keep the export's own result: the process exits non-zero when the collector refused it.
  exporter.export = (spans, done) => export_(spans, (result) => { exported = result; done(result); });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({
      [ATTR_SERVICE_NAME]: 'storefront-js',
      [ATTR_SERVICE_VERSION]: '4.2.0',
      'deployment.environment.name': 'e2e',
    }),
    spanProcessors: [new SimpleSpanProcessor(exporter)],
  });
  const tracer = provider.getTracer('storefront', '1.0.0');
  const span = tracer.startSpan('GET /cart', {
    attributes: { 'session.id': 'js-session-1', 'user.id': 'js-user-1', 'http.route': '/cart' },
  });
  try {
    cartTotal({ items: [{ price: { amount: 5 } }, { name: 'gift card' }] });
  } catch (err) {
    span.recordException(err);
    span.setStatus({ code: SpanStatusCode.ERROR, message: err.message });
  }
  span.end();
  await provider.forceFlush();
  await provider.shutdown();
  if (!exported || exported.code !== 0) {
    throw new Error(`export failed: ${exported && exported.error ? exported.error.message : 'no result'}`);
  }
  const ctx = span.spanContext();
  process.stdout.write(JSON.stringify({ traceId: ctx.traceId, spanId: ctx.spanId }) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
