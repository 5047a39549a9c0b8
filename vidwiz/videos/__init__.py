"""Videos, the readiness snapshot and its SSE stream."""
