"""The worker's web views: /healthz, /metrics (Prometheus) and /kpis."""

from __future__ import annotations

from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.state.kpis import KpiSource
from streams.worker.runtime import Runtime


def route(app: faust.App, rt: Runtime, kpi_source: KpiSource) -> None:
    """Serve the views on ``app``'s web server."""
    client = rt.store.client

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        try:
            await client.ping()
        except Exception as exc:
            return web.json({"status": "redis unavailable", "error": str(exc)}, status=503)
        return web.json({"status": "ok", "owned_shards": rt.owned_shards()})

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/kpis")
    async def kpis_view(web: Any, request: Any) -> Any:
        """Population KPIs as JSON; ``?window_days=N`` picks the window."""
        try:
            report = await kpi_source.report(request.query.get("window_days"))
        except ValueError as exc:
            return web.json({"error": str(exc)}, status=400)
        return web.json(report)
