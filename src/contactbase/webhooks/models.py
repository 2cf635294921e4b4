"""Storage of webhooks (SPEC 6.6): endpoints, the messages owed to them, and every attempt."""

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from contactbase.db import Base, Id


class WebhookEndpoint(Base):
    """A receiver of a Space's events. `cursor` is the last event of the feed already turned
    into messages for it (webhooks/fanout.py); a disabled endpoint's cursor stands still and
    jumps to the feed's end when it is enabled again, so events of the pause are not queued."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    space_id: Mapped[int] = mapped_column(Id, ForeignKey("spaces.id"), index=True)
    url: Mapped[str] = mapped_column(Text)
    # The event types it receives; empty: every type.
    event_types: Mapped[list[str]] = mapped_column(JSON)
    # `whsec_` and the base64 of the key, as Standard Webhooks writes it; the database must
    # hold it to sign (SECURITY.md).
    secret: Mapped[str] = mapped_column(Text)
    # During a rotation the old secret signs too, until `previous_secret_until`.
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_until: Mapped[datetime | None] = mapped_column(DateTime())
    enabled: Mapped[bool] = mapped_column(Boolean)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    cursor: Mapped[int] = mapped_column(BigInteger)
    # The last event (by row id) written before it was created or last enabled: those, even if
    # numbered later, are not its.
    after_event_id: Mapped[int] = mapped_column(BigInteger)
    # The first failed attempt since the last success: 3 days of failures disable it.
    failing_since: Mapped[datetime | None] = mapped_column(DateTime())
    created_at: Mapped[datetime] = mapped_column(DateTime())


class WebhookDelivery(Base):
    """One message owed to one endpoint: an event, or a replay of one (a new message, with a
    new `message_id`). The database is the queue (webhooks/worker.py): `pending` until a 2xx,
    `failed` once the retry schedule is spent. A claim leases it until `leased_until`."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'delivered', 'failed')", name="state"),
        # What is due, oldest first, for the workers' claims; and (due later) what is in flight.
        Index(
            "ix_webhook_deliveries_due",
            "endpoint_id",
            "next_attempt_at",
            "id",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
        # The housekeeping sweep's query: what is old.
        Index("ix_webhook_deliveries_created_at", "created_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(
        Id, ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    space_id: Mapped[int] = mapped_column(Id, ForeignKey("spaces.id"))
    # The `webhook-id` header: the same for every attempt of this message.
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_seq: Mapped[int] = mapped_column(BigInteger)
    # The JSON body, fixed when the message is made, so every attempt signs the same bytes.
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime())
    leased_until: Mapped[datetime | None] = mapped_column(DateTime())
    created_at: Mapped[datetime] = mapped_column(DateTime())


class WebhookAttempt(Base):
    """An attempt to deliver a message, as `webhook deliveries` shows it."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        Index("ix_webhook_attempts_endpoint_id_id", "endpoint_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        Id, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    endpoint_id: Mapped[int] = mapped_column(
        Id, ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_seq: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(Integer)
    # The answer's status; none when no answer came (`error` says why).
    status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int] = mapped_column(Integer)
    # At most 4 KiB of the answer's body.
    response: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime())
