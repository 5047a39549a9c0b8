"""Notes and the AI-note trigger (writes the outbox)."""
