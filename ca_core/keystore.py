"""Private keys: generation, policy checks on public keys, and encryption at rest.

Keys at rest are sealed with AES-256-GCM under a key-encryption key (KEK) derived
from the operator's passphrase with scrypt. A sealed blob is self-describing::

    b"CSK1" | n_log2 (1) | r (1) | p (1) | salt (16) | nonce (12) | ciphertext+tag

and is bound to a label (``issuer:moica:ca``, ...) given as associated data, so a
blob copied onto another row will not open. We do not use PKCS#8's
BestAvailableEncryption because ``cryptography`` fixes its PBKDF2 work factor at
2,048 iterations, too cheap for a passphrase an attacker could guess offline.

The KEK is derived once per (salt, parameters) and cached in the :class:`KeyVault`
object, never in module state; every key sealed by one vault shares its salt, so
a process that loads all the keys of one CA init pays for scrypt once.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import Final, TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import ConfigurationError, KeyStoreError, WeakKey, WrongPassphrase
from .model import KeyType

_log = logging.getLogger(__name__)

__all__ = [
    "KeyVault",
    "Passphrase",
    "PrivateKey",
    "PublicKey",
    "check_public_key",
    "generate_private_key",
    "key_type_of",
    "signature_hash_for",
]

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_MAGIC: Final = b"CSK1"
_HEADER = struct.Struct("!4sBBB16s12s")
#: OWASP's 2023 floor for scrypt is N=2^17, r=8, p=1 (128 MiB, ~0.3 s here).
DEFAULT_SCRYPT_N_LOG2: Final = 17
_MIN_N_LOG2, _MAX_N_LOG2 = 10, 18  # 2^18 with r=8 is 256 MiB
_SCRYPT_R, _SCRYPT_P = 8, 1
MIN_PASSPHRASE_LENGTH: Final = 12


class Passphrase:
    """A secret that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str | bytes) -> None:
        raw = value.encode() if isinstance(value, str) else bytes(value)
        raw = raw.rstrip(b"\r\n")
        # Count characters, not bytes: four CJK characters are 12 bytes but a weak secret.
        if len(raw.decode("utf-8", "replace")) < MIN_PASSPHRASE_LENGTH:
            raise ConfigurationError(
                f"the key passphrase is too short: use at least {MIN_PASSPHRASE_LENGTH} characters"
            )
        self._value = raw

    @classmethod
    def from_file(cls, path: Path) -> Passphrase:
        try:
            mode = path.stat().st_mode
            data = path.read_bytes()
        except OSError as e:
            raise ConfigurationError(f"cannot read the key passphrase file {path}: {e.strerror}") from None
        if mode & 0o007:
            _log.warning("the key passphrase file %s is readable by every user; chmod o-rwx it", path)
        return cls(data)

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Passphrase('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Passphrase) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def generate_private_key(key_type: KeyType) -> PrivateKey:
    """A fresh key of the given type (RSA keys use e = 65537)."""
    match key_type:
        case KeyType.RSA2048 | KeyType.RSA3072 | KeyType.RSA4096:
            return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type.value[3:]))
        case KeyType.EC_P256:
            return ec.generate_private_key(ec.SECP256R1())
        case KeyType.EC_P384:
            return ec.generate_private_key(ec.SECP384R1())
    raise AssertionError(key_type)  # pragma: no cover - exhaustive


def key_type_of(key: object) -> KeyType:
    """The :class:`KeyType` of a key, or :class:`WeakKey` if policy refuses it."""
    if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        return check_public_key(key.public_key())
    return check_public_key(key)


