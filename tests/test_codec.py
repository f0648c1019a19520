"""Payload encryption (issue 21): AES-GCM sealed payloads naming their key, rotation, refusal
of a wrong key, a session run with encryption on (Temporal keeps only ciphertext), and the
codec server the Web UI decodes through."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client

from reverie.api.app import start_api
from reverie.connections import connect_temporal
from reverie.payload_codec import (
    ENCODING,
    KEY_ID,
    EncryptionCodec,
    PayloadKeyError,
    data_converter,
    parse_keys,
)
from reverie.service.client import ReverieClient
from reverie.settings import Settings
from reverie.store import keys
from reverie.store.pool import connect
from reverie.worker import build_worker
from tests.fake_model import FakeModelServer, Reply

ORIGIN = "http://ui.example:8233"


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def test_round_trip_seals_values_and_names_the_key() -> None:
    converter = data_converter(f"k1:{new_key()}")
    sealed = await converter.encode(["a secret message", {"n": 1}])
    for payload in sealed:
        assert payload.metadata["encoding"] == ENCODING
        assert payload.metadata[KEY_ID] == b"k1"
        assert b"secret" not in payload.data
    assert await converter.decode(sealed, [str, dict]) == ["a secret message", {"n": 1}]
    # The same value sealed twice differs (a fresh nonce each time).
    again = await converter.encode(["a secret message"])
    assert again[0].data != sealed[0].data


async def test_keys_rotate_old_payloads_still_open() -> None:
    old, new = new_key(), new_key()
    before = EncryptionCodec(parse_keys(f"old:{old}"))
    after = EncryptionCodec(parse_keys(f"new:{new},old:{old}"))
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"hello"')
    sealed_before = await before.encode([plain])
    assert await after.decode(sealed_before) == [plain]
    sealed_after = await after.encode([plain])
    assert sealed_after[0].metadata[KEY_ID] == b"new"
    # A process that only has the old key cannot open what the new one sealed, and says why.
    with pytest.raises(PayloadKeyError, match="'new'"):
        await before.decode(sealed_after)
    # Payloads written before encryption was on pass through.
    assert await after.decode([plain]) == [plain]


async def test_a_wrong_or_relabelled_key_or_changed_payload_is_refused() -> None:
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"hello"')
    sealed = (await EncryptionCodec(parse_keys(f"k:{new_key()}")).encode([plain]))[0]
    impostor = EncryptionCodec(parse_keys(f"k:{new_key()}"))
    with pytest.raises(PayloadKeyError, match="does not open"):
        await impostor.decode([sealed])
    holder_of_two = EncryptionCodec(parse_keys(f"k:{new_key()},j:{new_key()}"))
    relabelled = Payload()
    relabelled.CopyFrom(sealed)
    relabelled.metadata[KEY_ID] = b"j"
    with pytest.raises(PayloadKeyError):
        await holder_of_two.decode([relabelled])
    changed = Payload()
    changed.CopyFrom(sealed)
    changed.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(PayloadKeyError):
        await impostor.decode([changed])
    # Marked sealed but too short to be (a nonce and a tag at least): refused the same way.
    for data in (b"", b"short"):
        truncated = Payload(metadata={"encoding": ENCODING, KEY_ID: b"k"}, data=data)
        with pytest.raises(PayloadKeyError, match="truncated"):
            await impostor.decode([truncated])


def test_malformed_keys_are_refused_without_echoing_them() -> None:
    short = base64.b64encode(b"x" * 10).decode()
    for text, message in [
        (f"k:{short}", "10 bytes"),
        ("k:not base64!", "not base64"),
        (f"k:{new_key()},k:{new_key()}", "twice"),
        (f"bad id:{new_key()}", "id:base64-key"),
        (" , ", "names no key"),
    ]:
        with pytest.raises(ValueError, match=message) as refused:
            parse_keys(text)
        assert short not in str(refused.value)
    with pytest.raises(ValueError) as refused:
        Settings(REVERIE_PAYLOAD_KEYS=f"k:{short}")  # refused at start, not at first payload
    assert short not in str(refused.value)  # nor in pydantic's error around it
    assert "REVERIE_PAYLOAD_KEYS" not in repr(Settings(REVERIE_PAYLOAD_KEYS=f"k:{new_key()}"))
    # Nor the other secrets a process holds, wherever its settings are shown.
    shown = repr(
        Settings(
            DATABASE_URL="postgresql://u:db-password@h/d",
            ANTHROPIC_API_KEY="sk-model-key",
            TEMPORAL_API_KEY="temporal-key",
        )
    )
    assert not [s for s in ("db-password", "sk-model-key", "temporal-key") if s in shown]


@dataclass
class Sealed:
    client: ReverieClient
    plain: Client
    base_url: str
    key: str


@pytest.fixture(scope="module")
async def sealed(settings: Settings) -> AsyncIterator[Sealed]:
    """A worker and an API process with encryption on, on a task queue of their own."""
    own = settings.model_copy(
        update={
            "task_queue": f"sealed-{uuid.uuid4().hex[:6]}",
            "payload_keys": f"k2:{new_key()},k1:{new_key()}",
            "codec_cors_origins": ORIGIN,
        }
    )
    temporal = await connect_temporal(own)
    pool = await connect(own.database_url or "")
    client = ReverieClient(temporal, pool, own)
    runner, base_url = await start_api(client, "127.0.0.1", 0)
    key = (await keys.create(pool, "codec", "tests")).key
    plain = await Client.connect(own.temporal_address or "")
    try:
        async with build_worker(temporal, pool, own):
            yield Sealed(client, plain, base_url, key)
    finally:
        await runner.cleanup()
        await client.close()


async def test_a_session_runs_with_encryption_on_and_temporal_keeps_only_ciphertext(
    sealed: Sealed, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(model_name, [Reply.text("the answer is 42")])
    agent = await sealed.client.create_agent({"name": "s", "model": model_name})
    session = await sealed.client.create_session({"agent": agent.id})
    await sealed.client.send_message(session.id, "my secret question")
    done = await sealed.client.wait_until_settled(session.id, timeout=30)
    assert done.status == "idle"
    events = await sealed.client.list_events(session.id, limit=100)
    assert "the answer is 42" in str([e.payload for e in events if e.type == "agent.message"])
    history = await sealed.plain.get_workflow_handle(session.id).fetch_history()
    raw = b"".join(event.SerializeToString() for event in history.events)
    assert b"my secret question" not in raw
    assert b"the answer is 42" not in raw
    started = history.events[0].workflow_execution_started_event_attributes
    assert {p.metadata["encoding"] for p in started.input.payloads} == {b"binary/encrypted"}
    # Search attributes stay readable (Temporal indexes them): ids and statuses only.
    assert b"json/plain" in raw


async def test_codec_server_decodes_for_key_holders_from_allowed_origins(
    sealed: Sealed,
) -> None:
    codec = sealed.client.temporal.data_converter.payload_codec
    assert isinstance(codec, EncryptionCodec)
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"visible"')
    body = json_format.MessageToDict(Payloads(payloads=await codec.encode([plain])))
    headers = {"Authorization": f"Bearer {sealed.key}", "Origin": ORIGIN}
    async with aiohttp.ClientSession(sealed.base_url) as http:
        async with http.post("/codec/decode", json=body, headers=headers) as response:
            assert response.status == 200, await response.text()
            assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
            answer = json_format.ParseDict(await response.json(), Payloads())
        assert list(answer.payloads) == [plain]
        async with http.post(
            "/codec/encode", json=json_format.MessageToDict(answer), headers=headers
        ) as response:
            encoded = json_format.ParseDict(await response.json(), Payloads())
        assert encoded.payloads[0].metadata[KEY_ID] == b"k2"
        # No key: refused (with CORS headers, so the Web UI can say why).
        async with http.post("/codec/decode", json=body, headers={"Origin": ORIGIN}) as response:
            assert response.status == 401
            assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
        async with http.options("/codec/decode", headers=preflight) as response:
            assert response.status == 204
            assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
        elsewhere = {**preflight, "Origin": "http://evil.example"}
        async with http.options("/codec/decode", headers=elsewhere) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers
        async with http.post(
            "/codec/decode", json=body, headers={**headers, "Origin": "http://evil.example"}
        ) as response:
            assert "Access-Control-Allow-Origin" not in response.headers
        async with http.post("/codec/decode", json={"payloads": "x"}, headers=headers) as response:
            assert response.status == 400
        # What no Reverie sealed, and bodies no JSON parser should recurse through: 400s.
        forged = {"payloads": [{"metadata": {"encoding": "YmluYXJ5L2VuY3J5cHRlZA=="}}]}
        for bad in (json.dumps(forged), "[" * 100_000 + "]" * 100_000, b"\xff"):
            async with http.post("/codec/decode", data=bad, headers=headers) as response:
                assert response.status == 400, await response.text()


async def test_codec_server_is_absent_without_keys(api: object) -> None:
    async with (
        aiohttp.ClientSession(api.base_url) as http,  # type: ignore[attr-defined]
        http.post(
            "/codec/decode",
            json={"payloads": []},
            headers={"x-api-key": api.key},  # type: ignore[attr-defined]
        ) as response,
    ):
        assert response.status == 404
        assert "REVERIE_PAYLOAD_KEYS" in (await response.json())["error"]["message"]
