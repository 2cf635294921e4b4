"""Identity resolution of a batch, in memory: which contact each item creates or merges into,
what each answers, and which rows change. No database here (writes.py reads the contacts the
batch meets, locked, and writes the plan), so the rules of a merge live in one place and a
batch of one follows the same rules as a batch of a thousand.

The rules, item by item in request order, as `POST /contacts` states them:
- An item none of whose emails is known creates a contact.
- Otherwise it merges into the contacts that own its emails (with `merge=False` it is refused
  instead, 409, and changes nothing). The oldest of them (lowest id) survives; the others
  become its aliases, their values and empty slots carried over to it in id order, then the
  item's. New values are appended after the survivor's; a value already held (by normal form)
  is not added again. The item's slots overwrite.
- A merge that would grow a collection of the survivor past MAX_VALUES values (distinct by
  normal form, as stored) is refused instead, 422 naming the collection, and changes nothing.
- A contact created by an earlier item of the batch is a contact like any other: a later item
  meeting its emails merges into it, and it is younger than every stored contact. An item
  refused leaves every contact as it was, so the items after it see the state before it.

The cap is checked here, on the contacts writes.py has read under their lock, so that every
create and batch meets it (an import too, which writes through batches). The shortcuts of
`writes.create_contact` cannot pass it: one creates only new contacts (each collection of a
request holds at most schemas.MAX_ITEMS values), the other answers a request that adds nothing.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contactbase.contacts.custom_fields import SLOTS, to_wire
from contactbase.contacts.models import PRIMARY_COLUMN, VALUE_TABLES
from contactbase.contacts.reads import ContactRow, ValueRow
from contactbase.contacts.schemas import ContactDetail, wire_time
from contactbase.errors import Conflict, InvalidInput
from contactbase.validation import MESSAGES

KINDS = tuple(VALUE_TABLES)
# (value as stored, normalised form)
Value = tuple[str, str]
# Ids of contacts the plan creates, before the database gives them theirs: above any stored id,
# in creation order, so that "the oldest survives" holds for them too.
PROVISIONAL = 1 << 62
# Values a contact holds per collection at most (SPEC 6.8): far more than a person has, few
# enough that no tenant can make one contact's reads, merges and locks unboundedly slow.
MAX_VALUES = 1000


@dataclass(frozen=True)
class Incoming:
    """What an item brings: each collection's values without repeats, and the slots sent."""

    values: dict[str, list[Value]]
    slots: dict[str, Any]

    def emails(self) -> list[str]:
        return [normalised for _, normalised in self.values["emails"]]


@dataclass(eq=False)
class Person:
    """A contact as the plan holds it: stored (read, locked) or created by the plan."""

    id: int
    stored: bool
    created_at: datetime
    updated_at: datetime
    values: dict[str, list[Value]]
    slots: dict[str, Any]
    # Stored contacts: the values the plan adds, at positions after those stored.
    added: dict[str, list[tuple[int, Value]]] = field(default_factory=dict)
    next_position: dict[str, int] = field(default_factory=dict)
    merged_into: "Person | None" = None
    changed: bool = False

    def live(self) -> "Person":
        """The contact this one resolves to (itself unless merged into another)."""
        person = self
        while person.merged_into is not None:
            person = person.merged_into
        return person

    def held(self, kind: str) -> set[str]:
        return {normalised for _, normalised in self.values[kind]}

    def primaries(self) -> dict[str, str | None]:
        return {
            PRIMARY_COLUMN[kind]: (rows[0][0] if rows else None)
            for kind, rows in self.values.items()
        }

    def add(self, kind: str, value: Value) -> None:
        self.values[kind].append(value)
        if self.stored:
            position = self.next_position[kind]
            self.added.setdefault(kind, []).append((position, value))
            self.next_position[kind] = position + 1


@dataclass(frozen=True)
class Snapshot:
    """An item's answer as it stood after the item: the contact's values then (its id is read
    at the end, once created contacts have theirs)."""

    person: Person
    values: dict[str, list[str]]
    slots: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    def detail(self) -> ContactDetail:
        return ContactDetail.of(
            self.person.id, self.values, self.slots, self.created_at, self.updated_at
        )

    def wire(self) -> dict[str, Any]:
        """`detail()` as the API shows it, built without the model (tests hold them equal)."""
        shown: dict[str, Any] = {"id": self.person.id, **self.values}
        shown["created_at"] = wire_time(self.created_at)
        shown["updated_at"] = wire_time(self.updated_at)
        slots = to_wire(self.slots)
        if slots:
            shown["custom_fields"] = slots
        return shown


@dataclass(frozen=True)
class Refused:
    """An item refused, which changes nothing: its emails are known and merging was not asked
    for (409), or merging it into `owner` (the oldest contact it meets) would grow the
    collections of `over` past MAX_VALUES (422; each with the count it would reach)."""

    owner: Person
    over: dict[str, int] = field(default_factory=dict)

    def error(self) -> Conflict | InvalidInput:
        """The refusal as the API answers it (once the plan is written: the ids are known)."""
        existing = self.owner.id
        if not self.over:
            return Conflict(
                f"A contact with one of these emails already exists (id {existing}).", existing
            )
        # A contact that an earlier item creates has no id when the batch is not written.
        into = (
            f"contact {existing}"
            if existing < PROVISIONAL
            else "the contact that an earlier item of this batch creates"
        )
        return InvalidInput(
            {
                kind: [
                    MESSAGES["too_many_values"].format(
                        field=kind, count=f"{count:,}", contact=into, max=f"{MAX_VALUES:,}"
                    )
                ]
                for kind, count in self.over.items()
            }
        )


