"""Debian's chromium, headless, driven over the DevTools protocol on a websocket (aiohttp): no browser
download and no chromedriver. One page; ``evaluate`` runs JavaScript in it, ``screenshot`` saves a PNG.

    async with Chromium.open(url, tmp_path) as page:
        await page.wait_for("document.body.dataset.charts === 'ready'")
        await page.screenshot(Path("bench/results/dashboard.png"))
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from bus.server import end_process
from tests.support.wait import eventually

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--remote-debugging-port=0",  # the port it picked is written to <user-data-dir>/DevToolsActivePort
)


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is missing: `make test` installs it (Debian package chromium)"
    return found


class Chromium:
    def __init__(self, proc: subprocess.Popen[bytes], profile: Path, session: aiohttp.ClientSession) -> None:
        self.proc, self.profile, self.session = proc, profile, session
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console: list[str] = []
        self.reader: asyncio.Task[None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, url: str, tmp: Path, size: tuple[int, int] = (1500, 1900)) -> AsyncIterator[Chromium]:
        profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp))
        log = (tmp / "chromium.log").open("ab")
        cmd = [chromium_binary(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}", url]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220  (returns at once)
        session = aiohttp.ClientSession()
        page = cls(proc, profile, session)
        try:
            await page.attach()
            yield page
        finally:
            await page.close()
            log.close()

    async def attach(self) -> None:
        active = self.profile / "DevToolsActivePort"

        def ready() -> bool:
            assert self.proc.poll() is None, f"chromium exited {self.proc.returncode}"
            return active.exists() and bool(active.read_text().strip())

        await eventually(ready, timeout=30)
        port = int(active.read_text().split()[0])

        async def page_target() -> str | None:
            async with self.session.get(f"http://127.0.0.1:{port}/json/list") as r:
                targets = await r.json()
            pages = [t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"]
            return pages[0] if pages else None

        target = await eventually(page_target, timeout=15)
        self.ws = await self.session.ws_connect(target, max_msg_size=64 * 2**20)
        self.reader = asyncio.create_task(self.read())
        await self.send("Runtime.enable")

    async def read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            future = self.pending.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif data.get("method") == "Runtime.exceptionThrown":
                self.console.append("exception: " + json.dumps(data["params"]["exceptionDetails"])[:500])

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        call_id = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        await self.ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, 30)
        assert "error" not in reply, f"{method}: {reply['error']}"
        return dict(reply["result"])

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        reply = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in reply, f"{expression}: {reply['exceptionDetails']}"
        return reply["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        async def check() -> Any:
            try:
                return await self.evaluate(expression)
            except AssertionError:  # the page is not there yet (document.body is null while it loads)
                return None

        try:
            return await eventually(check, timeout=timeout, interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {expression}; page console: {self.console[-10:]}") from None

    async def screenshot(self, path: Path) -> Path:
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))  # noqa: ASYNC240  (one small file)
        return path

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        if self.ws is not None:
            await self.ws.close()
        await self.session.close()
        end_process(self.proc)
        shutil.rmtree(self.profile, ignore_errors=True)
