"""Private keys handed to people, encrypted with a key derivation that resists guessing.

``cryptography``'s PKCS#8 encryption (``BestAvailableEncryption``) derives the key with
PBKDF2-SHA256 at 2,048 iterations, and offers no way to raise that for PKCS#8. A key this CA
generates for someone (an admin's TLS client key, a subject key where generated keys are
allowed) is protected by a human passphrase, so it is written here as PKCS#8
EncryptedPrivateKeyInfo with PBES2 (RFC 8018): PBKDF2-HMAC-SHA256 at 600,000 iterations
(OWASP's 2023 figure for PBKDF2-SHA256), AES-256-CBC. OpenSSL, Python's ``ssl`` and
``cryptography`` read it with the passphrase like any encrypted PEM key (sans-IO).
"""

from __future__ import annotations

import base64
import os
import textwrap
from typing import Final

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from .keystore import PrivateKey
from .ocsp import _oid, der_integer, tlv

__all__ = ["PBKDF2_ITERATIONS", "encrypt_private_key"]

PBKDF2_ITERATIONS: Final = 600_000
_PBES2: Final = "1.2.840.113549.1.5.13"
_PBKDF2: Final = "1.2.840.113549.1.5.12"
_HMAC_SHA256: Final = "1.2.840.113549.2.9"
_AES256_CBC: Final = "2.16.840.1.101.3.4.1.42"


def _seq(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def encrypt_private_key(key: PrivateKey, passphrase: bytes, *, iterations: int = PBKDF2_ITERATIONS) -> bytes:
    """``-----BEGIN ENCRYPTED PRIVATE KEY-----`` PEM of ``key`` under ``passphrase``."""
    if not passphrase:
        raise ValueError("an empty passphrase protects nothing")
    salt, iv = os.urandom(16), os.urandom(16)
    derived = PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(passphrase)
    plain = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())  # fmt: skip
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(derived), modes.CBC(iv)).encryptor()
    sealed = encryptor.update(padded) + encryptor.finalize()
    algorithm = _seq(
        _oid(_PBES2),
        _seq(
            _seq(_oid(_PBKDF2), _seq(tlv(0x04, salt), der_integer(iterations), _seq(_oid(_HMAC_SHA256), b"\x05\x00"))),
            _seq(_oid(_AES256_CBC), tlv(0x04, iv)),
        ),
    )
    der = _seq(algorithm, tlv(0x04, sealed))
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN ENCRYPTED PRIVATE KEY-----\n{body}\n-----END ENCRYPTED PRIVATE KEY-----\n".encode()
