"""Configuration, read once from the environment and passed down."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting is an environment variable prefixed with CONTACTBASE_."""

    model_config = SettingsConfigDict(env_prefix="CONTACTBASE_", extra="ignore")

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
    export_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often workers look for queued exports."
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
