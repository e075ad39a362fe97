"""Profiles and the values checked against them: holder subjects, public URLs, slugs, key usage."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from ca_core.errors import BadSubject, ConfigurationError, ValidationError
from ca_core.profiles import (
    CITIZEN_ENCRYPTION,
    CITIZEN_SIGNING,
    DEFAULT_POLICY_OID,
    END_ENTITY_PROFILES,
    EndEntityProfile,
    HolderSubject,
    PublicURLs,
    get_profile,
    subject_text,
    validate_issuer_slug,
)

HOLDER_ID = "0000000111729553"


class TestHolderSubject:
    @pytest.mark.parametrize(
        ("name", "holder_id", "email", "expected"),
        [
            ("王小明", HOLDER_ID, None, ("王小明", HOLDER_ID, None)),
            ("  王小明\n", f" {HOLDER_ID}\n", None, ("王小明", HOLDER_ID, None)),
            ("Wang Hsiao-Ming", "1234567890123456", None, ("Wang Hsiao-Ming", "1234567890123456", None)),
            ("e\u0301", HOLDER_ID, None, ("\u00e9", HOLDER_ID, None)),  # NFC-normalised
            ("a" * 64, HOLDER_ID, None, ("a" * 64, HOLDER_ID, None)),
            ("王小明", HOLDER_ID, "xiaoming@example.tw", ("王小明", HOLDER_ID, "xiaoming@example.tw")),
            ("王小明", HOLDER_ID, " first.last+tag@mail.example.com.tw ",
             ("王小明", HOLDER_ID, "first.last+tag@mail.example.com.tw")),
            ("王小明", HOLDER_ID, "o'brien@example-1.org", ("王小明", HOLDER_ID, "o'brien@example-1.org")),
            ("王小明", HOLDER_ID, "", ("王小明", HOLDER_ID, None)),
            ("王小明", HOLDER_ID, "   ", ("王小明", HOLDER_ID, None)),
        ],
        ids=["chinese", "stripped", "latin", "nfc", "64-chars", "email", "email-stripped", "email-apostrophe",
             "empty-email", "blank-email"],
    )
    def test_valid(self, name: str, holder_id: str, email: str | None, expected: tuple[str, str, str | None]) -> None:
        subject = HolderSubject(name, holder_id, email)
        assert (subject.name, subject.holder_id, subject.email) == expected

    @pytest.mark.parametrize(
        ("name", "fragment"),
        [
            ("", "the holder name (CN) is empty"),
            ("   ", "the holder name (CN) is empty"),
            ("\u3000\t\n", "the holder name (CN) is empty"),
            (None, "the holder name (CN) is empty"),
            ("名" * 65, "the holder name is 65 characters (195 bytes of UTF-8); CN allows at most 64 bytes"),
            ("a" * 100, "the holder name is 100 characters (100 bytes of UTF-8); CN allows at most 64 bytes"),
            ("王\x00明", "the holder name contains control or format characters"),
            ("王\t明", "the holder name contains control or format characters"),
            ("王\x7f明", "the holder name contains control or format characters"),
            ("王\u200b明", "the holder name contains control or format characters"),  # zero-width space
            ("王\u202e明", "the holder name contains control or format characters"),  # right-to-left override
            ("王\u2028明", "the holder name contains control or format characters"),  # line separator
        ],
        ids=["empty", "spaces", "unicode-whitespace", "none", "65-chars", "100-chars", "nul", "tab", "del",
             "zwsp", "rlo", "line-separator"],
    )
    def test_bad_name(self, name: str, fragment: str) -> None:
        with pytest.raises(BadSubject) as info:
            HolderSubject(name, HOLDER_ID)
        assert fragment in str(info.value)

    @pytest.mark.parametrize(
        "holder_id",
        [
            "",
            "000000011172955",  # 15 digits
            "00000001117295530",  # 17 digits
            "A000000111729553",
            "000000011172955X",
            "0000-0001-1172-9553",
            "０" * 16,  # full-width digits
            "٠" * 16,  # Arabic-Indic digits
            "0000000 111729553",
        ],
        ids=["empty", "15", "17", "leading-letter", "trailing-letter", "dashes", "fullwidth", "arabic-indic",
             "inner-space"],
    )
    def test_bad_holder_id(self, holder_id: str) -> None:
        with pytest.raises(BadSubject) as info:
            HolderSubject("王小明", holder_id)
        assert f"holder number {holder_id!r} must be exactly 16 ASCII digits" in str(info.value)

    @pytest.mark.parametrize(
        "email",
        [
            "no-at-sign",
            "a@b",  # no dot in the domain
            "@example.tw",
            "a@@example.tw",
            "a b@example.tw",
            "a@-example.tw",
            "a@example-.tw",
            "a@example..tw",
            "a" * 65 + "@example.tw",
            "王@example.tw",
            "wang@例子.tw",
            "wang@example.tw\nBcc: x@example.tw",
            "a@" + ".".join(["b" * 60] * 5),  # every part valid, but longer than 254
        ],
        ids=["no-at", "no-dot", "no-local", "double-at", "space", "leading-hyphen", "trailing-hyphen",
             "empty-label", "long-local", "non-ascii-local", "non-ascii-domain", "header-injection", "too-long"],
    )
    def test_bad_email(self, email: str) -> None:
        with pytest.raises(BadSubject) as info:
            HolderSubject("王小明", HOLDER_ID, email)
        assert f"e-mail address {email!r} is not a plain ASCII address" in str(info.value)

    def test_frozen(self) -> None:
        subject = HolderSubject("王小明", HOLDER_ID)
        with pytest.raises(AttributeError):
            subject.name = "王大明"  # type: ignore[misc]

    def test_x509_name_order_and_encoding(self) -> None:
        name = HolderSubject("王小明", HOLDER_ID).x509_name()
        assert [[(a.oid, a.value) for a in rdn] for rdn in name.rdns] == [
            [(NameOID.COUNTRY_NAME, "TW")],
            [(NameOID.COMMON_NAME, "王小明")],
            [(NameOID.SERIAL_NUMBER, HOLDER_ID)],
        ]
        encoded = name.public_bytes()
        cn = "王小明".encode()
        # AttributeTypeAndValue: OID 2.5.4.3, then UTF8String (tag 0x0C).
        assert b"\x06\x03\x55\x04\x03\x0c" + bytes([len(cn)]) + cn in encoded
        # countryName and serialNumber are PrintableStrings (tag 0x13).
        assert b"\x06\x03\x55\x04\x06\x13\x02TW" in encoded
        assert b"\x06\x03\x55\x04\x05\x13\x10" + HOLDER_ID.encode() in encoded
        assert encoded.index(b"\x55\x04\x06") < encoded.index(b"\x55\x04\x03") < encoded.index(b"\x55\x04\x05")

    @pytest.mark.parametrize("holder_name", ["王小明", "Wang, Hsiao-Ming +1", "O'Brien = Wang"])
    def test_subject_text_parses_back(self, holder_name: str) -> None:
        name = HolderSubject(holder_name, HOLDER_ID).x509_name()
        reparsed = x509.Name.from_rfc4514_string(subject_text(name), {"serialNumber": NameOID.SERIAL_NUMBER})
        assert reparsed == name

    @pytest.mark.parametrize(
        "subject",
        [
            HolderSubject("王小明", HOLDER_ID),
            HolderSubject("Wang, Hsiao-Ming +1", "1234567890123456"),
            HolderSubject("a" * 64, HOLDER_ID),
            HolderSubject("名" * 21, HOLDER_ID),  # 63 UTF-8 bytes
            HolderSubject("王小明", HOLDER_ID, "xiaoming@example.tw"),
        ],
        ids=["chinese", "rfc4514-specials", "64-chars", "21-cjk-chars", "with-email"],
    )
    def test_from_x509_name_round_trip(self, subject: HolderSubject) -> None:
        assert HolderSubject.from_x509_name(subject.x509_name(), email=subject.email) == subject
        assert HolderSubject.from_x509_name(subject.x509_name()).email is None

    @pytest.mark.parametrize("length", [22, 64])
    def test_long_non_ascii_name_is_refused_or_encodable(self, length: int) -> None:
        # The CN limit is checked in characters, but cryptography's NameAttribute caps
        # CN at 64 UTF-8 *bytes*: a subject the constructor accepts must still give
        # a Name (otherwise issuing fails later with a bare ValueError).
        name = "名" * length
        try:
            subject = HolderSubject(name, HOLDER_ID)
        except BadSubject:
            return
        assert subject.x509_name().get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name

    def test_subject_text(self) -> None:
        text = subject_text(HolderSubject("王小明", HOLDER_ID).x509_name())
        assert text == "serialNumber=0000000111729553,CN=王小明,C=TW"
        assert "2.5.4.5" not in text

    def test_subject_text_escapes(self) -> None:
        text = subject_text(HolderSubject("Wang, Hsiao-Ming", HOLDER_ID).x509_name())
        assert text == r"serialNumber=0000000111729553,CN=Wang\, Hsiao-Ming,C=TW"


BASE = "http://status.example.test"


class TestPublicURLs:
    @pytest.mark.parametrize(
        ("base", "expected"),
        [
            (BASE, BASE),
            (BASE + "/", BASE),
            (BASE + "///", BASE),
            ("https://pki.example.tw/status/", "https://pki.example.tw/status"),
            ("https://pki.example.tw:8443", "https://pki.example.tw:8443"),
            ("http://192.0.2.10:8080/", "http://192.0.2.10:8080"),
        ],
    )
    def test_base(self, base: str, expected: str) -> None:
        assert PublicURLs(base).base == expected

    def test_builders(self) -> None:
        urls = PublicURLs(BASE + "/")
        assert urls.ocsp == "http://status.example.test/ocsp"
        assert urls.ca_certificate("moica") == "http://status.example.test/ca/moica.crt"
        assert urls.full_crl("moica") == "http://status.example.test/crl/moica.crl"
        assert urls.partition_crl("moica", 0) == "http://status.example.test/crl/moica/0.crl"
        assert urls.partition_crl("gca", 15) == "http://status.example.test/crl/gca/15.crl"
        assert urls.delta_crl("moica") == "http://status.example.test/crl/moica/delta.crl"
        assert urls.delta_crl("moica", 7) == "http://status.example.test/crl/moica/7/delta.crl"

    def test_builders_under_a_path(self) -> None:
        urls = PublicURLs("https://pki.example.tw/status/")
        assert urls.ocsp == "https://pki.example.tw/status/ocsp"
        assert urls.full_crl("gca") == "https://pki.example.tw/status/crl/gca.crl"
        assert urls.partition_crl("gca", 3) == "https://pki.example.tw/status/crl/gca/3.crl"

    def test_issuer_is_quoted(self) -> None:
        urls = PublicURLs(BASE)
        assert urls.ca_certificate("a b") == "http://status.example.test/ca/a%20b.crt"
        assert urls.full_crl("a?b") == "http://status.example.test/crl/a%3Fb.crl"

    @pytest.mark.parametrize(
        ("base", "fragment"),
        [
            ("", "must be an absolute http:// or https:// URL"),
            ("status.example.test", "must be an absolute http:// or https:// URL"),
            ("/ocsp", "must be an absolute http:// or https:// URL"),
            ("//status.example.test", "must be an absolute http:// or https:// URL"),
            ("ftp://status.example.test", "must be an absolute http:// or https:// URL"),
            ("ldap://status.example.test", "must be an absolute http:// or https:// URL"),
            ("file:///etc/passwd", "must be an absolute http:// or https:// URL"),
            ("mailto:ops@example.test", "must be an absolute http:// or https:// URL"),
            ("http://", "must be an absolute http:// or https:// URL"),
            ("http:///path", "must be an absolute http:// or https:// URL"),
            (BASE + "/?a=1", "must not have a query or fragment"),
            (BASE + "?x", "must not have a query or fragment"),
            (BASE + "/#top", "must not have a query or fragment"),
            # A trailing newline, as from a settings file: urlsplit drops it, but the
            # base kept is the raw string, so the newline would be written into every
            # certificate's AIA and CRL distribution point.
            (BASE + "\n", "public base URL"),
            (" " + BASE, "public base URL"),
            # An empty query: "http://h?" + "/ocsp" is "http://h?/ocsp".
            (BASE + "?", "public base URL"),
        ],
        ids=["empty", "no-scheme", "path-only", "scheme-relative", "ftp", "ldap", "file", "mailto", "no-host",
             "no-host-path", "query", "query-no-slash", "fragment", "trailing-newline", "leading-space",
             "empty-query"],
    )
    def test_refused(self, base: str, fragment: str) -> None:
        with pytest.raises(ConfigurationError) as info:
            PublicURLs(base)
        assert fragment in str(info.value)
        assert repr(base) in str(info.value)


class TestIssuerSlug:
    @pytest.mark.parametrize("slug", ["moica", "gca", "a", "moica-2", "x509", "a" + "-" * 30, "a" * 31])
    def test_valid(self, slug: str) -> None:
        assert validate_issuer_slug(slug) == slug

    @pytest.mark.parametrize(
        "slug",
        ["", "Moica", "MOICA", "1moica", "-moica", "mo_ica", "mo ica", "moica/", "../etc", "mo.ica", "moïca",
         "a" * 32, " moica", "moica ", "moica\n", "moica\t"],
        ids=["empty", "capital", "upper", "digit-first", "hyphen-first", "underscore", "space", "slash",
             "dotdot", "dot", "non-ascii", "32-chars", "leading-space", "trailing-space", "trailing-newline",
             "trailing-tab"],
    )
    def test_invalid(self, slug: str) -> None:
        with pytest.raises(ValidationError) as info:
            validate_issuer_slug(slug)
        message = str(info.value)
        assert f"issuer name {slug!r} is not valid" in message
        assert "use 1-31 lower-case letters, digits or '-', starting with a letter" in message


def _ku(**set_bits: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign")
    return x509.KeyUsage(**{n: set_bits.get(n, False) for n in names}, encipher_only=False, decipher_only=False)


class TestProfiles:
    @pytest.mark.parametrize(
        ("name", "profile"), [("citizen-signing", CITIZEN_SIGNING), ("citizen-encryption", CITIZEN_ENCRYPTION)]
    )
    def test_get_profile(self, name: str, profile: EndEntityProfile) -> None:
        assert get_profile(name) is profile
        assert profile.name == name
        assert END_ENTITY_PROFILES[name] is profile

    @pytest.mark.parametrize("name", ["", "citizen", "Citizen-Signing", "issuing-ca", "ocsp-signer", "citizen-signing "])
    def test_get_profile_unknown(self, name: str) -> None:
        with pytest.raises(ValidationError) as info:
            get_profile(name)
        message = str(info.value)
        assert f"unknown certificate profile {name!r}" in message
        assert "(valid: citizen-signing, citizen-encryption, admin-client)" in message

    def test_profiles_are_read_only(self) -> None:
        with pytest.raises(TypeError):
            END_ENTITY_PROFILES["x"] = CITIZEN_SIGNING  # type: ignore[index]

    @pytest.mark.parametrize(
        ("profile", "is_ec", "expected"),
        [
            (CITIZEN_SIGNING, False, _ku(digital_signature=True, content_commitment=True)),
            (CITIZEN_SIGNING, True, _ku(digital_signature=True, content_commitment=True)),
            (CITIZEN_ENCRYPTION, False, _ku(key_encipherment=True, data_encipherment=True)),
            (CITIZEN_ENCRYPTION, True, _ku(key_agreement=True)),
        ],
        ids=["signing-rsa", "signing-ec", "encryption-rsa", "encryption-ec"],
    )
    def test_key_usage(self, profile: EndEntityProfile, is_ec: bool, expected: x509.KeyUsage) -> None:
        usage = profile.key_usage(is_ec=is_ec)
        assert usage == expected
        assert not usage.key_cert_sign and not usage.crl_sign
        if usage.key_agreement:
            assert not usage.encipher_only and not usage.decipher_only

    @pytest.mark.parametrize("profile", [CITIZEN_SIGNING, CITIZEN_ENCRYPTION], ids=lambda p: p.name)
    def test_defaults(self, profile: EndEntityProfile) -> None:
        assert profile.validity == dt.timedelta(days=5 * 365 + 1)
        assert profile.policy_oids == (DEFAULT_POLICY_OID,) == ("2.16.886.101.0.3.3",)
