'use strict';
// A tiny storefront instrumented with the OpenTelemetry JavaScript SDK from npm.
//
//   node tests/js/send_error.js <otlp-http-port>
//   node tests/js/send_error.js <dsn> sentry
//
// It fails to total a cart (a real TypeError with a V8 stack). By default it records the
// exception on its span as any instrumented Node.js app does, exports the span over OTLP/HTTP
// (protobuf) to 127.0.0.1:<port>, and prints the span's ids as one JSON line for the test to
// look up. With `sentry` it reports the same exception, thrown from the same lines, through
// Sentry's Node.js SDK to the DSN and prints the event id.

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

// Reports through the OpenTelemetry SDK: the exception recorded on the request's span.
function openTelemetryReporter(port) {
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
  return {
    report(err) {
      span.recordException(err);
      span.setStatus({ code: SpanStatusCode.ERROR, message: err.message });
    },
    async close() {
      span.end();
      await provider.forceFlush();
      await provider.shutdown();
      if (!exported || exported.code !== 0) {
        throw new Error(`export failed: ${exported && exported.error ? exported.error.message : 'no result'}`);
      }
      const ctx = span.spanContext();
      return { traceId: ctx.traceId, spanId: ctx.spanId };
    },
  };
}

// Reports through Sentry's Node.js SDK, configured with a DSN of AppGuard.
function sentryReporter(dsn) {
  const Sentry = require('@sentry/node');
  Sentry.init({ dsn, release: '4.2.0', environment: 'e2e', serverName: 'storefront-js', defaultIntegrations: false });
  let eventId = null;
  return {
    report(err) {
      Sentry.setUser({ id: 'js-user-2' });
      eventId = Sentry.captureException(err);
    },
    async close() {
      if (!(await Sentry.close(10000))) {
        throw new Error('the Sentry SDK could not send its events in time');
      }
      return { eventId };
    },
  };
}

async function main() {
  const [target, mode = 'otel'] = process.argv.slice(2);
  let reporter;
  if (mode === 'sentry') {
    reporter = sentryReporter(target);
  } else {
    const port = Number(target);
    if (!Number.isInteger(port) || port <= 0) {
      throw new Error('usage: node send_error.js <otlp-http-port> | node send_error.js <dsn> sentry');
    }
    reporter = openTelemetryReporter(port);
  }
  try {
    cartTotal({ items: [{ price: { amount: 5 } }, { name: 'gift card' }] });
  } catch (err) {
    reporter.report(err);
  }
  const ids = await reporter.close();
  process.stdout.write(JSON.stringify(ids) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
