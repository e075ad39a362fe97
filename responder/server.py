"""Running our coroutines and aiohttp applications until a signal says stop.

SIGINT (Ctrl-C) and SIGTERM are treated alike. A long-running command waits on
:meth:`Lifetime.wait` and returns normally when the signal comes, so its cleanup
(closing sites, pools and the embedded servers) runs in order; a short command is
cancelled instead, and :func:`run` raises :class:`Interrupted` (naming the signal) after
its cleanup, so the CLI can exit with 128 + the signal number as shells expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import uvloop
from aiohttp import web

__all__ = ["Interrupted", "Lifetime", "install_interrupt_handlers", "run", "serving"]

T = TypeVar("T")


class Interrupted(BaseException):
    """A command was stopped by SIGINT/SIGTERM before it finished.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


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


def install_interrupt_handlers() -> None:
    """Outside the event loop too, SIGTERM unwinds like Ctrl-C (``finally`` blocks run,
    embedded servers are stopped in order) instead of killing the process on the spot."""

    def interrupted(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)


def run(main: Callable[[Lifetime], Awaitable[T]]) -> T:
    """Run ``main(lifetime)`` on uvloop with SIGINT/SIGTERM handled as described above."""
    signals: list[int] = []

    async def wrapper() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        lifetime = Lifetime(task)
        lifetime.signals = signals  # shared, so run() can tell which signal stopped it
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            loop.add_signal_handler(sig, lifetime._on_signal, sig)
        try:
            return await main(lifetime)
        finally:
            # The loop's removal resets to the default action; put back what was there
            # (the CLI's handler, which turns SIGTERM into an orderly unwind).
            for sig, handler in previous.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, handler)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            return runner.run(wrapper())
        except asyncio.CancelledError:
            raise Interrupted(signals[-1] if signals else signal.SIGINT) from None


@contextlib.asynccontextmanager
async def serving(
    app: web.Application, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[web.AppRunner]:
    """Serve ``app`` on host:port (over TLS with ``ssl_context``) for the duration of the
    block; graceful shutdown after."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as e:
            raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
        yield runner
    finally:
        await runner.cleanup()


async def stop_task(task: asyncio.Task[object], *, retry: float = 0.1) -> None:
    """Cancel a background task and wait until it has ended.

    A single ``cancel()`` is not always enough on Python 3.11: ``asyncio.wait_for`` (which
    redis-py uses inside its commands) can swallow a cancellation that arrives as the inner
    operation completes, and a loop around it then carries on. So cancel again until the
    task is done.
    """
    task.cancel()
    while not task.done():
        await asyncio.wait({task}, timeout=retry)
        if not task.done():
            task.cancel()
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger(__name__).warning("background task %s failed: %r", task.get_name(), task.exception())
