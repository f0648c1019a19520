"""Optional payload encryption: everything Reverie puts in Temporal, sealed with AES-GCM.

Temporal then stores only ciphertext (workflow inputs, results, signals, updates, queries,
activity arguments, memos and failure messages). Each payload names the key that sealed it
(`encryption-key-id` in its metadata), so keys rotate: put a new key first in
REVERIE_PAYLOAD_KEYS and keep the old ones after it for as long as histories sealed with them
live. Payloads that are not sealed (written before encryption was turned on) pass through.

Each payload gets a fresh random 96-bit nonce: with one key, NIST's bound for random nonces is
2**32 payloads, so put a new key first well before one key has sealed billions of payloads.
What stays readable in Temporal is listed in deploy/README.md ("Payload encryption").
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

ENCODING = b"binary/encrypted"
CIPHER = b"AES-GCM"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
TAG_BYTES = 16
_KEY_ID_SHAPE = re.compile(r"[A-Za-z0-9._-]{1,64}")


class PayloadKeyError(ValueError):
    """A payload cannot be opened: its key is unknown here, or it is not the key that sealed it
    (or the ciphertext was changed)."""


def parse_keys(text: str) -> dict[str, bytes]:
    """`id:base64-key,...` in order (the first seals). Refuses anything malformed, naming it,
    but never echoing a key."""
    keys: dict[str, bytes] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        if not sep or not _KEY_ID_SHAPE.fullmatch(key_id):
            raise ValueError(
                "REVERIE_PAYLOAD_KEYS: each entry is `id:base64-key`, the id 1-64 of "
                "A-Z a-z 0-9 . _ -"
            )
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"REVERIE_PAYLOAD_KEYS: key {key_id!r} is not base64") from None
        if len(key) not in (16, 24, 32):
            raise ValueError(
                f"REVERIE_PAYLOAD_KEYS: key {key_id!r} is {len(key)} bytes; AES needs 16, 24 or 32"
            )
        if key_id in keys:
            raise ValueError(f"REVERIE_PAYLOAD_KEYS: key id {key_id!r} appears twice")
        keys[key_id] = key
    if not keys:
        raise ValueError("REVERIE_PAYLOAD_KEYS is set but names no key")
    return keys


class EncryptionCodec(PayloadCodec):
    """Seals with the first key; opens with whichever key a payload names."""

    def __init__(self, keys: dict[str, bytes]) -> None:
        if not keys:
            raise ValueError("an encryption codec needs at least one key")
        self._current = next(iter(keys))
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}

    @property
    def current_key_id(self) -> str:
        return self._current

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.seal(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.open(p) for p in payloads]

    def seal(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        key_id = self._current.encode()
        # The key id is authenticated too: a payload relabelled with another id fails to open.
        sealed = self._ciphers[self._current].encrypt(nonce, payload.SerializeToString(), key_id)
        return Payload(
            metadata={"encoding": ENCODING, "encryption-cipher": CIPHER, KEY_ID: key_id},
            data=nonce + sealed,
        )

    def open(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # written before encryption was turned on
        # As the payload says (so possibly anything): cut short for error messages.
        key_id = payload.metadata.get(KEY_ID, b"")[:64].decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadKeyError(
                f"payload sealed with key {key_id!r}, which REVERIE_PAYLOAD_KEYS does not hold"
            )
        data = payload.data
        if len(data) < NONCE_BYTES + TAG_BYTES:
            # Too short to be sealed at all (AES-GCM would fail on the nonce, not the tag).
            raise PayloadKeyError(f"payload said to be sealed with key {key_id!r} is truncated")
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise PayloadKeyError(
                f"payload does not open with key {key_id!r}: another key sealed it, or it was "
                "changed"
            ) from None
        opened = Payload()
        try:
            opened.ParseFromString(plain)
        except DecodeError:
            raise PayloadKeyError(f"payload opened with key {key_id!r} is not a payload") from None
        return opened


def codec_for(payload_keys: str | None) -> EncryptionCodec | None:
    return EncryptionCodec(parse_keys(payload_keys)) if payload_keys else None


def data_converter(payload_keys: str | None) -> DataConverter:
    """Reverie's converter (pydantic), sealed when keys are set; failure messages and stack
    traces are then encoded too, so they are sealed with the rest."""
    codec = codec_for(payload_keys)
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
