"""VidWiz backend: the /v2 HTTP + SSE API and the shared domain code."""
