// Next.js calls register() once when the server starts. The OpenTelemetry Node SDK is set up
// there, for the Node.js runtime only (it does not run on the edge runtime). From then on
// Next.js traces every request itself and records what a route handler or a server component
// throws on the request's spans (span.recordException): the exceptions AppGuard turns into
// issues.
export async function register(): Promise<void> {
  if (process.env.NEXT_RUNTIME === 'nodejs') {
    await import('./instrumentation.node');
  }
}
