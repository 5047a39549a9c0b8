"""Wiz conversations: transcript-grounded chat streamed over SSE, with daily quotas."""
