"""Field encryption at rest: AES-256-GCM (authenticated) from `cryptography`.

A sealed value is `v1:<key id>:<base64 nonce+ciphertext>`. The associated data binds it to
its referral and field, so a ciphertext copied onto another row or column fails to open.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class KeyringError(ValueError):
    pass


class FieldCipher:
    def __init__(self, keys: str) -> None:
        """`keys`: "kid:base64key,kid2:base64key"; the first seals, all open."""
        self._keys: dict[str, AESGCM] = {}
        self.current: str = ""
        for item in filter(None, (k.strip() for k in keys.split(","))):
            kid, _, b64 = item.partition(":")
            try:
                raw = base64.b64decode(b64, validate=True)
            except ValueError:
                raise KeyringError(f"key '{kid}' is not valid base64") from None
            if len(raw) != 32 or not kid or ":" in kid:
                raise KeyringError(f"key '{kid}' must be a 32-byte key with a non-empty id")
            self._keys[kid] = AESGCM(raw)
            self.current = self.current or kid
        if not self.current:
            raise KeyringError("ENCRYPTION_KEYS is empty: set it to 'kid:<base64 of 32 random bytes>'")

    @staticmethod
    def generate(kid: str = "k1") -> str:
        return f"{kid}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"

    def seal(self, plaintext: str, aad: str) -> str:
        nonce = os.urandom(12)
        ct = self._keys[self.current].encrypt(nonce, plaintext.encode(), aad.encode())
        return f"v1:{self.current}:{base64.b64encode(nonce + ct).decode()}"

    def open(self, sealed: str, aad: str) -> str:
        version, kid, b64 = sealed.split(":", 2)
        if version != "v1" or kid not in self._keys:
            raise KeyringError(f"no key '{kid}' to open this value")
        blob = base64.b64decode(b64)
        return self._keys[kid].decrypt(blob[:12], blob[12:], aad.encode()).decode()

    def key_id(self, sealed: str) -> str:
        return sealed.split(":", 2)[1]