@dataclass
class Plan:
    """The outcome of a batch: per item (in order) a Snapshot (created or merged) or Refused,
    and the contacts touched, stored and new."""

    now: datetime
    outcomes: list[tuple[bool, Snapshot] | Refused] = field(default_factory=list)
    stored: list[Person] = field(default_factory=list)
    created: list[Person] = field(default_factory=list)

    def assign_ids(self, ids: Sequence[int]) -> None:
        """The created contacts' ids, ascending in creation order."""
        for person, contact_id in zip(self.created, sorted(ids), strict=True):
            person.id = contact_id

    def losers(self) -> Iterator[Person]:
        """Stored contacts merged into others by this plan."""
        return (person for person in self.stored if person.merged_into is not None)

    def changed_survivors(self) -> Iterator[Person]:
        return (p for p in self.stored if p.merged_into is None and p.changed)

    def events(self) -> list[tuple[str, int, int | None]]:
        """The change feed's events of the plan, once the created contacts have their ids:
        each contact created, each merged into another (with the one it ends in), each stored
        contact that survived and changed. A merge that changes nothing has none."""
        created = [("contact.created", person.id, None) for person in self.created]
        merged = [
            ("contact.merged", person.id, person.live().id)
            for person in (*self.created, *self.stored)
            if person.merged_into is not None
        ]
        updated = [("contact.updated", person.id, None) for person in self.changed_survivors()]
        return [*created, *merged, *updated]


def stored_person(row: ContactRow, values: list[ValueRow]) -> Person:
    """A stored contact, from its locked row and its value rows (in position order)."""
    person = Person(
        row.id,
        True,
        row.created_at,
        row.updated_at,
        {kind: [] for kind in KINDS},
        dict(row.slots),
        next_position=dict.fromkeys(KINDS, 0),
    )
    for value in values:
        person.values[value.kind].append((value.value, value.normalised))
        person.next_position[value.kind] = value.position + 1
    return person


def plan(
    items: Sequence[Incoming], stored: Sequence[Person], *, merge: bool, now: datetime
) -> Plan:
    """Resolve `items` in order against `stored`, the contacts owning any of their emails."""
    result = Plan(now, stored=list(stored))
    owner_of: dict[str, Person] = {}
    for person in stored:
        for _, normalised in person.values["emails"]:
            owner_of[normalised] = person
    for item in items:
        owners = sorted(
            {owner_of[email].live() for email in item.emails() if email in owner_of},
            key=lambda person: person.id,
        )
        if not owners:
            person = _create(result, item, now)
            for email in item.emails():
                owner_of[email] = person
            result.outcomes.append((True, _snapshot(person)))
        elif not merge:
            result.outcomes.append(Refused(owners[0]))
        elif over := _over_cap(owners, item):
            result.outcomes.append(Refused(owners[0], over))
        else:
            survivor = _merge(owners, item, now)
            for email in item.emails():
                owner_of.setdefault(email, survivor)
            result.outcomes.append((False, _snapshot(survivor)))
    return result


def _create(result: Plan, item: Incoming, now: datetime) -> Person:
    person = Person(
        PROVISIONAL + len(result.created),
        False,
        now,
        now,
        {kind: list(item.values[kind]) for kind in KINDS},
        dict.fromkeys(SLOTS) | item.slots,
    )
    result.created.append(person)
    return person


def _over_cap(owners: list[Person], item: Incoming) -> dict[str, int]:
    """The collections that merging the item and `owners` would grow past MAX_VALUES, with
    the count each would reach (distinct normal forms, as `_merge` keeps them). One that does
    not grow is let be, however large: a contact stored before the cap existed may hold more,
    and a request that adds nothing to it is answered as ever (as `writes._unchanged` does)."""
    over: dict[str, int] = {}
    for kind in KINDS:
        bound = sum(len(person.values[kind]) for person in owners) + len(item.values[kind])
        if bound <= MAX_VALUES:
            continue  # cannot pass it even without a repeat: the common case, without sets
        held = owners[0].held(kind)
        count = len(
            held.union(
                *(person.held(kind) for person in owners[1:]),
                (normalised for _, normalised in item.values[kind]),
            )
        )
        if count > MAX_VALUES and count > len(held):
            over[kind] = count
    return over


def _merge(owners: list[Person], item: Incoming, now: datetime) -> Person:
    """Merge the item and `owners` (oldest first) into the oldest."""
    survivor, losers = owners[0], owners[1:]
    before = dict(survivor.slots)
    for kind in KINDS:
        held = survivor.held(kind)
        carried = [value for loser in losers for value in loser.values[kind]]
        for value in carried + item.values[kind]:
            if value[1] not in held:
                held.add(value[1])
                survivor.add(kind, value)
                survivor.changed = True
    for loser in losers:
        for slot, value in loser.slots.items():
            if survivor.slots[slot] is None:
                survivor.slots[slot] = value
        # Its row keeps its primaries and slots as they were (its values go with it).
        loser.merged_into = survivor
        loser.updated_at = now
    survivor.slots.update(item.slots)
    if losers or survivor.slots != before:
        survivor.changed = True
    if survivor.changed:
        survivor.updated_at = now
    return survivor


def _snapshot(person: Person) -> Snapshot:
    return Snapshot(
        person,
        {kind: [value for value, _ in rows] for kind, rows in person.values.items()},
        dict(person.slots),
        person.created_at,
        person.updated_at,
    )
