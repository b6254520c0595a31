"""Status and metrics for the running agent.

``snapshot``  the Snapshot contract the agent fills (stdlib only)
``metrics``   Prometheus text rendering of a Snapshot (stdlib only)
``server``    ApiServer: aiohttp, /status /metrics /healthz /reload
``cli``       ``hadirector status`` / ``hadirector reload`` (stdlib HTTP client)

Nothing is imported here, so the CLI commands never pay for aiohttp.
"""
