"""An NTF server (and its APNs simulator) running in a thread of its own with its own event loop, so that
synchronous hypothesis tests can drive it example after example without a server start each time. The
loop's exception handler records what asyncio would otherwise only log (a task's unretrieved exception)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from helpers.e2e_env import Env, running_env

T = TypeVar("T")
START_TIMEOUT_S = 60.0


class LiveServer:
    def __init__(self, tmp_path: Path, redis_url: str, sections: dict[str, dict[str, Any]] | None = None) -> None:
        self._tmp, self._redis_url, self._sections = tmp_path, redis_url, sections
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[str] = []
        self._env: Env | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="live-ntf-server", daemon=True)

    @property
    def env(self) -> Env:
        assert self._env is not None, "not started"
        return self._env

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self._failed is not None:
            raise RuntimeError(f"live server did not start: {self._failed!r}")

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        """Run ``coro`` on the server's loop and wait for its result."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_TIMEOUT_S)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.set_exception_handler(self._on_loop_error)
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with running_env(self._tmp, self._redis_url) as env:
                if self._sections:
                    await env.reconfigure_sections(self._sections)
                self._env = env
                self._ready.set()
                await self._stop.wait()
        except BaseException as e:
            self._failed = e
            self._ready.set()
            raise

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.loop_errors.append(str(context.get("message")) + " " + repr(context.get("exception")))
        loop.default_exception_handler(context)
