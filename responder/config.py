"""The one configuration object of a certstatus process.

Settings come from, in increasing precedence: the defaults below, an optional TOML
file (``--config FILE`` or ``CERTSTATUS_CONFIG``), environment variables, and
command-line flags. Everything is validated once, at start-up, and a wrong setting
is reported by its name, its value and what would be right.

Every field has a usable default: with no configuration at all, certstatus runs a
private PostgreSQL and Valkey in ``./.certstatus`` and listens on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_type_hints

from ca_core.errors import ConfigurationError
from ca_core.keystore import Passphrase
from ca_core.model import KeyType
from ca_core.profiles import PublicURLs

__all__ = ["LOG_FORMAT", "Config", "SETTINGS"]


@dataclasses.dataclass(frozen=True, slots=True)
class Setting:
    """How one field is named outside the program, and what it is for."""

    field: str
    env: str
    help: str
    secret: bool = False


def _field(default: Any, env: str, help: str, *, secret: bool = False) -> Any:
    return dataclasses.field(default=default, metadata={"env": env, "help": help, "secret": secret})


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Config:
    """Validated settings. Build with :meth:`load`; never mutate (it is frozen)."""

    data_dir: Path = _field(
        Path(".certstatus"),
        "CERTSTATUS_DATA_DIR",
        "Where the embedded servers keep their data, and where the demo writes its files.",
    )
    database_url: str | None = _field(
        None,
        "DATABASE_URL",
        "PostgreSQL URL. Unset: run a private PostgreSQL in the data directory.",
        secret=True,
    )
    redis_url: str | None = _field(
        None,
        "REDIS_URL",
        "Redis/Valkey URL (redis://, rediss:// or unix://). Unset: run a private Valkey in the data directory.",
        secret=True,
    )
    public_host: str = _field("127.0.0.1", "CERTSTATUS_PUBLIC_HOST", "Address the public OCSP/CRL responder binds.")
    public_port: int = _field(8080, "CERTSTATUS_PUBLIC_PORT", "Port of the public OCSP/CRL responder.")
    admin_host: str = _field(
        "127.0.0.1", "CERTSTATUS_ADMIN_HOST", "Address the admin API binds; keep it off public networks."
    )
    admin_port: int = _field(8081, "CERTSTATUS_ADMIN_PORT", "Port of the admin API; never the public port.")
    admin_tls_cert: Path | None = _field(
        None,
        "CERTSTATUS_ADMIN_TLS_CERT",
        "PEM certificate (chain) of the admin API's TLS server. Set with the key: the admin API then speaks only "
        "HTTPS and also accepts admin client certificates ('certstatus admin cert create').",
    )
    admin_tls_key: Path | None = _field(
        None,
        "CERTSTATUS_ADMIN_TLS_KEY",
        "PEM private key of the admin TLS server; if encrypted, under the key passphrase.",
    )
    admin_allow_generated_keys: bool = _field(
        False,
        "CERTSTATUS_ADMIN_ALLOW_GENERATED_KEYS",
        "Let POST /v1/certificates generate a subject's key and return it encrypted. Off: CSRs only, so no "
        "subject key ever exists outside its holder's device.",
    )
    public_base_url: str | None = _field(
        None,
        "CERTSTATUS_PUBLIC_BASE_URL",
        "Base URL written into issued certificates (AIA, CRL distribution points). Certificates keep it "
        "for life, so use the name relying parties will always reach. Unset: http://localhost:<public_port>.",
    )
    key_passphrase: Passphrase | None = _field(
        None,
        "CERTSTATUS_KEY_PASSPHRASE",
        "Passphrase that encrypts the CA and OCSP private keys at rest (at least 12 characters).",
        secret=True,
    )
    key_passphrase_file: Path | None = _field(
        None,
        "CERTSTATUS_KEY_PASSPHRASE_FILE",
        "File holding the key passphrase (trailing newline ignored); preferred over the variable.",
    )
    organization: str = _field("certstatus", "CERTSTATUS_ORGANIZATION", "O= of the CA certificates 'ca init' creates.")
    root_key_type: KeyType = _field(KeyType.RSA4096, "CERTSTATUS_ROOT_KEY_TYPE", "Key type of the root CA.")
    issuer_key_type: KeyType = _field(KeyType.RSA3072, "CERTSTATUS_ISSUER_KEY_TYPE", "Key type of issuing CAs.")
    ocsp_key_type: KeyType = _field(
        KeyType.EC_P256,
        "CERTSTATUS_OCSP_KEY_TYPE",
        "Key type of delegated OCSP signers; ECDSA P-256 signs an order of magnitude faster than RSA.",
    )
    crl_partitions: int = _field(
        16, "CERTSTATUS_CRL_PARTITIONS", "CRL partitions of a new issuer (fixed once it issues)."
    )
    cert_validity_days: int = _field(
        1826, "CERTSTATUS_CERT_VALIDITY_DAYS", "Default validity of citizen certificates (5 years)."
    )
    ocsp_signer_validity_days: int = _field(
        30,
        "CERTSTATUS_OCSP_SIGNER_VALIDITY_DAYS",
        "Validity of OCSP signing certificates; short, since relying parties never check their status.",
    )
    workers: int = _field(
        1,
        "CERTSTATUS_WORKERS",
        "Public responder processes sharing the public port (SO_REUSEPORT); one per core is the usual choice.",
    )
    ocsp_validity_hours: int = _field(
        96,
        "CERTSTATUS_OCSP_VALIDITY_HOURS",
        "thisUpdate to nextUpdate of pre-signed OCSP responses (4 days); the signer refreshes each before half of it passes.",
    )
    ocsp_nonce: str = _field(
        "ignore",
        "CERTSTATUS_OCSP_NONCE",
        "'ignore' (RFC 5019: serve the pre-signed answer) or 'sign' (RFC 8954: sign live with the client's nonce, "
        "falling back to the pre-signed answer when live signing is saturated).",
    )
    ocsp_unknown_serial: str = _field(
        "unauthorized",
        "CERTSTATUS_OCSP_UNKNOWN_SERIAL",
        "Answer for a serial the issuer never issued: 'unauthorized', or 'revoked' (RFC 6960 2.2 extended revoked).",
    )
    ocsp_live_signing_limit: int = _field(
        8,
        "CERTSTATUS_OCSP_LIVE_SIGNING_LIMIT",
        "Live signatures in flight per responder process (SHA-256 CertIDs, nonces, extended revoked); beyond it, shed.",
    )
    ocsp_cache_entries: int = _field(
        200_000,
        "CERTSTATUS_OCSP_CACHE_ENTRIES",
        "OCSP answers kept in each responder process (~1 KB each); changes evict them at once.",
    )
    signer_batch_size: int = _field(
        500, "CERTSTATUS_SIGNER_BATCH_SIZE", "OCSP responses the signer signs and writes per round trip."
    )
    crl_interval_hours: int = _field(
        24,
        "CERTSTATUS_CRL_INTERVAL_HOURS",
        "A new full CRL (and partition CRLs) at least this often; the model CA reissues daily.",
    )
    crl_validity_hours: int = _field(
        48,
        "CERTSTATUS_CRL_VALIDITY_HOURS",
        "thisUpdate to nextUpdate of full and partition CRLs; longer than the interval, so a late run leaves no gap.",
    )
    crl_delta_interval_seconds: int = _field(
        60,
        "CERTSTATUS_CRL_DELTA_INTERVAL_SECONDS",
        "Shortest time between delta CRLs while changes come in: a revocation is on the delta and the stream "
        "within this (plus about a second).",
    )
    crl_delta_validity_minutes: int = _field(
        60,
        "CERTSTATUS_CRL_DELTA_VALIDITY_MINUTES",
        "thisUpdate to nextUpdate of delta CRLs; reissued, changes or not, when half of it has passed.",
    )
    crl_expired_grace_days: int = _field(
        7,
        "CERTSTATUS_CRL_EXPIRED_GRACE_DAYS",
        "A revoked certificate leaves full CRLs this long after it expires (at least one CRL interval, RFC 5280 5.1.2.6).",
    )
    crl_stream_history: int = _field(
        1440,
        "CERTSTATUS_CRL_STREAM_HISTORY",
        "Delta CRLs kept for push-stream subscribers that reconnect (a day of per-minute deltas).",
    )
    crl_cache_mb: int = _field(
        64,
        "CERTSTATUS_CRL_CACHE_MB",
        "CRL bytes each responder process keeps in memory (larger CRLs are streamed from Redis).",
    )
    db_pool_size: int = _field(10, "CERTSTATUS_DB_POOL_SIZE", "PostgreSQL connections per process.")
    log_level: str = _field("INFO", "CERTSTATUS_LOG_LEVEL", f"One of {', '.join(_LOG_LEVELS)}.")

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigurationError:
            return ConfigurationError(f"{_setting_name(name)}={_shown(self, name)!s}: {why}")

        for name in ("public_port", "admin_port"):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise bad(name, "must be a port number between 1 and 65535")
        if self.admin_port == self.public_port:
            raise bad("admin_port", "the admin API must never share the public port")
        for name in ("public_host", "admin_host", "organization"):
            if not getattr(self, name).strip():
                raise bad(name, "must not be empty")
        if not 1 <= self.crl_partitions <= 4096:
            raise bad("crl_partitions", "must be between 1 and 4096")
        if not 1 <= self.cert_validity_days <= 20 * 366:
            raise bad("cert_validity_days", "must be between 1 and 7320 days")
        if not 1 <= self.ocsp_signer_validity_days <= 366:
            raise bad("ocsp_signer_validity_days", "must be between 1 and 366 days")
        if not 1 <= self.workers <= 64:
            raise bad("workers", "must be between 1 and 64")
        if not 1 <= self.ocsp_validity_hours <= 240:
            raise bad("ocsp_validity_hours", "must be between 1 and 240 hours (10 days)")
        if self.ocsp_nonce not in ("ignore", "sign"):
            raise bad("ocsp_nonce", "must be 'ignore' or 'sign'")
        if self.ocsp_unknown_serial not in ("unauthorized", "revoked"):
            raise bad("ocsp_unknown_serial", "must be 'unauthorized' or 'revoked'")
        if not 0 <= self.ocsp_live_signing_limit <= 1024:
            raise bad("ocsp_live_signing_limit", "must be between 0 and 1024")
        if not 0 <= self.ocsp_cache_entries <= 50_000_000:
            raise bad("ocsp_cache_entries", "must be between 0 and 50000000")
        if not 1 <= self.signer_batch_size <= 10_000:
            raise bad("signer_batch_size", "must be between 1 and 10000")
        if not 1 <= self.crl_interval_hours <= 24 * 30:
            raise bad("crl_interval_hours", "must be between 1 and 720 hours")
        if not self.crl_interval_hours < self.crl_validity_hours <= 24 * 60:
            raise bad("crl_validity_hours", "must be longer than CERTSTATUS_CRL_INTERVAL_HOURS and at most 1440 hours")
        if not 1 <= self.crl_delta_interval_seconds <= 86_400:
            raise bad("crl_delta_interval_seconds", "must be between 1 and 86400 seconds")
        if not self.crl_delta_interval_seconds < self.crl_delta_validity_minutes * 60 <= 7 * 86_400:
            raise bad("crl_delta_validity_minutes",
                      "must be longer than CERTSTATUS_CRL_DELTA_INTERVAL_SECONDS and at most 7 days")  # fmt: skip
        if not self.crl_interval_hours <= self.crl_expired_grace_days * 24 <= 3660 * 24:
            raise bad("crl_expired_grace_days",
                      "must cover at least one CRL interval (RFC 5280 5.1.2.6) and at most 3660 days")  # fmt: skip
        if not 1 <= self.crl_stream_history <= 100_000:
            raise bad("crl_stream_history", "must be between 1 and 100000")
        if not 0 <= self.crl_cache_mb <= 65_536:
            raise bad("crl_cache_mb", "must be between 0 and 65536")
        if not 1 <= self.db_pool_size <= 500:
            raise bad("db_pool_size", "must be between 1 and 500")
        if self.log_level not in _LOG_LEVELS:
            raise bad("log_level", f"must be one of {', '.join(_LOG_LEVELS)}")
        if self.database_url is not None and not self.database_url.startswith(("postgres://", "postgresql://")):
            raise ConfigurationError(
                "DATABASE_URL must start with postgresql:// (value not shown: it may hold a password)"
            )
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError("REDIS_URL must start with redis://, rediss:// or unix:// (value not shown)")
        if self.key_passphrase is not None and self.key_passphrase_file is not None:
            raise ConfigurationError("set either CERTSTATUS_KEY_PASSPHRASE or CERTSTATUS_KEY_PASSPHRASE_FILE, not both")
        # Validate the URL now so a typo fails at start-up, not at the first issuance.
        try:
            self.urls()
        except ConfigurationError as e:
            raise ConfigurationError(f"CERTSTATUS_PUBLIC_BASE_URL: {e.message}") from None

    def __repr__(self) -> str:
        # Never the secrets: a config object may end up in a log line or a traceback.
        shown = ", ".join(
            f"{f.name}={v}" for f, v in zip(dataclasses.fields(self), self.redacted().values(), strict=True)
        )
        return f"Config({shown})"

    # Derived values -------------------------------------------------------

    def urls(self) -> PublicURLs:
        return PublicURLs(self.public_base_url or f"http://localhost:{self.public_port}")

    def passphrase(self) -> Passphrase | None:
        """The key passphrase, read from the file if one is configured."""
        if self.key_passphrase_file is not None:
            return Passphrase.from_file(self.key_passphrase_file)
        return self.key_passphrase

    @property
    def uses_embedded(self) -> bool:
        return self.database_url is None or self.redis_url is None

    def redacted(self) -> dict[str, str]:
        """Every setting as text, with secrets masked; for ``certstatus config``."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                text = "(unset)"
            elif f.metadata["secret"]:
                text = "(set, hidden)"
            else:
                text = str(value)
            out[f.metadata["env"]] = text
        return out

    # Loading --------------------------------------------------------------

    @classmethod
    def load(
        cls,
        *,
        env: Mapping[str, str] | None = None,
        toml_path: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Config:
        """Defaults, then the TOML file, then the environment, then ``overrides``."""
        env = os.environ if env is None else env
        raw: dict[str, Any] = {}
        path = toml_path or (Path(env["CERTSTATUS_CONFIG"]) if env.get("CERTSTATUS_CONFIG") else None)
        if path is not None:
            raw.update(_read_toml(path))
        for s in SETTINGS:
            if s.env in env and env[s.env] != "":
                raw[s.field] = env[s.env]
        for key, value in (overrides or {}).items():
            if value is not None:
                raw[key] = value
        hints = get_type_hints(cls)
        values = {name: _coerce(name, hints[name], value) for name, value in raw.items()}
        return cls(**values)


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, f.metadata["env"], f.metadata["help"], f.metadata["secret"]) for f in dataclasses.fields(Config)
)
_BY_FIELD = {s.field: s for s in SETTINGS}


