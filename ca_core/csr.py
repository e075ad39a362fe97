"""PKCS#10 certificate requests: parsing and the checks made before issuing (sans-IO).

A CSR is proof that the applicant holds the private key (its self-signature); the
subject it carries is checked against the citizen profile. Extensions requested in
the CSR are ignored: the profile, not the applicant, decides what is written.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .errors import BadCSR
from .keystore import PublicKey, check_public_key
from .model import KeyType
from .profiles import HolderSubject

__all__ = ["MAX_CSR_BYTES", "CheckedCSR", "load_csr"]

MAX_CSR_BYTES = 64 * 1024
_ACCEPTED_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)


class CheckedCSR:
    """A CSR whose signature, signature algorithm and public key passed the checks."""

    __slots__ = ("csr", "key_type", "public_key")

    def __init__(self, csr: x509.CertificateSigningRequest, public_key: PublicKey, key_type: KeyType) -> None:
        self.csr = csr
        self.public_key = public_key
        self.key_type = key_type

    def subject(self, *, email: str | None = None) -> HolderSubject:
        """The holder subject from the CSR, checked against the citizen profile."""
        return HolderSubject.from_x509_name(self.csr.subject, email=email)


def load_csr(data: bytes | str) -> CheckedCSR:
    """Parse a PEM or DER CSR and check it; raises :class:`BadCSR` or :class:`WeakKey`."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)
    if not raw.strip():
        raise BadCSR("the CSR is empty")
    if len(raw) > MAX_CSR_BYTES:
        raise BadCSR(f"the CSR is {len(raw)} bytes; at most {MAX_CSR_BYTES} are accepted")
    try:
        if raw.lstrip().startswith(b"-----"):
            csr = x509.load_pem_x509_csr(raw)
        else:
            csr = x509.load_der_x509_csr(raw)
    except ValueError as e:
        raise BadCSR(f"the CSR cannot be parsed as PEM or DER PKCS#10: {e}") from None

    try:
        public_key = csr.public_key()
    except Exception as e:  # noqa: BLE001 - any parse failure of the key is a bad CSR
        raise BadCSR(f"the CSR's public key cannot be read: {e}") from None
    key_type = check_public_key(public_key)

    try:
        algorithm = csr.signature_hash_algorithm
    except Exception:  # UnsupportedAlgorithm for exotic OIDs
        raise BadCSR("the CSR is signed with an algorithm this CA does not support") from None
    if not isinstance(algorithm, _ACCEPTED_HASHES):
        name = algorithm.name if algorithm is not None else "none"
        raise BadCSR(f"the CSR is signed with {name}; use SHA-256, SHA-384 or SHA-512")

    try:
        valid = csr.is_signature_valid
    except Exception:  # noqa: BLE001 - malformed signature encodings raise here
        valid = False
    if not valid:
        raise BadCSR("the CSR's signature does not verify: it does not prove possession of the private key")
    assert isinstance(public_key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey))  # check_public_key saw to it
    return CheckedCSR(csr, public_key, key_type)
