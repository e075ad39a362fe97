"""Private keys: generation, the public-key policy and sealing keys at rest."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from ca_core.errors import ConfigurationError, KeyStoreError, WeakKey, WrongPassphrase
from ca_core.keystore import (
    KeyVault,
    Passphrase,
    PrivateKey,
    check_public_key,
    generate_private_key,
    key_type_of,
    signature_hash_for,
)
from ca_core.model import KeyType

SECRET = "correct horse battery staple"
OTHER_SECRET = "incorrect horse battery staple"
N_LOG2 = 12
HEADER_SIZE = 4 + 3 + 16 + 12
LABEL = "issuer:moica:ca"


@pytest.fixture(scope="module")
def keys() -> dict[KeyType, PrivateKey]:
    """One key of every type, generated once (RSA-4096 takes most of a second)."""
    return {kt: generate_private_key(kt) for kt in KeyType}


@pytest.fixture(scope="module")
def module_vault() -> KeyVault:
    return KeyVault(Passphrase(SECRET), scrypt_n_log2=N_LOG2)


@pytest.fixture(scope="module")
def sealed(module_vault: KeyVault, keys: dict[KeyType, PrivateKey]) -> bytes:
    return module_vault.seal(keys[KeyType.EC_P256], label=LABEL)


def _der(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _flip(blob: bytes, index: int) -> bytes:
    b = bytearray(blob)
    b[index] ^= 0x01
    return bytes(b)


def _rsa_public(bits: int, e: int = 65537) -> rsa.RSAPublicKey:
    """An RSA public key of exactly ``bits`` bits (policy only looks at the numbers)."""
    n = secrets.randbits(bits) | (1 << (bits - 1)) | 1
    return rsa.RSAPublicNumbers(e, n).public_key()


class TestPassphrase:
    @pytest.mark.parametrize(
        "value", ["", "x", "elevenchars", b"elevenchars", "elevenchars\n", "elevenchars\r\n", "\n" * 20]
    )
    def test_too_short(self, value: str | bytes) -> None:
        with pytest.raises(ConfigurationError, match="the key passphrase is too short: use at least 12 characters"):
            Passphrase(value)

    def test_refusal_does_not_echo_the_secret(self) -> None:
        with pytest.raises(ConfigurationError) as info:
            Passphrase("hunter2abcd")
        assert "hunter2" not in str(info.value)

    def test_short_non_ascii_passphrase_is_refused(self) -> None:
        # Four characters: the rule (and its message) is "at least 12 characters",
        # but these encode to 12 UTF-8 bytes.
        with pytest.raises(ConfigurationError, match="at least 12 characters"):
            Passphrase("王小明王")

    @pytest.mark.parametrize(
        ("value", "revealed"),
        [
            ("twelve chars", b"twelve chars"),
            (b"twelve chars", b"twelve chars"),
            ("twelve chars\n", b"twelve chars"),
            ("twelve chars\r\n", b"twelve chars"),
            ("  twelve chars  ", b"  twelve chars  "),  # spaces are part of the secret
            ("pass phrase 密碼", "pass phrase 密碼".encode()),
        ],
    )
    def test_value(self, value: str | bytes, revealed: bytes) -> None:
        p = Passphrase(value)
        assert p.reveal() == revealed
        assert p == Passphrase(revealed)
        assert hash(p) == hash(Passphrase(revealed))

    def test_equality(self) -> None:
        assert Passphrase(SECRET) != Passphrase(OTHER_SECRET)
        assert Passphrase(SECRET) != SECRET

    def test_never_shows_itself(self) -> None:
        p = Passphrase(SECRET)
        for text in (repr(p), str(p), f"{p}", f"{p!r}", repr([p]), repr({"p": p})):
            assert SECRET not in text
            assert "horse" not in text
        assert repr(p) == "Passphrase('***')"
        assert str(p) == "Passphrase('***')"

    def test_from_file_strips_the_trailing_newline(self, tmp_path: Path) -> None:
        path = tmp_path / "passphrase"
        path.write_text(SECRET + "\n")
        p = Passphrase.from_file(path)
        assert p.reveal() == SECRET.encode()
        assert p == Passphrase(SECRET)

    def test_from_file_keeps_inner_newlines(self, tmp_path: Path) -> None:
        path = tmp_path / "passphrase"
        path.write_bytes(b"line one\nline two\r\n")
        assert Passphrase.from_file(path).reveal() == b"line one\nline two"

    def test_from_missing_file(self, tmp_path: Path) -> None:
        path = tmp_path / "no-such-file"
        with pytest.raises(ConfigurationError) as info:
            Passphrase.from_file(path)
        message = str(info.value)
        assert f"cannot read the key passphrase file {path}" in message
        assert "No such file or directory" in message

    def test_from_directory(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="cannot read the key passphrase file"):
            Passphrase.from_file(tmp_path)

    def test_from_file_too_short(self, tmp_path: Path) -> None:
        path = tmp_path / "passphrase"
        path.write_text("short\n")
        with pytest.raises(ConfigurationError, match="too short"):
            Passphrase.from_file(path)


class TestKeyVault:
    @pytest.mark.parametrize("key_type", list(KeyType), ids=str)
    def test_round_trip(self, module_vault: KeyVault, keys: dict[KeyType, PrivateKey], key_type: KeyType) -> None:
        key = keys[key_type]
        blob = module_vault.seal(key, label=f"issuer:moica:{key_type}")
        opened = module_vault.open(blob, label=f"issuer:moica:{key_type}")
        assert type(opened) is type(key)
        assert _der(opened) == _der(key)
        assert key_type_of(opened) is key_type

    @pytest.mark.parametrize("key_type", list(KeyType), ids=str)
    def test_blob_hides_the_key(
        self, module_vault: KeyVault, keys: dict[KeyType, PrivateKey], key_type: KeyType
    ) -> None:
        key = keys[key_type]
        plain = _der(key)
        blob = module_vault.seal(key, label=LABEL)
        assert plain not in blob
        # Not even a 16-byte run of the PKCS#8 DER is left in the clear.
        for i in range(0, len(plain) - 16, 8):
            assert plain[i : i + 16] not in blob
        assert len(blob) == HEADER_SIZE + len(plain) + 16  # GCM tag

    def test_blob_header(self, module_vault: KeyVault, keys: dict[KeyType, PrivateKey]) -> None:
        first = module_vault.seal(keys[KeyType.EC_P256], label=LABEL)
        second = module_vault.seal(keys[KeyType.EC_P256], label=LABEL)
        for blob in (first, second):
            assert blob[:4] == b"CSK1"
            assert (blob[4], blob[5], blob[6]) == (N_LOG2, 8, 1)
        assert first[7:23] == second[7:23], "one vault seals every key under one salt"
        assert first[23:35] != second[23:35], "every seal has a fresh nonce"
        assert first != second

    def test_another_vault_with_the_same_passphrase_opens_it(
        self, sealed: bytes, keys: dict[KeyType, PrivateKey]
    ) -> None:
        # The salt and scrypt cost travel in the blob; a later process has its own salt.
        other = KeyVault(Passphrase(SECRET), scrypt_n_log2=13)
        assert _der(other.open(sealed, label=LABEL)) == _der(keys[KeyType.EC_P256])

    def test_wrong_passphrase(self, sealed: bytes) -> None:
        other = KeyVault(Passphrase(OTHER_SECRET), scrypt_n_log2=N_LOG2)
        with pytest.raises(WrongPassphrase) as info:
            other.open(sealed, label=LABEL)
        message = str(info.value)
        assert f"cannot open key {LABEL!r}" in message
        assert "the passphrase is wrong" in message
        assert OTHER_SECRET not in message and SECRET not in message
        assert info.value.code == "wrong-passphrase"

    @pytest.mark.parametrize("label", ["issuer:gca:ca", "issuer:moica:ocsp", "issuer:moica:ca ", ""])
    def test_right_passphrase_wrong_label(self, module_vault: KeyVault, sealed: bytes, label: str) -> None:
        with pytest.raises(WrongPassphrase, match=f"cannot open key {label!r}"):
            module_vault.open(sealed, label=label)

    @pytest.mark.parametrize(
        ("where", "index"),
        [
            ("n_log2", 4),  # 12 -> 13: a different KEK
            ("salt", 7),
            ("salt-end", 22),
            ("nonce", 23),
            ("ciphertext", HEADER_SIZE),
            ("ciphertext-middle", HEADER_SIZE + 40),
            ("tag", -1),
        ],
    )
    def test_tampered(self, module_vault: KeyVault, sealed: bytes, where: str, index: int) -> None:
        with pytest.raises(WrongPassphrase, match="the passphrase is wrong or the key was tampered with"):
            module_vault.open(_flip(sealed, index), label=LABEL)

    @pytest.mark.parametrize(
        ("make", "fragment"),
        [
            (lambda b: b"", "is not a sealed certstatus key"),
            (lambda b: b[:4], "is not a sealed certstatus key"),
            (lambda b: b[:HEADER_SIZE], "is not a sealed certstatus key"),
            (lambda b: b"CSK2" + b[4:], "is not a sealed certstatus key"),
            (lambda b: b"\x30\x82" + b[2:], "is not a sealed certstatus key"),
            (lambda b: os.urandom(len(b)), "is not a sealed certstatus key"),
            (lambda b: b"-----BEGIN PRIVATE KEY-----\n", "is not a sealed certstatus key"),
            (lambda b: b[:4] + bytes([9]) + b[5:], "implausible scrypt parameters"),
            (lambda b: b[:4] + bytes([23]) + b[5:], "implausible scrypt parameters"),
            (lambda b: b[:4] + bytes([255]) + b[5:], "implausible scrypt parameters"),
            (lambda b: b[:5] + bytes([0]) + b[6:], "implausible scrypt parameters"),
            (lambda b: b[:5] + bytes([33]) + b[6:], "implausible scrypt parameters"),
            (lambda b: b[:6] + bytes([0]) + b[7:], "implausible scrypt parameters"),
            (lambda b: b[:6] + bytes([17]) + b[7:], "implausible scrypt parameters"),
            (lambda b: b[: HEADER_SIZE + 1], "the passphrase is wrong or the key was tampered with"),
            (lambda b: b[:-1], "the passphrase is wrong or the key was tampered with"),
            (lambda b: b + b"\x00", "the passphrase is wrong or the key was tampered with"),
            (lambda b: b[:HEADER_SIZE] + os.urandom(len(b) - HEADER_SIZE), "the passphrase is wrong"),
        ],
        ids=[
            "empty", "magic-only", "header-only", "bad-magic", "der-prefix", "random", "pem",
            "n-9", "n-23", "n-255", "r-0", "r-33", "p-0", "p-17",
            "one-byte-body", "truncated", "extended", "garbage-body",
        ],
    )
    def test_corrupt(self, module_vault: KeyVault, sealed: bytes, make, fragment: str) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(KeyStoreError) as info:
            module_vault.open(make(sealed), label=LABEL)
        assert fragment in str(info.value)

    def test_unsupported_key_type_inside(self, module_vault: KeyVault) -> None:
        blob = module_vault.seal(ed25519.Ed25519PrivateKey.generate(), label=LABEL)  # type: ignore[arg-type]
        with pytest.raises(KeyStoreError, match=f"key {LABEL!r} is of an unsupported type") as info:
            module_vault.open(blob, label=LABEL)
        assert not isinstance(info.value, WrongPassphrase)

    @pytest.mark.parametrize("n_log2", [0, 9, 19, 23, 30])
    def test_scrypt_cost_bounds(self, n_log2: int) -> None:
        with pytest.raises(ConfigurationError, match=rf"scrypt cost 2\^{n_log2} is outside 2\^10..2\^18"):
            KeyVault(Passphrase(SECRET), scrypt_n_log2=n_log2)

    def test_never_shows_the_passphrase(self, module_vault: KeyVault) -> None:
        for text in (repr(module_vault), str(module_vault), f"{module_vault}"):
            assert SECRET not in text
            assert "horse" not in text
        assert repr(module_vault) == f"KeyVault(scrypt_n=2^{N_LOG2})"


class TestCheckPublicKey:
    @pytest.mark.parametrize("key_type", list(KeyType), ids=str)
    def test_accepts(self, keys: dict[KeyType, PrivateKey], key_type: KeyType) -> None:
        key = keys[key_type]
        assert check_public_key(key.public_key()) is key_type
        assert key_type_of(key) is key_type
        assert key_type_of(key.public_key()) is key_type

    @pytest.mark.parametrize(
        ("bits", "expected"),
        [(2048, KeyType.RSA2048), (2560, KeyType.RSA2048), (3072, KeyType.RSA3072),
         (3584, KeyType.RSA3072), (4096, KeyType.RSA4096), (8192, KeyType.RSA4096)],
    )
    def test_rsa_sizes_map_to_the_nearest_floor(self, bits: int, expected: KeyType) -> None:
        assert check_public_key(_rsa_public(bits)) is expected

    def test_refuses_rsa_1024(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        with pytest.raises(WeakKey, match="RSA key of 1024 bits is too small: at least 2048 bits are required"):
            check_public_key(key.public_key())
        with pytest.raises(WeakKey, match="1024 bits is too small"):
            key_type_of(key)

    @pytest.mark.parametrize("bits", [2047, 1536, 512])
    def test_refuses_small_rsa(self, bits: int) -> None:
        with pytest.raises(WeakKey, match=f"RSA key of {bits} bits is too small"):
            check_public_key(_rsa_public(bits))

    def test_refuses_huge_rsa(self) -> None:
        with pytest.raises(WeakKey, match="RSA key of 8200 bits is larger than the 8192 bits"):
            check_public_key(_rsa_public(8200))

    @pytest.mark.parametrize("e", [3, 17, 257, 65535])
    def test_refuses_small_exponent(self, keys: dict[KeyType, PrivateKey], e: int) -> None:
        n = keys[KeyType.RSA2048].public_key().public_numbers().n  # type: ignore[union-attr]
        key = rsa.RSAPublicNumbers(e, n).public_key()
        with pytest.raises(WeakKey, match=f"RSA public exponent {e} is refused: it must be odd and at least 65537"):
            check_public_key(key)

    def test_accepts_larger_odd_exponent(self, keys: dict[KeyType, PrivateKey]) -> None:
        n = keys[KeyType.RSA2048].public_key().public_numbers().n  # type: ignore[union-attr]
        assert check_public_key(rsa.RSAPublicNumbers(65539, n).public_key()) is KeyType.RSA2048

    @pytest.mark.parametrize(
        ("curve", "name"),
        [(ec.SECP256K1(), "secp256k1"), (ec.SECP521R1(), "secp521r1"), (ec.SECP224R1(), "secp224r1"),
         (ec.BrainpoolP256R1(), "brainpoolP256r1")],
    )
    def test_refuses_other_curves(self, curve: ec.EllipticCurve, name: str) -> None:
        key = ec.generate_private_key(curve)
        with pytest.raises(WeakKey, match=f"elliptic curve {name} is not accepted: use P-256 or P-384"):
            check_public_key(key.public_key())
        with pytest.raises(WeakKey, match=f"elliptic curve {name}"):
            key_type_of(key)

    @pytest.mark.parametrize(
        ("key", "type_name"),
        [
            (ed25519.Ed25519PrivateKey.generate().public_key(), "Ed25519PublicKey"),
            (ed448.Ed448PrivateKey.generate().public_key(), "Ed448PublicKey"),
            (ed25519.Ed25519PrivateKey.generate(), "Ed25519PrivateKey"),
            (b"not a key", "bytes"),
            (None, "NoneType"),
        ],
        ids=["ed25519", "ed448", "ed25519-private", "bytes", "none"],
    )
    def test_refuses_other_key_types(self, key: object, type_name: str) -> None:
        with pytest.raises(WeakKey) as info:
            check_public_key(key)
        assert f"public key type {type_name} is not accepted" in str(info.value)
        assert info.value.code == "weak-key"

    def test_key_type_of_refuses_ed25519(self) -> None:
        with pytest.raises(WeakKey, match="is not accepted: use RSA or ECDSA P-256/P-384"):
            key_type_of(ed25519.Ed25519PrivateKey.generate())  # type: ignore[arg-type]


class TestSignatureHash:
    @pytest.mark.parametrize(
        ("key_type", "expected"),
        [
            (KeyType.RSA2048, hashes.SHA256),
            (KeyType.RSA3072, hashes.SHA256),
            (KeyType.RSA4096, hashes.SHA256),
            (KeyType.EC_P256, hashes.SHA256),
            (KeyType.EC_P384, hashes.SHA384),
        ],
    )
    def test_hash(self, keys: dict[KeyType, PrivateKey], key_type: KeyType, expected: type) -> None:
        key = keys[key_type]
        for k in (key, key.public_key()):
            algorithm = signature_hash_for(k)  # type: ignore[arg-type]
            assert type(algorithm) is expected


class TestGenerate:
    @pytest.mark.parametrize(
        ("key_type", "size"), [(KeyType.RSA2048, 2048), (KeyType.RSA3072, 3072), (KeyType.RSA4096, 4096)]
    )
    def test_rsa(self, keys: dict[KeyType, PrivateKey], key_type: KeyType, size: int) -> None:
        key = keys[key_type]
        assert isinstance(key, rsa.RSAPrivateKey)
        assert key.key_size == size
        assert key.public_key().public_numbers().e == 65537

    @pytest.mark.parametrize(
        ("key_type", "curve", "size"),
        [(KeyType.EC_P256, ec.SECP256R1, 256), (KeyType.EC_P384, ec.SECP384R1, 384)],
    )
    def test_ec(self, keys: dict[KeyType, PrivateKey], key_type: KeyType, curve: type, size: int) -> None:
        key = keys[key_type]
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert type(key.curve) is curve
        assert key.key_size == size

    def test_fresh_every_time(self) -> None:
        a = generate_private_key(KeyType.EC_P256)
        b = generate_private_key(KeyType.EC_P256)
        assert a.private_numbers().private_value != b.private_numbers().private_value  # type: ignore[union-attr]
