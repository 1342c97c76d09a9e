"""Personal data at rest: authenticated encryption with key ids for rotation."""

from __future__ import annotations

import base64

import pytest
from cryptography.exceptions import InvalidTag

from intake.adapters.crypto import FieldCipher, KeyringError


def test_seal_and_open_round_trip_without_plaintext_in_the_sealed_value() -> None:
    c = FieldCipher(FieldCipher.generate("k1"))
    sealed = c.seal("Siti Nurhaliza +62 812", "r1:contact")
    assert "Siti" not in sealed and sealed.startswith("v1:k1:")
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
