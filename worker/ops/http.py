"""The operator's HTTP routes beside the API: /healthz, /readyz, /metrics.

Health and metrics answer without credentials, as probes and scrapers expect; the
listener is on loopback unless the operator moves it.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures.

import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from worker.core.requests import ACTIVE
from worker.ops import metrics
from worker.ops.health import readiness
from worker.seed.error_details import error_body

if TYPE_CHECKING:
    from worker.ops.daemon import RunningDaemon


def health_router(service: "RunningDaemon") -> APIRouter:
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process answers (its event loop runs)."""
        return {"status": "ok"}

    @router.get("/readyz", response_model=None)
    async def readyz() -> dict[str, Any] | JSONResponse:
        """Ready to serve: each check with its reason when it fails (503)."""
        checks = await readiness(service)
        failed = [c for c in checks if not c.ok]
        if failed:
            # The API's error shape, built from the seed's vocabulary: ops sits below
            # the intakes and does not import the API's handlers.
            return JSONResponse(
                error_body(
                    [f"not ready: {c.name}: {c.reason}" for c in failed],
                    {c.name: [{"error": "not ready", "value": c.reason or ""}] for c in failed},
                ),
                status_code=503,
            )
        return {"status": "ready", "checks": {c.name: "ok" for c in checks}}

    @router.get("/metrics")
    async def prometheus() -> Response:
        """The Prometheus text format; levels are read from the state now."""
        journal = service.journal
        if journal is not None and journal.model is not None:
            # From memory: a scrape must not read a large backlog from the file.
            model = journal.model
            metrics.set_levels(
                model.request_counts(),
                model.oldest_pending_arrival(),
                list(model.drives.values()),
                time.time(),
                pending_by_pool=dict.fromkeys(model.pools, 0) | model.pending_by_pool(),
            )
        elif journal is not None:
            counts, oldest = metrics.request_levels(await journal.requests(ACTIVE))
            metrics.set_levels(counts, oldest, await journal.drives(), time.time())
        connected = service.mqtt is not None and service.mqtt.connected.is_set()
        metrics.MQTT_CONNECTED.set(int(connected))
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    return router
