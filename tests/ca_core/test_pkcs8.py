"""Keys handed to people: PBES2 PKCS#8 that OpenSSL, Python's ssl and cryptography all read."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from ca_core.keystore import generate_private_key
from ca_core.model import KeyType
from ca_core.pkcs8 import PBKDF2_ITERATIONS, encrypt_private_key

PASSPHRASE = b"a long enough passphrase"


@pytest.mark.parametrize("key_type", [KeyType.EC_P256, KeyType.RSA2048])
def test_round_trip_and_openssl(
    key_type: KeyType, tmp_path: Path, openssl: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    key = generate_private_key(key_type)
    pem = encrypt_private_key(key, PASSPHRASE, iterations=10_000)
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    back = serialization.load_pem_private_key(pem, PASSPHRASE)
    assert back.private_numbers() == key.private_numbers()  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem, b"the wrong passphrase")
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, None)
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    text = openssl("pkey", "-in", path, "-passin", f"pass:{PASSPHRASE.decode()}", "-pubout").stdout
    assert "BEGIN PUBLIC KEY" in text
    parsed = openssl("asn1parse", "-in", path).stdout
    assert ":PBES2" in parsed and ":PBKDF2" in parsed and ":hmacWithSHA256" in parsed and ":aes-256-cbc" in parsed
    assert f"INTEGER           :{10_000:04X}" in parsed


def test_the_default_work_factor_and_fresh_salts() -> None:
    key = generate_private_key(KeyType.EC_P256)
    assert PBKDF2_ITERATIONS >= 600_000
    first, second = encrypt_private_key(key, PASSPHRASE), encrypt_private_key(key, PASSPHRASE)
    assert first != second  # salt and IV differ every time
    with pytest.raises(ValueError, match="empty passphrase"):
        encrypt_private_key(key, b"")
