"""Names shared by the supervisor and the processes it starts. No imports: the supervisor and
the web process both read this, and neither may pull in the other's dependencies."""

# The sockets a web child serves, as comma-separated inherited file descriptors.
LISTEN_FDS_ENV = "VIDWIZ_LISTEN_FDS"
# The supervisor's health checks identify themselves; web children leave them out of the access log.
PROBE_USER_AGENT = "vidwiz-supervisor-probe"
# prometheus_client's own variable: where every process of the tree writes its samples.
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Connections the kernel queues before a web process accepts them (capped by net.core.somaxconn).
# Each web process listens again on the inherited socket, so it must ask for the same: aiohttp's
# default (128) would shrink it, and a burst past it waits for the client's SYN retry (1 s, 3 s, …).
LISTEN_BACKLOG = 4096
