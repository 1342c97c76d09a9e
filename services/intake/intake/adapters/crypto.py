"""Field encryption at rest: AES-256-GCM (authenticated) from `cryptography`.

A sealed value is `v1:<key id>:<base64 nonce+ciphertext>`. The associated data binds it to
its referral and field, so a ciphertext copied onto another row or column fails to open.

The same keys also key the digest of a submission kept for idempotency (`digest`): an HMAC
under a key derived from the encryption key (HKDF), so that the digest of a body holding
personal data cannot be confirmed by someone who guesses the body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class KeyringError(ValueError):
    pass


class KeyNotConfigured(KeyringError):
    """A value was sealed with a key that ENCRYPTION_KEYS no longer lists."""

    def __init__(self, kid: str) -> None:
        super().__init__(f"sealed with key '{kid}', which is not configured in ENCRYPTION_KEYS: "
                         "restore that key, or run `rujukan keys rotate` before removing a key")
        self.kid = kid


# A keyed digest: "h1:" + base64url of HMAC-SHA256 (46 characters, fits the 64 of the column).
DIGEST_PREFIX = "h1:"
_DIGEST_INFO = b"rujukan/intake/request-digest/v1"


class FieldCipher:
    def __init__(self, keys: str) -> None:
        """`keys`: "kid:base64key,kid2:base64key"; the first seals, all open."""
        self._keys: dict[str, AESGCM] = {}
        self._digest_keys: dict[str, bytes] = {}
        self.current: str = ""
        for item in filter(None, (k.strip() for k in keys.split(","))):
            kid, _, b64 = item.partition(":")
            try:
                raw = base64.b64decode(b64, validate=True)
            except ValueError:
                raise KeyringError(f"key '{kid}' is not valid base64") from None
            if len(raw) != 32 or not kid or ":" in kid:
                raise KeyringError(f"key '{kid}' must be a 32-byte key with a non-empty id")
            if kid in self._keys:
                # Silently keeping one of the two would leave values sealed with the other
                # unreadable, or seal new ones with a key the operator did not mean.
                raise KeyringError(f"key id '{kid}' is listed twice in ENCRYPTION_KEYS: each key needs its own id")
            self._keys[kid] = AESGCM(raw)
            self._digest_keys[kid] = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                                          info=_DIGEST_INFO).derive(raw)
            self.current = self.current or kid
        if not self.current:
            raise KeyringError("ENCRYPTION_KEYS is empty: set it to 'kid:<base64 of 32 random bytes>'")

    @staticmethod
    def generate(kid: str = "k1") -> str:
        return f"{kid}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"

    @property
    def key_ids(self) -> list[str]:
        """The configured key ids, the current (sealing) one first."""
        return list(self._keys)

    def seal(self, plaintext: str, aad: str) -> str:
        nonce = os.urandom(12)
        ct = self._keys[self.current].encrypt(nonce, plaintext.encode(), aad.encode())
        return f"v1:{self.current}:{base64.b64encode(nonce + ct).decode()}"

    def open(self, sealed: str, aad: str) -> str:
        version, kid, b64 = sealed.split(":", 2)
        if version != "v1":
            raise KeyringError(f"unknown sealed-value version '{version}'")
        if kid not in self._keys:
            raise KeyNotConfigured(kid)
        blob = base64.b64decode(b64)
        return self._keys[kid].decrypt(blob[:12], blob[12:], aad.encode()).decode()

    def key_id(self, sealed: str) -> str:
        return sealed.split(":", 2)[1]

    def is_current(self, sealed: str) -> bool:
        return sealed.startswith(f"v1:{self.current}:")

    # --- keyed digests ----------------------------------------------------------------------

    def digest(self, data: bytes, kid: str | None = None) -> str:
        """A keyed digest of `data` under the current key (or `kid`)."""
        mac = hmac.new(self._digest_keys[kid or self.current], data, hashlib.sha256).digest()
        return DIGEST_PREFIX + base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def digest_key_id(self, data: bytes, stored: str) -> str | None:
        """The configured key under which `stored` is the digest of `data`, or None when it
        is not. A stored value without the prefix is a plain SHA-256 hex digest written
        before digests were keyed: still compared as such (answering ""), so that a repeat
        of an old submission is recognised; `rujukan keys rotate` re-keys those rows."""
        if not stored.startswith(DIGEST_PREFIX):
            return "" if hmac.compare_digest(hashlib.sha256(data).hexdigest(), stored) else None
        return next((kid for kid in self._keys if hmac.compare_digest(self.digest(data, kid), stored)), None)

    def digest_matches(self, data: bytes, stored: str) -> bool:
        return self.digest_key_id(data, stored) is not None
