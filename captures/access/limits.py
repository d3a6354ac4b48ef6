"""Bounds on what anyone (an anonymous share holder too) may make the web processes do: counted
slots (at most N holders at once: tshark runs, open sockets) and rates (at most N per minute).

Theory of operation. With REDIS_URL every web process shares the counts in Redis: a slot is a
member of a sorted set scored by when its lease ends, taken by one Lua script that first drops
the ended leases and then adds the holder only below the limit, so parallel takers never
overshoot, and a web process killed while holding a slot frees it when the lease ends. Without
Redis (the embedded default: one process) the same bookkeeping is a dict under a lock. Rates are
fixed windows counted with the cache's atomic `incr` (Redis, or this process' memory).

Keys are prefixed like the channel layer's groups (its `prefix`), so installations, or test
runs, sharing a Redis never count each other's work.
"""

from __future__ import annotations

import functools
import math
import threading
import time

from django.conf import settings
from django.core.cache import cache

_TAKE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease = tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
  if redis.call('TTL', KEYS[1]) < lease + 1 then
    redis.call('EXPIRE', KEYS[1], math.ceil(lease) + 1)
  end
  return 1
end
return 0
"""


def _prefix() -> str:
    config = settings.CHANNEL_LAYERS.get("default", {}).get("CONFIG", {})
    return f"{config.get('prefix', 'kviz')}:limits:"


@functools.lru_cache(maxsize=4)
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=5)


_local_lock = threading.Lock()
_local_slots: dict[str, dict[str, float]] = {}  # key -> {holder: when its lease ends}


def _take_local(key: str, holder: str, limit: int, lease: float) -> bool:
    now = time.monotonic()
    with _local_lock:
        leases = _local_slots.setdefault(key, {})
        for ended in [h for h, until in leases.items() if until <= now]:
            del leases[ended]
        if holder not in leases and len(leases) >= limit:
            return False
        leases[holder] = now + lease
        return True


def take_slot(name: str, holder: str, limit: int, lease: float) -> bool:
    """Hold one of `limit` slots of `name` for `lease` seconds (taking it again renews it);
    False when all are held."""
    key = f"{_prefix()}slots:{name}"
    if settings.REDIS_URL:
        client = _redis(settings.REDIS_URL)
        return bool(client.eval(_TAKE, 1, key, holder, limit, lease))
    return _take_local(key, holder, limit, lease)


def give_back_slot(name: str, holder: str) -> None:
    key = f"{_prefix()}slots:{name}"
    if settings.REDIS_URL:
        _redis(settings.REDIS_URL).zrem(key, holder)
    else:
        with _local_lock:
            _local_slots.get(key, {}).pop(holder, None)


def seconds_over_rate(name: str, per_minute: int) -> int:
    """Count one use of `name`: 0 when within `per_minute`, else seconds until it may go on."""
    window = 60
    now = time.time()
    key = f"{_prefix()}rate:{name}:{int(now // window)}"
    cache.add(key, 0, timeout=window + 1)
    try:
        count = cache.incr(key)
    except ValueError:  # the window's key ended between add and incr: a new window
        cache.add(key, 1, timeout=window + 1)
        count = 1
    if count <= per_minute:
        return 0
    return max(1, math.ceil(window - now % window))
