"""Status and metrics (HTTP, read-only) and control (unix socket, root) for the agent.

``snapshot``  the Snapshot contract the agent fills (stdlib only)
``metrics``   Prometheus text rendering of a Snapshot (stdlib only)
``server``    ApiServer: aiohttp, /status /metrics /healthz (read-only)
``control``   ControlServer: reload over a root-only unix socket (SO_PEERCRED)
``listener``  BoundedListener: connection cap, deadlines, throttled accept errors
``limits``    the pure parts: log throttle, reload token bucket, who to shed
``cli``       ``hadirector status`` (stdlib HTTP) / ``hadirector reload`` (control socket)

Nothing is imported here, so the CLI commands never pay for aiohttp.
"""
