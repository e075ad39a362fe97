"""Config.load: defaults, environment, TOML file, overrides, and the errors it reports.

Every test passes an explicit ``env`` mapping, so nothing depends on the environment
the suite happens to run in.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from ca_core.errors import ConfigurationError
from ca_core.keystore import Passphrase
from ca_core.model import KeyType
from responder.config import SETTINGS, Config

PASSPHRASE = "correct horse battery staple"
DB_PASSWORD = "pg-s3cret-pw"
REDIS_PASSWORD = "valkey-s3cret-pw"
DATABASE_URL = f"postgresql://certstatus:{DB_PASSWORD}@db.internal:5432/certstatus"
REDIS_URL = f"redis://:{REDIS_PASSWORD}@cache.internal:6379/0"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# Defaults -------------------------------------------------------------------------------


def test_defaults_with_an_empty_environment() -> None:
    cfg = Config.load(env={})

    assert cfg.data_dir == Path(".certstatus")
    assert cfg.public_port == 8080
    assert cfg.admin_port == 8081
    assert cfg.public_host == "127.0.0.1"
    assert cfg.admin_host == "127.0.0.1"
    assert cfg.database_url is None
    assert cfg.redis_url is None
    assert cfg.key_passphrase is None
    assert cfg.key_passphrase_file is None
    assert cfg.log_level == "INFO"
    assert cfg.urls().base == "http://localhost:8080"
    assert cfg.uses_embedded is True
    assert cfg.passphrase() is None


def test_unrelated_environment_variables_are_ignored() -> None:
    cfg = Config.load(env={"HOME": "/nowhere", "PORT": "1", "CERTSTATUS_UNKNOWN": "x"})
    assert cfg == Config.load(env={})


def test_an_empty_variable_counts_as_unset() -> None:
    cfg = Config.load(env={"CERTSTATUS_PUBLIC_PORT": "", "DATABASE_URL": "", "CERTSTATUS_LOG_LEVEL": ""})
    assert cfg.public_port == 8080
    assert cfg.database_url is None
    assert cfg.log_level == "INFO"


# Every environment variable, parsed to its field's type ----------------------------------------

ENV_CASES: list[tuple[str, str, str, Any]] = [
    ("CERTSTATUS_DATA_DIR", "/srv/certstatus", "data_dir", Path("/srv/certstatus")),
    ("DATABASE_URL", DATABASE_URL, "database_url", DATABASE_URL),
    ("REDIS_URL", REDIS_URL, "redis_url", REDIS_URL),
    ("CERTSTATUS_PUBLIC_HOST", "0.0.0.0", "public_host", "0.0.0.0"),
    ("CERTSTATUS_PUBLIC_PORT", "9000", "public_port", 9000),
    ("CERTSTATUS_ADMIN_HOST", "10.0.0.5", "admin_host", "10.0.0.5"),
    ("CERTSTATUS_ADMIN_PORT", "9443", "admin_port", 9443),
    ("CERTSTATUS_ADMIN_TLS_CERT", "/etc/certstatus/admin.crt", "admin_tls_cert", Path("/etc/certstatus/admin.crt")),
    ("CERTSTATUS_ADMIN_TLS_KEY", "/etc/certstatus/admin.key", "admin_tls_key", Path("/etc/certstatus/admin.key")),
    ("CERTSTATUS_ADMIN_ALLOW_GENERATED_KEYS", "yes", "admin_allow_generated_keys", True),
    ("CERTSTATUS_PUBLIC_BASE_URL", "https://status.example.org", "public_base_url", "https://status.example.org"),
    ("CERTSTATUS_KEY_PASSPHRASE", PASSPHRASE, "key_passphrase", Passphrase(PASSPHRASE)),
    ("CERTSTATUS_KEY_PASSPHRASE_FILE", "/run/secrets/ca-pass", "key_passphrase_file", Path("/run/secrets/ca-pass")),
    ("CERTSTATUS_ORGANIZATION", "Ministry of the Interior", "organization", "Ministry of the Interior"),
    ("CERTSTATUS_ROOT_KEY_TYPE", "EC-P384", "root_key_type", KeyType.EC_P384),
    ("CERTSTATUS_ISSUER_KEY_TYPE", " rsa2048 ", "issuer_key_type", KeyType.RSA2048),
    ("CERTSTATUS_OCSP_KEY_TYPE", "rsa3072", "ocsp_key_type", KeyType.RSA3072),
    ("CERTSTATUS_CRL_PARTITIONS", "64", "crl_partitions", 64),
    ("CERTSTATUS_CERT_VALIDITY_DAYS", "365", "cert_validity_days", 365),
    ("CERTSTATUS_OCSP_SIGNER_VALIDITY_DAYS", "7", "ocsp_signer_validity_days", 7),
    ("CERTSTATUS_DB_POOL_SIZE", "25", "db_pool_size", 25),
    ("CERTSTATUS_LOG_LEVEL", "debug", "log_level", "DEBUG"),
    ("CERTSTATUS_WORKERS", "2", "workers", 2),
    ("CERTSTATUS_OCSP_VALIDITY_HOURS", "48", "ocsp_validity_hours", 48),
    ("CERTSTATUS_OCSP_NONCE", "sign", "ocsp_nonce", "sign"),
    ("CERTSTATUS_OCSP_UNKNOWN_SERIAL", "revoked", "ocsp_unknown_serial", "revoked"),
    ("CERTSTATUS_OCSP_LIVE_SIGNING_LIMIT", "4", "ocsp_live_signing_limit", 4),
    ("CERTSTATUS_OCSP_CACHE_ENTRIES", "1000", "ocsp_cache_entries", 1000),
    ("CERTSTATUS_SIGNER_BATCH_SIZE", "250", "signer_batch_size", 250),
    ("CERTSTATUS_CRL_INTERVAL_HOURS", "12", "crl_interval_hours", 12),
    ("CERTSTATUS_CRL_VALIDITY_HOURS", "72", "crl_validity_hours", 72),
    ("CERTSTATUS_CRL_DELTA_INTERVAL_SECONDS", "5", "crl_delta_interval_seconds", 5),
    ("CERTSTATUS_CRL_DELTA_VALIDITY_MINUTES", "30", "crl_delta_validity_minutes", 30),
    ("CERTSTATUS_CRL_EXPIRED_GRACE_DAYS", "30", "crl_expired_grace_days", 30),
    ("CERTSTATUS_CRL_STREAM_HISTORY", "100", "crl_stream_history", 100),
    ("CERTSTATUS_CRL_CACHE_MB", "16", "crl_cache_mb", 16),
]


def test_the_environment_table_covers_every_setting() -> None:
    assert {(env, field) for env, _, field, _ in ENV_CASES} == {(s.env, s.field) for s in SETTINGS}


@pytest.mark.parametrize(("variable", "text", "field", "expected"), ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_each_environment_variable_is_parsed_to_its_type(variable: str, text: str, field: str, expected: Any) -> None:
    cfg = Config.load(env={variable: text})

    value = getattr(cfg, field)
    assert value == expected
    assert type(value) is type(expected)


def test_paths_expand_the_home_directory() -> None:
    cfg = Config.load(env={"CERTSTATUS_DATA_DIR": "~/certstatus-data"})
    assert cfg.data_dir == Path.home() / "certstatus-data"


def test_uses_embedded_only_when_a_url_is_missing() -> None:
    assert Config.load(env={"DATABASE_URL": DATABASE_URL}).uses_embedded is True
    assert Config.load(env={"REDIS_URL": REDIS_URL}).uses_embedded is True
    assert Config.load(env={"DATABASE_URL": DATABASE_URL, "REDIS_URL": REDIS_URL}).uses_embedded is False


@pytest.mark.parametrize(
    ("env", "base", "ocsp"),
    [
        ({}, "http://localhost:8080", "http://localhost:8080/ocsp"),
        ({"CERTSTATUS_PUBLIC_PORT": "9000"}, "http://localhost:9000", "http://localhost:9000/ocsp"),
        (
            {"CERTSTATUS_PUBLIC_BASE_URL": "https://status.example.org/"},
            "https://status.example.org",
            "https://status.example.org/ocsp",
        ),
        (
            {"CERTSTATUS_PUBLIC_BASE_URL": "https://cdn.example.org/pki", "CERTSTATUS_PUBLIC_PORT": "9000"},
            "https://cdn.example.org/pki",
            "https://cdn.example.org/pki/ocsp",
        ),
    ],
    ids=["default", "port-only", "base-url-trailing-slash", "base-url-wins-over-port"],
)
def test_public_urls(env: dict[str, str], base: str, ocsp: str) -> None:
    urls = Config.load(env=env).urls()
    assert urls.base == base
    assert urls.ocsp == ocsp
    assert urls.ca_certificate("moica") == f"{base}/ca/moica.crt"


# TOML file ------------------------------------------------------------------------------

TOML_TEXT = """\
data_dir = "/var/lib/certstatus"
public_port = 9080
admin_port = 9081
organization = "From TOML"
root_key_type = "ec-p384"
crl_partitions = 8
log_level = "warning"
key_passphrase_file = "/run/secrets/pass"
"""


def assert_toml_values(cfg: Config) -> None:
    assert cfg.data_dir == Path("/var/lib/certstatus")
    assert cfg.public_port == 9080
    assert cfg.admin_port == 9081
    assert cfg.organization == "From TOML"
    assert cfg.root_key_type is KeyType.EC_P384
    assert cfg.crl_partitions == 8
    assert cfg.log_level == "WARNING"
    assert cfg.key_passphrase_file == Path("/run/secrets/pass")
    assert cfg.urls().base == "http://localhost:9080"


def test_toml_file_via_toml_path(tmp_path: Path) -> None:
    path = write(tmp_path / "certstatus.toml", TOML_TEXT)
    assert_toml_values(Config.load(env={}, toml_path=path))


def test_toml_file_via_certstatus_config(tmp_path: Path) -> None:
    path = write(tmp_path / "certstatus.toml", TOML_TEXT)
    assert_toml_values(Config.load(env={"CERTSTATUS_CONFIG": str(path)}))


def test_toml_path_wins_over_certstatus_config(tmp_path: Path) -> None:
    chosen = write(tmp_path / "chosen.toml", 'organization = "chosen"\n')
    ignored = write(tmp_path / "ignored.toml", 'organization = "ignored"\n')
    cfg = Config.load(env={"CERTSTATUS_CONFIG": str(ignored)}, toml_path=chosen)
    assert cfg.organization == "chosen"


def test_precedence_defaults_then_toml_then_env_then_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path / "certstatus.toml",
        'public_port = 9000\norganization = "toml"\nlog_level = "WARNING"\ndb_pool_size = 5\n',
    )
    env = {"CERTSTATUS_ORGANIZATION": "env", "CERTSTATUS_LOG_LEVEL": "ERROR", "CERTSTATUS_DB_POOL_SIZE": "7"}
    overrides = {"log_level": "DEBUG", "public_port": None, "admin_port": 9001}

    cfg = Config.load(env=env, toml_path=path, overrides=overrides)

    assert cfg.public_host == "127.0.0.1"  # default: nobody set it
    assert cfg.public_port == 9000  # TOML; a None override leaves it alone
    assert cfg.organization == "env"  # env beats TOML
    assert cfg.db_pool_size == 7  # env beats TOML
    assert cfg.log_level == "DEBUG"  # override beats env and TOML
    assert cfg.admin_port == 9001  # override beats the default


def test_overrides_are_coerced_like_everything_else() -> None:
    cfg = Config.load(
        env={}, overrides={"public_port": "9090", "data_dir": "/srv/certstatus", "ocsp_key_type": "EC-P384"}
    )
    assert cfg.public_port == 9090
    assert cfg.data_dir == Path("/srv/certstatus")
    assert cfg.ocsp_key_type is KeyType.EC_P384


# Errors ---------------------------------------------------------------------------------

ENV_ERRORS: list[tuple[str, dict[str, str], list[str]]] = [
    (
        "port-not-an-integer",
        {"CERTSTATUS_PUBLIC_PORT": "eighty"},
        ["CERTSTATUS_PUBLIC_PORT", "'eighty'", "must be an integer"],
    ),
    ("admin-port-not-an-integer", {"CERTSTATUS_ADMIN_PORT": "80.5"}, ["CERTSTATUS_ADMIN_PORT", "must be an integer"]),
    ("generated-keys-not-a-switch", {"CERTSTATUS_ADMIN_ALLOW_GENERATED_KEYS": "maybe"},
     ["CERTSTATUS_ADMIN_ALLOW_GENERATED_KEYS='maybe'", "must be on or off"]),
    ("port-zero", {"CERTSTATUS_PUBLIC_PORT": "0"}, ["CERTSTATUS_PUBLIC_PORT=0", "between 1 and 65535"]),
    (
        "crl-validity-not-longer-than-interval",
        {"CERTSTATUS_CRL_VALIDITY_HOURS": "24"},
        ["CERTSTATUS_CRL_VALIDITY_HOURS=24", "longer than CERTSTATUS_CRL_INTERVAL_HOURS"],
    ),
    (
        "crl-delta-validity-not-longer-than-interval",
        {"CERTSTATUS_CRL_DELTA_INTERVAL_SECONDS": "3600"},
        ["CERTSTATUS_CRL_DELTA_VALIDITY_MINUTES=60", "longer than CERTSTATUS_CRL_DELTA_INTERVAL_SECONDS"],
    ),
    (
        "crl-delta-interval-zero",
        {"CERTSTATUS_CRL_DELTA_INTERVAL_SECONDS": "0"},
        ["CERTSTATUS_CRL_DELTA_INTERVAL_SECONDS=0", "between 1 and 86400"],
    ),
    (
        "crl-grace-below-one-interval",
        {
            "CERTSTATUS_CRL_INTERVAL_HOURS": "48",
            "CERTSTATUS_CRL_VALIDITY_HOURS": "96",
            "CERTSTATUS_CRL_EXPIRED_GRACE_DAYS": "1",
        },
        ["CERTSTATUS_CRL_EXPIRED_GRACE_DAYS=1", "RFC 5280 5.1.2.6"],
    ),
    (
        "crl-stream-history-zero",
        {"CERTSTATUS_CRL_STREAM_HISTORY": "0"},
        ["CERTSTATUS_CRL_STREAM_HISTORY=0", "between 1"],
    ),
    ("crl-cache-negative", {"CERTSTATUS_CRL_CACHE_MB": "-1"}, ["CERTSTATUS_CRL_CACHE_MB=-1", "between 0"]),
    ("port-too-high", {"CERTSTATUS_PUBLIC_PORT": "70000"}, ["CERTSTATUS_PUBLIC_PORT=70000", "between 1 and 65535"]),
    ("admin-port-too-high", {"CERTSTATUS_ADMIN_PORT": "70000"}, ["CERTSTATUS_ADMIN_PORT=70000", "between 1 and 65535"]),
    (
        "admin-port-equals-public-port",
        {"CERTSTATUS_PUBLIC_PORT": "9000", "CERTSTATUS_ADMIN_PORT": "9000"},
        ["CERTSTATUS_ADMIN_PORT=9000", "never share the public port"],
    ),
    (
        "public-port-onto-default-admin-port",
        {"CERTSTATUS_PUBLIC_PORT": "8081"},
        ["CERTSTATUS_ADMIN_PORT=8081", "never share the public port"],
    ),
    (
        "bad-log-level",
        {"CERTSTATUS_LOG_LEVEL": "verbose"},
        ["CERTSTATUS_LOG_LEVEL", "VERBOSE", "must be one of DEBUG, INFO, WARNING, ERROR"],
    ),
    (
        "bad-root-key-type",
        {"CERTSTATUS_ROOT_KEY_TYPE": "dsa1024"},
        ["CERTSTATUS_ROOT_KEY_TYPE", "'dsa1024'", "must be one of", "ec-p256"],
    ),
    (
        "bad-issuer-key-type",
        {"CERTSTATUS_ISSUER_KEY_TYPE": "rsa1024"},
        ["CERTSTATUS_ISSUER_KEY_TYPE", "must be one of", "rsa3072"],
    ),
    ("bad-ocsp-key-type", {"CERTSTATUS_OCSP_KEY_TYPE": "ed25519"}, ["CERTSTATUS_OCSP_KEY_TYPE", "must be one of"]),
    ("crl-partitions-zero", {"CERTSTATUS_CRL_PARTITIONS": "0"}, ["CERTSTATUS_CRL_PARTITIONS=0", "between 1 and 4096"]),
    ("pool-size-too-big", {"CERTSTATUS_DB_POOL_SIZE": "501"}, ["CERTSTATUS_DB_POOL_SIZE=501", "between 1 and 500"]),
    (
        "validity-zero",
        {"CERTSTATUS_CERT_VALIDITY_DAYS": "0"},
        ["CERTSTATUS_CERT_VALIDITY_DAYS=0", "between 1 and 7320"],
    ),
    (
        "ocsp-validity-too-long",
        {"CERTSTATUS_OCSP_SIGNER_VALIDITY_DAYS": "400"},
        ["CERTSTATUS_OCSP_SIGNER_VALIDITY_DAYS=400", "between 1 and 366"],
    ),
    ("empty-host", {"CERTSTATUS_PUBLIC_HOST": "   "}, ["CERTSTATUS_PUBLIC_HOST", "must not be empty"]),
    ("workers-zero", {"CERTSTATUS_WORKERS": "0"}, ["CERTSTATUS_WORKERS=0", "between 1 and 64"]),
    (
        "ocsp-validity-hours-too-long",
        {"CERTSTATUS_OCSP_VALIDITY_HOURS": "241"},
        ["CERTSTATUS_OCSP_VALIDITY_HOURS=241", "10 days"],
    ),
    ("bad-nonce-mode", {"CERTSTATUS_OCSP_NONCE": "maybe"}, ["CERTSTATUS_OCSP_NONCE", "'ignore' or 'sign'"]),
    (
        "bad-unknown-serial",
        {"CERTSTATUS_OCSP_UNKNOWN_SERIAL": "good"},
        ["CERTSTATUS_OCSP_UNKNOWN_SERIAL", "'unauthorized' or 'revoked'"],
    ),
    (
        "negative-live-limit",
        {"CERTSTATUS_OCSP_LIVE_SIGNING_LIMIT": "-1"},
        ["CERTSTATUS_OCSP_LIVE_SIGNING_LIMIT=-1", "between 0 and 1024"],
    ),
    ("batch-zero", {"CERTSTATUS_SIGNER_BATCH_SIZE": "0"}, ["CERTSTATUS_SIGNER_BATCH_SIZE=0", "between 1 and 10000"]),
    ("redis-bad-scheme", {"REDIS_URL": "http://cache.internal:6379"}, ["REDIS_URL", "redis://, rediss:// or unix://"]),
    (
        "both-passphrase-sources",
        {"CERTSTATUS_KEY_PASSPHRASE": PASSPHRASE, "CERTSTATUS_KEY_PASSPHRASE_FILE": "/run/secrets/pass"},
        ["CERTSTATUS_KEY_PASSPHRASE", "CERTSTATUS_KEY_PASSPHRASE_FILE", "not both"],
    ),
    (
        "passphrase-too-short",
        {"CERTSTATUS_KEY_PASSPHRASE": "short-pass"},
        ["CERTSTATUS_KEY_PASSPHRASE", "too short", "at least 12"],
    ),
]


@pytest.mark.parametrize(("env", "fragments"), [c[1:] for c in ENV_ERRORS], ids=[c[0] for c in ENV_ERRORS])
def test_bad_environment_is_a_configuration_error_naming_the_variable(
    env: dict[str, str], fragments: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as info:
        Config.load(env=env)

    message = str(info.value)
    assert info.value.message == message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://status.example.org", "must be an absolute http:// or https:// URL"),
        ("status.example.org", "must be an absolute http:// or https:// URL"),
        ("https://status.example.org/?x=1", "must not have a query or fragment"),
        ("https://status.example.org/#top", "must not have a query or fragment"),
    ],
    ids=["ftp", "relative", "query", "fragment"],
)
def test_bad_public_base_url_names_the_variable(url: str, why: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Config.load(env={"CERTSTATUS_PUBLIC_BASE_URL": url})

    message = str(info.value)
    assert why in message
    assert url in message
    # Like every other setting, the error must name the variable the operator set.
    assert "CERTSTATUS_PUBLIC_BASE_URL" in message


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://certstatus:{DB_PASSWORD}@db.internal/certstatus",
        f"https://certstatus:{DB_PASSWORD}@db.internal/certstatus",
        f"{DB_PASSWORD}@db.internal",
    ],
    ids=["mysql", "https", "no-scheme"],
)
def test_database_url_must_be_postgresql_and_is_never_echoed(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Config.load(env={"DATABASE_URL": url})

    message = str(info.value)
    assert "DATABASE_URL" in message
    assert "postgresql://" in message
    assert DB_PASSWORD not in message
    assert url not in message
    assert "db.internal" not in message


@pytest.mark.parametrize("url", [DATABASE_URL, DATABASE_URL.replace("postgresql://", "postgres://")])
def test_database_url_accepts_both_postgres_schemes(url: str) -> None:
    assert Config.load(env={"DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize("url", [REDIS_URL, "rediss://cache.internal:6380/0", "unix:///run/valkey/valkey.sock"])
def test_redis_url_accepts_its_schemes(url: str) -> None:
    assert Config.load(env={"REDIS_URL": url}).redis_url == url


def test_redis_url_with_bad_scheme_is_never_echoed() -> None:
    url = f"memcached://:{REDIS_PASSWORD}@cache.internal:11211"
    with pytest.raises(ConfigurationError) as info:
        Config.load(env={"REDIS_URL": url})
    assert "REDIS_URL" in str(info.value)
    assert REDIS_PASSWORD not in str(info.value)


def test_short_passphrase_is_not_echoed() -> None:
    with pytest.raises(ConfigurationError) as info:
        Config.load(env={"CERTSTATUS_KEY_PASSPHRASE": "hunter2-abc"})
    assert "CERTSTATUS_KEY_PASSPHRASE" in str(info.value)
    assert "hunter2" not in str(info.value)


TOML_ERRORS: list[tuple[str, str, list[str]]] = [
    (
        "unknown-key",
        "public_port = 9000\nlisten_port = 80\nfancy = true\n",
        ["unknown settings", "'fancy'", "'listen_port'", "known:", "public_port"],
    ),
    (
        "key-passphrase-refused",
        f'key_passphrase = "{PASSPHRASE}"\n',
        ["key_passphrase", "keep secrets out of config files", "CERTSTATUS_KEY_PASSPHRASE"],
    ),
    ("invalid-syntax", "public_port = = 9000\n", ["not valid TOML", "line 1"]),
    ("unterminated-string", 'organization = "oops\n', ["not valid TOML"]),
    ("port-not-an-integer", 'public_port = "eighty"\n', ["CERTSTATUS_PUBLIC_PORT", "'eighty'", "must be an integer"]),
    ("port-is-a-boolean", "public_port = true\n", ["CERTSTATUS_PUBLIC_PORT", "must be an integer"]),
    ("host-is-a-number", "public_host = 5\n", ["CERTSTATUS_PUBLIC_HOST", "must be a string"]),
    ("port-out-of-range", "admin_port = 70000\n", ["CERTSTATUS_ADMIN_PORT=70000", "between 1 and 65535"]),
    ("bad-key-type", 'issuer_key_type = "rsa1024"\n', ["CERTSTATUS_ISSUER_KEY_TYPE", "must be one of"]),
]


@pytest.mark.parametrize(("text", "fragments"), [c[1:] for c in TOML_ERRORS], ids=[c[0] for c in TOML_ERRORS])
def test_bad_toml_file_is_a_configuration_error(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = write(tmp_path / "certstatus.toml", text)
    with pytest.raises(ConfigurationError) as info:
        Config.load(env={}, toml_path=path)

    message = str(info.value)
    for fragment in fragments:
        assert fragment in message


def test_toml_key_passphrase_is_never_echoed(tmp_path: Path) -> None:
    path = write(tmp_path / "certstatus.toml", f'key_passphrase = "{PASSPHRASE}"\n')
    with pytest.raises(ConfigurationError) as info:
        Config.load(env={}, toml_path=path)
    assert str(path) in str(info.value)
    assert PASSPHRASE not in str(info.value)


def test_toml_secret_of_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path / "certstatus.toml", "database_url = 5432\n")
    with pytest.raises(ConfigurationError) as info:
        Config.load(env={}, toml_path=path)
    assert "DATABASE_URL=(hidden)" in str(info.value)
    assert "5432" not in str(info.value)


@pytest.mark.parametrize("via", ["toml_path", "CERTSTATUS_CONFIG"])
def test_missing_toml_file(tmp_path: Path, via: str) -> None:
    path = tmp_path / "does-not-exist.toml"
    with pytest.raises(ConfigurationError) as info:
        if via == "toml_path":
            Config.load(env={}, toml_path=path)
        else:
            Config.load(env={"CERTSTATUS_CONFIG": str(path)})
    message = str(info.value)
    assert "cannot read the config file" in message
    assert str(path) in message
    assert "No such file or directory" in message


def test_toml_file_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the config file"):
        Config.load(env={}, toml_path=tmp_path)


# Passphrase -----------------------------------------------------------------------------


def test_passphrase_is_read_from_the_file(tmp_path: Path) -> None:
    secret = write(tmp_path / "pass", PASSPHRASE + "\n")
    cfg = Config.load(env={"CERTSTATUS_KEY_PASSPHRASE_FILE": str(secret)})

    passphrase = cfg.passphrase()
    assert isinstance(passphrase, Passphrase)
    assert passphrase.reveal() == PASSPHRASE.encode()  # trailing newline dropped
    assert passphrase == Passphrase(PASSPHRASE)


def test_passphrase_file_is_read_when_asked_not_at_load(tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    cfg = Config.load(env={"CERTSTATUS_KEY_PASSPHRASE_FILE": str(secret)})
    write(secret, "first passphrase value")
    assert cfg.passphrase() == Passphrase("first passphrase value")
    write(secret, "second passphrase value")
    assert cfg.passphrase() == Passphrase("second passphrase value")


def test_passphrase_from_the_variable() -> None:
    cfg = Config.load(env={"CERTSTATUS_KEY_PASSPHRASE": PASSPHRASE})
    assert cfg.passphrase() == Passphrase(PASSPHRASE)


def test_missing_passphrase_file(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    cfg = Config.load(env={"CERTSTATUS_KEY_PASSPHRASE_FILE": str(path)})
    with pytest.raises(ConfigurationError) as info:
        cfg.passphrase()
    assert "cannot read the key passphrase file" in str(info.value)
    assert str(path) in str(info.value)


def test_short_passphrase_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "pass", "too-short\n")
    cfg = Config.load(env={"CERTSTATUS_KEY_PASSPHRASE_FILE": str(path)})
    with pytest.raises(ConfigurationError, match="too short: use at least 12 characters"):
        cfg.passphrase()


# Secrets never shown --------------------------------------------------------------------


@pytest.fixture
def secret_config() -> Config:
    return Config.load(
        env={"DATABASE_URL": DATABASE_URL, "REDIS_URL": REDIS_URL, "CERTSTATUS_KEY_PASSPHRASE": PASSPHRASE}
    )


SECRETS = [PASSPHRASE, DATABASE_URL, REDIS_URL, DB_PASSWORD, REDIS_PASSWORD, "db.internal", "cache.internal"]


def test_redacted_hides_secrets(secret_config: Config) -> None:
    shown = secret_config.redacted()

    assert set(shown) == {s.env for s in SETTINGS}
    assert shown["DATABASE_URL"] == "(set, hidden)"
    assert shown["REDIS_URL"] == "(set, hidden)"
    assert shown["CERTSTATUS_KEY_PASSPHRASE"] == "(set, hidden)"
    assert shown["CERTSTATUS_KEY_PASSPHRASE_FILE"] == "(unset)"
    assert shown["CERTSTATUS_PUBLIC_PORT"] == "8080"
    assert shown["CERTSTATUS_ROOT_KEY_TYPE"] == "rsa4096"
    text = repr(shown)
    for secret in SECRETS:
        assert secret not in text


def test_redacted_shows_unset_secrets_as_unset() -> None:
    shown = Config.load(env={}).redacted()
    assert shown["DATABASE_URL"] == "(unset)"
    assert shown["CERTSTATUS_KEY_PASSPHRASE"] == "(unset)"
    assert shown["CERTSTATUS_DATA_DIR"] == ".certstatus"


@pytest.mark.parametrize("render", [repr, str], ids=["repr", "str"])
def test_config_repr_hides_secrets(secret_config: Config, render: Any) -> None:
    text = render(secret_config)
    assert "8080" in text  # it does show the non-secret settings
    for secret in SECRETS:
        assert secret not in text


# Frozen ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"), [("public_port", 1), ("database_url", "postgresql://x/y"), ("log_level", "DEBUG")]
)
def test_config_is_frozen(field: str, value: Any) -> None:
    cfg = Config.load(env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cfg, field, value)
    assert getattr(cfg, field) == getattr(Config.load(env={}), field)


def test_config_cannot_grow_new_attributes() -> None:
    cfg = Config.load(env={})
    with pytest.raises((AttributeError, TypeError)):
        cfg.extra = 1  # type: ignore[attr-defined]
