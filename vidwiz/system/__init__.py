"""The operators' side of the web layer: health, readiness, metrics, API docs, the queue page."""
