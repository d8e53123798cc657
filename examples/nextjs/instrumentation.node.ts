import { findSourceMap } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { BatchSpanProcessor, type Span, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';

// Server code runs from bundled chunks (.next/server/chunks/*.js). Node.js keeps their source
// maps once this is on, so stack traces can be pointed back at the sources they were built from.
process.setSourceMapsEnabled(true);

// "    at reserve (/app/.next/server/chunks/x.js:33:19)" or "    at async /app/.next/...:4:2"
const FRAME = /^(\s*at (?:async )?)(?:(.+) \()?(\/[^()]+):(\d+):(\d+)\)?$/;

/** One line of a V8 stack trace, pointed at the original source when the chunk has a map. */
function originalFrame(line: string): string {
  const match = FRAME.exec(line);
  if (match === null) {
    return line;
  }
  const [, at, fn, file, row, column] = match;
  const entry = findSourceMap(file)?.findEntry(Number(row) - 1, Number(column) - 1);
  if (entry === undefined || !('originalSource' in entry)) {
    return line;
  }
  let source = entry.originalSource;
  if (source.startsWith('file://')) {
    source = fileURLToPath(source);
  } else if (/^[a-z]+:/i.test(source)) {
    // webpack://next/src/...: code of a package, better named by the file it runs from.
    return line;
  } else {
    source = resolve(dirname(file), source);
  }
  const where = `${source}:${entry.originalLine + 1}:${entry.originalColumn + 1}`;
  return fn === undefined ? `${at}${where}` : `${at}${fn} (${where})`;
}

/** Rewrites the exception.stacktrace of the exception events a span recorded, as it ends. */
class SourceMappedExceptions implements SpanProcessor {
  onStart(): void {}

  onEnding(span: Span): void {
    for (const event of span.events) {
      const stack = event.attributes?.['exception.stacktrace'];
      if (event.name === 'exception' && event.attributes !== undefined && typeof stack === 'string') {
        event.attributes['exception.stacktrace'] = stack.split('\n').map(originalFrame).join('\n');
      }
    }
  }

  onEnd(): void {}

  forceFlush(): Promise<void> {
    return Promise.resolve();
  }

  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

// Spans go in batches over OTLP/HTTP to $OTEL_EXPORTER_OTLP_ENDPOINT (AppGuard's 4318; the
// default is http://localhost:4318). OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override
// the resource below, OTEL_BSP_SCHEDULE_DELAY the batches' delay (5 s).
const sdk = new NodeSDK({
  resource: resourceFromAttributes({
    [ATTR_SERVICE_NAME]: 'nextjs-shop',
    [ATTR_SERVICE_VERSION]: process.env.APP_VERSION ?? '1.0.0',
    'deployment.environment.name': process.env.APP_ENVIRONMENT ?? 'development',
  }),
  spanProcessors: [new SourceMappedExceptions(), new BatchSpanProcessor(new OTLPTraceExporter())],
});
sdk.start();
