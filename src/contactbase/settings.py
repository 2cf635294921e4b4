"""Configuration, read once from the environment and passed down."""

import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

ENV_PREFIX = "CONTACTBASE_"
# A secret shorter than this is guessable by brute force offline (from one signed cursor).
MIN_SECRET_BYTES = 32
DATABASE_BACKENDS = ("sqlite", "postgresql", "postgres")  # `postgres://` is Heroku's spelling
REDIS_SCHEMES = ("redis", "rediss", "unix")


class Settings(BaseSettings):
    """Every setting is an environment variable prefixed with CONTACTBASE_."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    database_url: str = Field(
        default="sqlite:///contactbase.db",
        description="SQLAlchemy-style URL: sqlite:///relative.db, sqlite:////abs.db or postgresql://…",
    )
    redis_url: str | None = Field(default=None, description="Shared rate-limit counters.")
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    idempotency_ttl_seconds: int = Field(
        default=24 * 3600, ge=1, description="How long an Idempotency-Key's answer is kept."
    )
    changes_retention_seconds: int = Field(
        default=30 * 24 * 3600, ge=1, description="How long the change feed keeps its events."
    )
    max_batch_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1, description="The body limit of POST /contacts/batch."
    )
    rate_limit_window_seconds: int = Field(
        default=60, ge=1, description="The limits' window; the API promises 60 (tests shorten it)."
    )
    export_dir: Path = Field(
        default=Path("exports"), description="Where export files are written (and served from)."
    )
    export_max_bytes: int = Field(
        default=5 * 2**30,
        ge=1,
        description="The exports folder's budget: an export that would pass it fails.",
    )
    export_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often workers look for queued exports."
    )
    public_url: str | None = Field(
        default=None,
        description="The address clients reach the service at (https://contacts.example.com, "
        "with any path prefix): links in answers are built from it, never from the Host header.",
    )
    max_response_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="A list page stops early (with a next_cursor) before its JSON passes this.",
    )
    limit_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Requests in progress at once per worker process; beyond, 503 `overloaded` "
        "(`serve --limit-concurrency`). None: no limit.",
    )
    db_pool_size: int = Field(default=10, ge=1)
    access_log: bool = Field(
        default=True, description="A line per request on standard output (`serve --json`: off)."
    )
    secret_key: str | None = Field(
        default=None,
        description="Signs cursors; when unset, a secret generated at `migrate` and kept in the "
        "database is used, so every worker and host shares it.",
    )
    webhook_retry_schedule: str = Field(
        default="10,60,300,1800,3600,7200,14400,28800,28800",
        description="Seconds between a webhook message's attempts, separated by commas (each "
        "with jitter); the default spends about 24 hours over 10 attempts.",
    )
    webhook_rotation_overlap_seconds: int = Field(
        default=24 * 3600, ge=0, description="How long a rotated secret still signs beside the new."
    )
    webhook_disable_after_seconds: int = Field(
        default=3 * 24 * 3600,
        ge=1,
        description="An endpoint failing every attempt for this long is disabled.",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Let webhooks go to loopback, private and link-local addresses (tests).",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="The whole of one delivery attempt, answer included."
    )
    webhook_in_flight: int = Field(
        default=32, ge=1, description="Deliveries in progress at once, per server process."
    )
    webhook_in_flight_per_endpoint: int = Field(
        default=4, ge=1, description="Deliveries in progress at once to one endpoint, in all."
    )
    webhook_poll_seconds: float = Field(
        default=0.5, gt=0, description="How often workers look for new events and due messages."
    )

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            backend = make_url(value).get_backend_name()
        except (ArgumentError, ValueError):  # not a URL, or a port that is not a number
            backend = ""
        if backend not in DATABASE_BACKENDS:
            raise ValueError("must be sqlite:///… or postgresql://…")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if urlsplit(value).scheme not in REDIS_SCHEMES:
            raise ValueError("must be redis://…, rediss://… or unix://…")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(
                "must be an http:// or https:// URL, e.g. https://contacts.example.com"
            )
        if parsed.query or parsed.fragment:
            raise ValueError("must not have a query or a fragment")
        return value.rstrip("/")

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"must be at least {MIN_SECRET_BYTES} bytes (e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        retry_delays(value)
        return value

    @property
    def webhook_retry_delays(self) -> tuple[float, ...]:
        return retry_delays(self.webhook_retry_schedule)


def retry_delays(schedule: str) -> tuple[float, ...]:
    """`10,60,300` as seconds; refused unless every one is a positive number."""
    try:
        delays = tuple(float(part) for part in schedule.split(","))
    except ValueError:
        delays = ()
    if not delays or any(not (0 < delay < math.inf) for delay in delays):
        raise ValueError("must be positive numbers of seconds separated by commas, e.g. 1,1,2")
    return delays


# Pydantic's words for what a setting must be, as an operator reads them.
REASONS = {
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
}
SECRET_SETTINGS = {"secret_key"}  # never repeated back


def describe(error: ValidationError) -> str:
    """The Settings' refusal as one sentence naming the environment variable and its value,
    e.g. `CONTACTBASE_MAX_BODY_BYTES must be an integer ("abc").`"""
    first, *others = error.errors()
    field = str(first["loc"][0]) if first["loc"] else ""
    reason = REASONS.get(first["type"], "").format(**first.get("ctx", {}))
    if not reason:
        reason = first["msg"].removeprefix("Value error, ")
        if reason.startswith("Input should"):
            reason = "should" + reason.removeprefix("Input should")
    shown = "" if field in SECRET_SETTINGS else f" ({_quoted(first['input'])})"
    more = f" (and {len(others)} more error{'s' if len(others) > 1 else ''})" if others else ""
    return f"{ENV_PREFIX}{field.upper()} {reason}{shown}{more}."


def _quoted(value: Any) -> str:
    """A setting's value as given, less any password in it (`scheme://user:***@host`)."""
    text = value if isinstance(value, str) else repr(value)
    return '"' + re.sub(r"(://[^/@:]*:)[^/]*@", r"\1***@", text) + '"'
