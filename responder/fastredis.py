"""The responder's name for :mod:`ca_core.storage.fastredis` (the lean pipelined client)."""

from ca_core.storage.fastredis import FastRedis, RedisUnavailable

__all__ = ["FastRedis", "RedisUnavailable"]
