"""`vidwiz-worker`: the built-in transcript/metadata worker.

It talks to the service only through the HTTP contract of docs/api.md §5 (long-poll
`/v2/internal/tasks`, submit `/v2/internal/tasks/{id}/result`) and imports nothing from the
server, so it can be deployed alone next to any VidWiz API (needs only aiohttp).
"""
