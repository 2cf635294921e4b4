"""The callers of recent keys, so that a request need not read its key (spaces.access)."""

from contactbase.spaces.service import Caller


class KeyCache:
    """The callers of recent keys, by key hash, each with the mark of the last administrative
    change observed before its key was read (SPEC section 1: a change applies to the next
    request, on every worker and host). An entry serves only while the mark is unchanged, and
    the mark is read in a round trip the request makes anyway: on SQLite the first statement
    of the request's snapshot (`PRAGMA data_version`), on PostgreSQL the Redis limiter's count
    (the CLI moves the mark in Redis after each change). Without Redis, PostgreSQL reads the
    key on every request."""

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Caller, object]] = {}

    def find(self, key_hash: str) -> tuple[Caller, object] | None:
        return self._entries.get(key_hash)

    def keep(self, key_hash: str, caller: Caller, mark: object) -> None:
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()  # a bound on memory; the keys in use come back at once
        self._entries[key_hash] = (caller, mark)
