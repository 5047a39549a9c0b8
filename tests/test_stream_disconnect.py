"""A readiness stream ends as soon as its client's connection closes (vidwiz/http_server.py
`on_disconnect`), served as vidwiz/web.py serves: aiohttp does not cancel the handler then, and
the keep-alive write that would fail is minutes away. Its subscription, queue and the open-streams
gauge go at once."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY

from tests.conftest import eventually
from vidwiz.context import HUB
from vidwiz.http_server import app_runner

A = "aaaaaaaaaaa"
ROUTE = {"route": "/v2/videos/{video_id}/stream"}


class ServedLikeWeb(TestServer):
    """aiohttp's test server (which cancels handlers on disconnect) run as vidwiz/web.py runs the app."""

    async def _make_runner(self, **kwargs):
        kwargs["handler_cancellation"] = False  # aiohttp's default, which vidwiz/web.py keeps
        return app_runner(self.app, **kwargs)


@pytest.fixture
async def server(app):
    served = ServedLikeWeb(app)
    await served.start_server()
    hub = app[HUB]
    hub.keepalive_interval = 3600  # no failed keep-alive write can be what ends the stream
    await asyncio.wait_for(hub.connected.wait(), 20)
    yield served
    await served.close()


def open_streams() -> float:
    return REGISTRY.get_sample_value("vidwiz_sse_streams_open", ROUTE) or 0.0


async def test_a_departed_client_ends_its_stream_at_once(server, db_factory):
    await db_factory.video(A, title="Not ready yet")
    hub = server.app[HUB]
    before = open_streams()
    async with aiohttp.ClientSession(str(server.make_url("/"))) as http:
        streams = []
        for n in range(3):
            resp = await http.get(f"/v2/videos/{A}/stream", headers={"X-Guest-Session-ID": f"g-{n}"})
            assert resp.status == 200
            assert (await resp.content.readline()).startswith(b"event: snapshot")
            streams.append(resp)
        assert hub.stream_count == 3 and open_streams() == before + 3

        streams.pop().close()  # the client leaves: its connection closes
        await eventually(lambda: hub.stream_count == 2, "the departed stream unsubscribed")
        await eventually(lambda: open_streams() == before + 2, "the gauge follows the clients")
        for resp in streams:
            resp.close()
        await eventually(lambda: hub.stream_count == 0 and hub.channel_count == 0, "every stream unsubscribed")
        await eventually(lambda: open_streams() == before, "the gauge back where it was")
