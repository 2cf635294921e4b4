"""One key per purpose, derived from the service's secret with HKDF-SHA256 (RFC 5869, on the
standard library's HMAC): a cursor's signature can never be replayed as a download link's, or
the other way round, and the secret itself signs nothing."""

import hashlib
import hmac

SALT = b"contactbase"
CURSORS = "list cursors"
DOWNLOADS = "export download links"


def hkdf_sha256(secret: bytes, info: bytes, *, salt: bytes = SALT, length: int = 32) -> bytes:
    """RFC 5869: extract a pseudorandom key from `secret`, then expand it for `info`."""
    prk = hmac.new(salt, secret, hashlib.sha256).digest()
    output, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        output += block
    return output[:length]


def derive(secret: bytes, purpose: str) -> bytes:
    """The key of one purpose (CURSORS, DOWNLOADS)."""
    return hkdf_sha256(secret, purpose.encode())