def _setting_name(field: str) -> str:
    return _BY_FIELD[field].env


def _shown(cfg: Config, field: str) -> str:
    return "(hidden)" if _BY_FIELD[field].secret else repr(getattr(cfg, field))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as e:
        raise ConfigurationError(f"cannot read the config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigurationError(f"the config file {path} is not valid TOML: {e}") from None
    unknown = sorted(set(data) - set(_BY_FIELD))
    if unknown:
        raise ConfigurationError(
            f"the config file {path} has unknown settings {unknown}; known: {', '.join(sorted(_BY_FIELD))}"
        )
    if "key_passphrase" in data:
        raise ConfigurationError(
            f"the config file {path} holds key_passphrase: keep secrets out of config files; "
            "use CERTSTATUS_KEY_PASSPHRASE or key_passphrase_file"
        )
    return data


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Turn text (from the environment) or TOML values into the field's type."""
    label = _setting_name(name)
    shown = "(hidden)" if _BY_FIELD[name].secret else repr(value)
    args = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
    target = args[0] if args else hint
    try:
        if target is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
        if target is int:
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if target is Path:
            return Path(str(value)).expanduser()
        if target is Passphrase:
            return value if isinstance(value, Passphrase) else Passphrase(str(value))
        if target is KeyType:
            return KeyType(str(value).strip().lower())
        if name == "log_level":
            return str(value).strip().upper()
        if target is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except ConfigurationError as e:
        raise ConfigurationError(f"{label}: {e.message}") from None
    except (TypeError, ValueError):
        kind = {
            bool: "on or off (true/false, yes/no, 1/0)",
            int: "an integer",
            Path: "a path",
            KeyType: f"one of {', '.join(k.value for k in KeyType)}",
        }.get(
            target, "a string"
        )
        raise ConfigurationError(f"{label}={shown}: must be {kind}") from None
    raise ConfigurationError(f"{label}: unsupported setting type {target!r}")  # pragma: no cover


#: Every process's log line (bench/tax_season.py reads the responder's GC warnings in it).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(cfg: Config) -> None:
    logging.basicConfig(level=getattr(logging, cfg.log_level), format=LOG_FORMAT)
