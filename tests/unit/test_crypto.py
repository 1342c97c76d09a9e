"""Personal data at rest: authenticated encryption with key ids for rotation."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.exceptions import InvalidTag

from intake.adapters.crypto import FieldCipher, KeyNotConfigured, KeyringError


def test_seal_and_open_round_trip_without_plaintext_in_the_sealed_value() -> None:
    c = FieldCipher(FieldCipher.generate("k1"))
    sealed = c.seal("Siti Nurhaliza +62 812", "r1:contact")
    assert "Siti" not in sealed
    assert sealed.startswith("v1:k1:")
    assert c.open(sealed, "r1:contact") == "Siti Nurhaliza +62 812"
    assert c.seal("x", "a") != c.seal("x", "a")  # fresh nonce each time


def test_a_value_moved_to_another_row_or_field_does_not_open() -> None:
    c = FieldCipher(FieldCipher.generate())
    sealed = c.seal("secret", "r1:narrative")
    with pytest.raises(InvalidTag):
        c.open(sealed, "r2:narrative")
    with pytest.raises(InvalidTag):
        c.open(sealed, "r1:contact")


def test_tampered_ciphertext_is_refused() -> None:
    c = FieldCipher(FieldCipher.generate())
    v, kid, b64 = c.seal("secret", "a").split(":")
    for i in (0, 12, -1):  # nonce, ciphertext, tag
        blob = bytearray(base64.b64decode(b64))
        blob[i] ^= 0x01
        with pytest.raises(InvalidTag):
            c.open(f"{v}:{kid}:{base64.b64encode(bytes(blob)).decode()}", "a")


def test_rotation_new_key_seals_old_key_still_opens() -> None:
    old = FieldCipher.generate("k1")
    sealed_old = FieldCipher(old).seal("lama", "a")
    rotated = FieldCipher(f"{FieldCipher.generate('k2')},{old}")
    assert rotated.current == "k2"
    assert rotated.open(sealed_old, "a") == "lama"
    assert rotated.key_id(rotated.seal("baru", "a")) == "k2"
    with pytest.raises(KeyringError):
        FieldCipher(FieldCipher.generate("k3")).open(sealed_old, "a")


@pytest.mark.parametrize("keys", ["", "k1:notbase64!!", "k1:c2hvcnQ=", ":" + "A" * 44])
def test_bad_keyrings_fail_at_start(keys: str) -> None:
    with pytest.raises(KeyringError):
        FieldCipher(keys)


def test_a_key_id_listed_twice_is_refused_at_start() -> None:
    first, second = FieldCipher.generate("k1"), FieldCipher.generate("k1")
    with pytest.raises(KeyringError, match="'k1' is listed twice"):
        FieldCipher(f"{first},{FieldCipher.generate('k2')},{second}")


def test_a_value_sealed_with_a_removed_key_names_the_key() -> None:
    sealed = FieldCipher(FieldCipher.generate("k1")).seal("secret", "a")
    with pytest.raises(KeyNotConfigured) as e:
        FieldCipher(FieldCipher.generate("k2")).open(sealed, "a")
    assert e.value.kid == "k1"
    assert "rujukan keys rotate" in str(e.value)


def test_the_request_digest_is_keyed_and_compares_under_every_configured_key() -> None:
    body = b'{"external_ref":"PPA-1","client":{"initials":"SN"}}'
    k1, k2 = FieldCipher.generate("k1"), FieldCipher.generate("k2")
    old = FieldCipher(k1)
    digest = old.digest(body)
    assert hashlib.sha256(body).hexdigest() not in digest
    assert len(digest) <= 64
    assert digest == old.digest(body)  # deterministic: a repeat compares equal
    assert FieldCipher(FieldCipher.generate("k1")).digest(body) != digest  # another key, another digest
    rotated = FieldCipher(f"{k2},{k1}")
    assert rotated.digest_key_id(body, digest) == "k1"
    assert rotated.digest_matches(body, digest)
    assert not rotated.digest_matches(body + b" ", digest)
    assert not FieldCipher(k2).digest_matches(body, digest)
    # Rows written before digests were keyed hold a plain SHA-256: still recognised.
    assert rotated.digest_key_id(body, hashlib.sha256(body).hexdigest()) == ""
    assert not rotated.digest_matches(body, hashlib.sha256(b"other").hexdigest())
