"""The worker's timers: the sweep of silent customers, events the event clock releases,
the outbox relay, the check that Redis keeps what was written, the population KPI
gauges, and the look-up of input topics missing from the cluster's metadata."""

from __future__ import annotations

from typing import Any

from streams import metrics
from streams.kafka.assignment import MissingTopicsWatch, check_worker_consumer
from streams.state.kpis import GAUGE_REFRESH_S, KpiSource
from streams.worker.runtime import Runtime, stop_if_state_lost


class Timers:
    """The timers of one worker, each a method :meth:`schedule` registers with Faust."""

    def __init__(self, rt: Runtime, kpi_source: KpiSource) -> None:
        self.rt = rt
        self.kpi_source = kpi_source
        self.missing_inputs = MissingTopicsWatch(rt.settings.consumed_topics)

    def schedule(self, app: Any) -> None:
        settings = self.rt.settings
        app.timer(MissingTopicsWatch.interval_s)(self.look_up_missing_inputs)
        app.timer(settings.sweep_interval_s)(self.release_waiting)
        app.timer(settings.sweep_interval_s)(self.sweep)
        if settings.clock == "wall":
            # On the event clock every sweep reads all owned shards' metas (for the
            # watermarks) through the same guard, at the same interval.
            app.timer(settings.sweep_interval_s)(self.check_state_kept)
        app.timer(settings.outbox_relay_interval_s)(self.relay_outbox)
        app.timer(GAUGE_REFRESH_S)(self.refresh_kpis)

    async def look_up_missing_inputs(self) -> None:
        await check_worker_consumer(self.missing_inputs, self.rt.app.consumer)

    async def release_waiting(self) -> None:
        """Score events the event clock has passed since the last batch arrived."""
        if self.rt.ack is not None:
            await stop_if_state_lost(self.rt.finish_release())

    async def sweep(self) -> None:
        """Evaluate the owned shards' customers whose next check is due (silence)."""
        rt = self.rt
        shards, batch = rt.owned_shards(), rt.settings.sweep_batch
        while True:
            entries, swept = await stop_if_state_lost(rt.scorer.sweep(shards, batch))
            await rt.alerts.submit(entries)
            if swept < batch:
                break

    async def check_state_kept(self) -> None:
        """Notice Redis losing writes even when no batch comes to read the shards."""
        rt = self.rt
        shards = rt.owned_shards()
        if shards:
            await stop_if_state_lost(rt.scorer.retrying(lambda: rt.store.metas(shards)))

    async def relay_outbox(self) -> None:
        """Publish alerts left in the outbox by a worker that died before sending them.
        Entries this worker is sending are skipped; others are sent once seen by two
        passes, so a worker that committed them a moment ago (the shard's previous owner,
        during a rebalance) has the time to send them itself."""
        rt = self.rt
        shards = rt.owned_shards()
        if not shards:
            return
        pending = await rt.scorer.retrying(lambda: rt.store.pending_outbox(shards, 10_000))
        pending = [e for e in pending if not rt.alerts.handles(e)]
        stale = [e for e in pending if e.entry_id in rt.outbox_seen.get(e.shard, set())]
        rt.outbox_seen = {}
        for e in pending:
            rt.outbox_seen.setdefault(e.shard, set()).add(e.entry_id)
        if stale:
            await rt.alerts.submit(stale)
            metrics.OUTBOX_RELAYED.inc(len(stale))

    async def refresh_kpis(self) -> None:
        """Population KPI gauges, read from every shard (not only the owned ones)."""
        await self.kpi_source.refresh_gauges()
