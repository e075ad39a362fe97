"""Running our coroutines and aiohttp applications until a signal says stop.

SIGINT (Ctrl-C) and SIGTERM are treated alike. A long-running command waits on
:meth:`Lifetime.wait` and returns normally when the signal comes, so its cleanup
(closing sites, pools and the embedded servers) runs in order; a short command is
cancelled instead, and :func:`run` raises ``KeyboardInterrupt`` after its cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import uvloop
from aiohttp import web

__all__ = ["Lifetime", "run", "serving"]

T = TypeVar("T")


class Lifetime:
    """How a running command learns that it should stop."""

    def __init__(self, task: asyncio.Task[object]) -> None:
        self._task = task
        self._stop = asyncio.Event()
        self._waiting = False
        self.signals: list[int] = []

    def _on_signal(self, signum: int) -> None:
        self.signals.append(signum)
        if self._waiting and not self._stop.is_set():
            self._stop.set()
        else:
            # A second signal, or a command that is not waiting: cancel it.
            self._task.cancel()

    async def wait(self) -> None:
        """Return when SIGINT or SIGTERM arrives."""
        self._waiting = True
        await self._stop.wait()


def run(main: Callable[[Lifetime], Awaitable[T]]) -> T:
    """Run ``main(lifetime)`` on uvloop with SIGINT/SIGTERM handled as described above."""

    async def wrapper() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        lifetime = Lifetime(task)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lifetime._on_signal, sig)
        try:
            return await main(lifetime)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            return runner.run(wrapper())
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None


@contextlib.asynccontextmanager
async def serving(app: web.Application, host: str, port: int) -> AsyncIterator[web.AppRunner]:
    """Serve ``app`` on host:port for the duration of the block; graceful shutdown after."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
        yield runner
    finally:
        await runner.cleanup()
