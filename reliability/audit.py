"""After the run, the database read directly: nothing acknowledged lost, nothing half-written."""

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from workload import Attempt

KINDS = {
    "emails": ("contact_emails", "email"),
    "phones": ("contact_phones", "phone"),
    "names": ("contact_names", "name"),
    "locations": ("contact_locations", "location"),
}


def normal_form(kind: str, value: str) -> str:
    """The compared form, written out here rather than imported from the code under test."""
    if kind == "emails":
        return value.strip().lower()
    if kind == "phones":
        return re.sub(r"\D", "", value)
    return value.strip()


@dataclass
class Findings:
    """What the audit found; `examples` keeps a few of each problem for the report."""

    contacts: int = 0
    aliases: int = 0
    checked: int = 0
    repointed: int = 0  # aliases whose emails were answered first by another, since merged, id
    lost: int = 0
    partial: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def note(self, problem: str, example: str, *, partial: bool = True) -> None:
        """Count a problem (as partial, unless it is a loss) and keep its first examples."""
        if partial:
            self.partial[problem] += 1
        if len(self.examples[problem]) < 5:
            self.examples[problem].append(example)


async def audit(url: str, space_id: int, ledger: Iterable[Attempt]) -> Findings:
    """Check every acknowledged create against the stored contacts, then the invariants."""
    connection = await asyncpg.connect(url)
    try:
        contacts = {
            row["id"]: row
            for row in await connection.fetch(
                "SELECT id, merged_into_id, email, phone, name, location FROM contacts "
                "WHERE space_id = $1",
                space_id,
            )
        }
        values: dict[str, dict[int, list[Any]]] = {}
        findings = Findings(contacts=len(contacts))
        for kind, (table, _column) in KINDS.items():
            values[kind] = defaultdict(list)
            for row in await connection.fetch(
                f"SELECT contact_id, position, value, normalised FROM {table} "
                "WHERE space_id = $1 ORDER BY contact_id, position",
                space_id,
            ):
                values[kind][row["contact_id"]].append(row)
            orphans = await connection.fetch(
                f"SELECT v.contact_id FROM {table} v LEFT JOIN contacts c "
                "ON c.id = v.contact_id AND c.space_id = v.space_id WHERE c.id IS NULL"
            )
            for row in orphans:
                findings.note(f"{kind} row without its contact", f"contact {row['contact_id']}")
        shared = await connection.fetch(
            "SELECT normalised, array_agg(DISTINCT contact_id) AS owners FROM contact_emails "
            "WHERE space_id = $1 GROUP BY normalised HAVING count(DISTINCT contact_id) > 1",
            space_id,
        )
        for row in shared:
            findings.note("email on several contacts", f"{row['normalised']}: {row['owners']}")
    finally:
        await connection.close()

    check_contacts(findings, contacts, values)
    check_acknowledged(findings, contacts, values, ledger)
    findings.repointed = count_repointed(contacts, ledger)
    return findings


def resolve(contacts: dict[int, Any], contact_id: int) -> int | None:
    """The contact an id ends at, following merged_into_id (None: missing, or a cycle)."""
    seen: set[int] = set()
    current: int | None = contact_id
    while current is not None and current in contacts and current not in seen:
        seen.add(current)
        target = contacts[current]["merged_into_id"]
        if target is None:
            return current
        current = target
    return None


def check_contacts(
    findings: Findings, contacts: dict[int, Any], values: dict[str, dict[int, list[Any]]]
) -> None:
    """Every contact whole: emails present, primaries first, aliases one step from a survivor."""
    for contact_id, contact in contacts.items():
        target = contact["merged_into_id"]
        if target is not None:
            findings.aliases += 1
            if target not in contacts:
                findings.note("alias of a missing contact", f"{contact_id} -> {target}")
            elif contacts[target]["merged_into_id"] is not None:
                # GET resolves an alias in one step: a chain would answer with another alias.
                chain = f"{contact_id} -> {target} -> {contacts[target]['merged_into_id']}"
                findings.note("alias of an alias", chain)
            for kind in KINDS:
                if values[kind].get(contact_id):
                    findings.note(f"{kind} rows left on an alias", f"contact {contact_id}")
            continue
        emails = values["emails"].get(contact_id, [])
        if not emails:
            findings.note("contact without emails", f"contact {contact_id}")
        for kind, (_table, column) in KINDS.items():
            rows = values[kind].get(contact_id, [])
            first = rows[0]["value"] if rows and rows[0]["position"] == 0 else None
            if rows and first is None:
                findings.note(f"{kind} without position 0", f"contact {contact_id}")
            elif contact[column] != first:
                example = f"contact {contact_id}: {column}={contact[column]!r}, first={first!r}"
                findings.note(f"primary {column} is not the first of {kind}", example)


def check_acknowledged(
    findings: Findings,
    contacts: dict[int, Any],
    values: dict[str, dict[int, list[Any]]],
    ledger: Iterable[Attempt],
) -> None:
    """Each acknowledged create: its contact (through aliases) holds every value it sent."""
    for attempt in ledger:
        if attempt.kind != "create" or not attempt.acknowledged:
            continue
        findings.checked += 1
        assert attempt.contact_id is not None
        survivor = resolve(contacts, attempt.contact_id)
        if survivor is None:
            findings.lost += 1
            findings.note("acknowledged contact missing", f"id {attempt.contact_id}", partial=False)
            continue
        missing = []
        for kind, sent in attempt.payload.items():
            stored = {normal_form(kind, row["value"]) for row in values[kind].get(survivor, [])}
            missing += [value for value in sent if normal_form(kind, value) not in stored]
        if missing:
            findings.lost += 1
            example = f"id {attempt.contact_id} (now {survivor}) lacks {missing}"
            findings.note("acknowledged values missing", example, partial=False)


def count_repointed(contacts: dict[int, Any], ledger: Iterable[Attempt]) -> int:
    """Aliases merged twice (into a contact itself merged later): evidence of chains, no fault."""
    acknowledged = [a for a in ledger if a.kind == "create" and a.acknowledged]
    answered: dict[str, set[int]] = defaultdict(set)
    for attempt in acknowledged:
        assert attempt.contact_id is not None
        for email in attempt.payload["emails"]:
            answered[normal_form("emails", email)].add(attempt.contact_id)
    repointed = 0
    for attempt in acknowledged:
        created = attempt.contact_id
        if attempt.status != 201 or created is None or created not in contacts:
            continue
        survivor = contacts[created]["merged_into_id"]
        if survivor is None:
            continue
        between = set().union(
            *(answered[normal_form("emails", e)] for e in attempt.payload["emails"])
        )
        if any(
            other not in (created, survivor) and contacts.get(other, {}).get("merged_into_id")
            for other in between
        ):
            repointed += 1
    return repointed
