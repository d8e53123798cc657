'use client';

import * as Sentry from '@sentry/browser';
import { useEffect } from 'react';

type Props = { dsn: string; environment: string; release: string };

// Starts @sentry/browser with the DSN of an AppGuard project once the page is hydrated. The
// SDK then reports what the error boundary hands it, and uncaught errors and rejections too.
export function BrowserReporting({ dsn, environment, release }: Props) {
  useEffect(() => {
    if (dsn) {
      Sentry.init({ dsn, environment, release });
    }
    document.body.dataset.reporting = dsn ? 'on' : 'off';
  }, [dsn, environment, release]);
  return null;
}