def check_public_key(key: object) -> KeyType:
    """Refuse keys that are too small, on unsupported curves or of unsupported types."""
    if isinstance(key, rsa.RSAPublicKey):
        size = key.key_size
        if size < 2048:
            raise WeakKey(f"RSA key of {size} bits is too small: at least 2048 bits are required")
        if size > 8192:
            raise WeakKey(f"RSA key of {size} bits is larger than the 8192 bits this CA accepts")
        e = key.public_numbers().e
        if e < 65537 or e % 2 == 0:
            raise WeakKey(f"RSA public exponent {e} is refused: it must be odd and at least 65537")
        # Sizes between the standard ones are legal but uncommon; report the nearest floor.
        if size >= 4096:
            return KeyType.RSA4096
        if size >= 3072:
            return KeyType.RSA3072
        return KeyType.RSA2048
    if isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return KeyType.EC_P256
        if isinstance(key.curve, ec.SECP384R1):
            return KeyType.EC_P384
        raise WeakKey(f"elliptic curve {key.curve.name} is not accepted: use P-256 or P-384")
    raise WeakKey(f"public key type {type(key).__name__} is not accepted: use RSA or ECDSA P-256/P-384")


def signature_hash_for(key: PublicKey | PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    """The digest to sign with: SHA-384 for P-384 keys, SHA-256 otherwise."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and isinstance(key.curve, ec.SECP384R1):
        return hashes.SHA384()
    return hashes.SHA256()


class KeyVault:
    """Seals private keys for storage and opens them again, under one passphrase.

    :param passphrase: the secret the KEK is derived from.
    :param scrypt_n_log2: scrypt cost for keys sealed by this vault (tests lower it).
    """

    def __init__(self, passphrase: Passphrase, *, scrypt_n_log2: int = DEFAULT_SCRYPT_N_LOG2) -> None:
        if not _MIN_N_LOG2 <= scrypt_n_log2 <= _MAX_N_LOG2:
            raise ConfigurationError(f"scrypt cost 2^{scrypt_n_log2} is outside 2^{_MIN_N_LOG2}..2^{_MAX_N_LOG2}")
        self._passphrase = passphrase
        self._n_log2 = scrypt_n_log2
        self._salt = os.urandom(16)
        self._keks: dict[tuple[bytes, int, int, int], bytes] = {}

    def __repr__(self) -> str:
        return f"KeyVault(scrypt_n=2^{self._n_log2})"

    def _kek(self, salt: bytes, n_log2: int, r: int, p: int) -> bytes:
        params = (salt, n_log2, r, p)
        kek = self._keks.get(params)
        if kek is None:
            # The parameters are read before anything is authenticated, so bound them: a
            # damaged or hostile blob must not make us derive with gigabytes of memory.
            if not _MIN_N_LOG2 <= n_log2 <= _MAX_N_LOG2 or r != _SCRYPT_R or p != _SCRYPT_P:
                raise KeyStoreError("sealed key has implausible scrypt parameters; it is corrupt")
            kdf = Scrypt(salt=salt, length=32, n=1 << n_log2, r=r, p=p)
            kek = kdf.derive(self._passphrase.reveal())
            self._keks[params] = kek
        return kek

    def seal(self, key: PrivateKey, *, label: str) -> bytes:
        """Encrypt ``key`` for storage, bound to ``label``."""
        plain = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        r, p = _SCRYPT_R, _SCRYPT_P
        nonce = os.urandom(12)
        header = _HEADER.pack(_MAGIC, self._n_log2, r, p, self._salt, nonce)
        kek = self._kek(self._salt, self._n_log2, r, p)
        return header + AESGCM(kek).encrypt(nonce, plain, header + label.encode())

    def open(self, blob: bytes, *, label: str) -> PrivateKey:
        """Decrypt a sealed key; :class:`WrongPassphrase` if the passphrase does not fit."""
        if len(blob) <= _HEADER.size or blob[:4] != _MAGIC:
            raise KeyStoreError(f"key {label!r} is not a sealed certstatus key")
        magic, n_log2, r, p, salt, nonce = _HEADER.unpack_from(blob)
        header = blob[: _HEADER.size]
        kek = self._kek(salt, n_log2, r, p)
        try:
            plain = AESGCM(kek).decrypt(nonce, blob[_HEADER.size :], header + label.encode())
        except InvalidTag:
            raise WrongPassphrase(
                f"cannot open key {label!r}: the passphrase is wrong or the key was tampered with"
            ) from None
        key = serialization.load_der_private_key(plain, password=None)
        if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            raise KeyStoreError(f"key {label!r} is of an unsupported type")
        return key
