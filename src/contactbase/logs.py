"""What reaches the logs never holds a contact's values. Statements' parameters are hidden by
the engines (`hide_parameters`); PostgreSQL's DETAIL, which names the values a constraint
refused (`Key (space_id, normalised)=(1, ada@example.com) already exists.`), is in the text of
the driver's exceptions, and is cut from every record of the service's loggers, messages and
tracebacks alike. A background worker's failure is logged once, not at every round.
"""

import logging
import re

from contactbase.db import is_unavailable

LOGGERS = ("contactbase", "contactbase.exports", "contactbase.webhooks", "uvicorn.error")
# asyncpg writes DETAIL (and HINT) on lines of their own after the message.
DETAIL = re.compile(r"^(\s*(?:DETAIL|HINT):)[^\n]*", re.MULTILINE)


def scrub(text: str) -> str:
    return DETAIL.sub(r"\1 (left out: it may hold values)", text)


class Scrubbed(logging.Filter):
    """Formats the record's message and traceback once, without DETAIL lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "DETAIL" in message or "HINT" in message:
            record.msg, record.args = scrub(message), ()
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, scrub(text)
        return True


def install() -> None:
    """Put the filter on each of the service's loggers (a logger's filters do not see its
    children's records, so each is named)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(one, Scrubbed) for one in logger.filters):
            logger.addFilter(Scrubbed())


class Failures:
    """A background worker's failures, each logged once: again only when it changes, or
    after the worker has recovered (a missing schema is not written every second)."""

    def __init__(self, logger: logging.Logger, worker: str) -> None:
        self.logger, self.worker = logger, worker
        self.last: str | None = None

    def failed(self, exc: Exception) -> None:
        if repr(exc) == self.last:
            return
        self.last = repr(exc)
        if is_unavailable(exc):
            self.logger.warning("%s: database unavailable: %r", self.worker, exc)
        else:
            self.logger.error("%s: unexpected failure", self.worker, exc_info=exc)

    def recovered(self) -> None:
        self.last = None
