"""A coffee shop web app reporting its errors to AppGuard with the Sentry Python SDK."""
