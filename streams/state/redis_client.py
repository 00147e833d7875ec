"""The Redis client the worker and its tools use: fails fast, packs commands with hiredis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.typing import EncodableT

from streams.settings import Settings


def _hiredis_packer() -> Callable[..., bytes] | None:
    try:
        import hiredis
    except ImportError:  # an optional speed-up of redis-py (redis[hiredis] installs it)
        return None
    pack: Callable[..., bytes] = hiredis.pack_command
    return pack


_hiredis_pack = _hiredis_packer()


def connect_redis(url: str, *, cluster: bool = False, timeout_s: float = 5.0) -> Any:
    """A Redis client (a cluster client when ``cluster``) that fails fast: one quick
    reconnect inside redis-py; longer outages are retried by the scorer, which backs off,
    counts them in a metric and acknowledges nothing meanwhile."""
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(ExponentialBackoff(cap=0.2), 1),
    }
    if cluster:
        return RedisCluster.from_url(url, **options)
    client = aioredis.from_url(url, **options)
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    if (
        _hiredis_pack is not None
        and issubclass(pool.connection_class, AbstractConnection)
        # hiredis encodes text as redis-py does by default only
        and kwargs.get("encoding", "utf-8") == "utf-8"
        and kwargs.get("encoding_errors", "strict") == "strict"
    ):
        pool.connection_class = type(
            pool.connection_class.__name__, (_HiredisPacking, pool.connection_class), {}
        )
    return client


class _HiredisPacking(AbstractConnection):
    """Commands packed by hiredis' C packer, as redis-py's sync client does when hiredis
    is installed; its asyncio client packs in Python (redis-py issue #4176), argument by
    argument: a batch's commit scripts have hundreds. The bytes are the same; what
    hiredis refuses (None, bool, memoryview) goes to redis-py's packer and its errors."""

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        head = args[0]
        if _hiredis_pack is not None and isinstance(head, str | bytes):
            # the command name split as redis-py's packer splits it ("CONFIG GET")
            if isinstance(head, str):
                command = (*head.encode().split(), *args[1:])
            else:
                command = (*head.split(), *args[1:]) if b" " in head else args
            try:
                return [_hiredis_pack(command)]
            except (TypeError, UnicodeEncodeError):
                pass
        return super().pack_command(*args)


def redis_of(settings: Settings) -> Any:
    """The Redis client ENGAGEMENT_REDIS_URL, _REDIS_CLUSTER and _REDIS_TIMEOUT_S describe."""
    return connect_redis(
        settings.redis_url.get_secret_value(),
        cluster=settings.redis_cluster,
        timeout_s=settings.redis_timeout_s,
    )
