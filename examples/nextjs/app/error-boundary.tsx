'use client';

import * as Sentry from '@sentry/browser';
import { Component, type ErrorInfo, type ReactNode } from 'react';

type Props = { children: ReactNode };
type State = { error: Error | null; eventId: string | null };

// A React error boundary: what its children throw while rendering is shown as a message and
// reported to AppGuard with the React component stack.
export class ErrorBoundary extends Component<Props, State> {
  state: State = { error: null, eventId: null };

  static getDerivedStateFromError(error: Error): Partial<State> {
    return { error };
  }

  componentDidCatch(error: Error, info: ErrorInfo): void {
    const eventId = Sentry.captureException(error, {
      contexts: { react: { componentStack: info.componentStack ?? '' } },
    });
    this.setState({ eventId });
  }

  render(): ReactNode {
    const { error, eventId } = this.state;
    if (error === null) {
      return this.props.children;
    }
    return (
      <div role="alert" className="error-boundary">
        <p>Something went wrong: {error.message}</p>
        {eventId && (
          <p>
            Reference: <code id="event-id">{eventId}</code>
          </p>
        )}
        <button type="button" onClick={() => this.setState({ error: null, eventId: null })}>
          Try again
        </button>
      </div>
    );
  }
}
