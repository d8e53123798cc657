import { connection } from 'next/server';

import { BrowserReporting } from './browser-reporting';
import { Cart } from './cart';
import { ErrorBoundary } from './error-boundary';

// The browser's DSN is read when the page is requested, not baked in at build time, so one
// build runs against any AppGuard: APPGUARD_DSN=http://<public key>@<host>:8080/<project>.
export default async function ShopPage() {
  await connection();
  const dsn = process.env.APPGUARD_DSN ?? '';
  const environment = process.env.APP_ENVIRONMENT ?? 'development';
  const release = process.env.APP_VERSION ?? '1.0.0';
  return (
    <main>
      <h1>Coffee shop</h1>
      <BrowserReporting dsn={dsn} environment={environment} release={`nextjs-shop@${release}`} />
      <ErrorBoundary>
        <Cart />
      </ErrorBoundary>
    </main>
  );
}
