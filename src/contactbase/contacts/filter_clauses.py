"""custom_field_filters as SQL that PostgreSQL and SQLite answer alike (the conditions are
filters.py's).

- A slot that is not set (NULL) matches `unknown` only, `not_equal_to` and `not_contains`
  included: each clause below is NULL on a NULL slot, and NULL is not true.
- Text ignores case through one folding, the same on both databases (`fold_case`): Unicode's
  full case mappings, equal where `str.casefold` is equal (É = é, ß = SS = ẞ, final sigma =
  sigma), and in one thing wider: the dotless i (U+0131) folds as i. PostgreSQL folds with ICU
  (`und-x-icu`), whatever the database's LC_CTYPE; SQLite with the Python function that
  sqlite.configure registers.
- The user's text is never a pattern: contains, starts_with and ends_with look for it by position,
  so `%` and `_` are plain characters and SQLite's limit on the length of a LIKE pattern is never
  met. contains_word takes a regular expression on PostgreSQL, the value escaped in it.
- Dates compare as the stored text, so that an index on the slot can serve them: a stored
  `YYYY-MM-DD` against the days' own text, a stored date-time (`YYYY-MM-DDTHH:MM:SSZ`, UTC)
  against the instants where those days begin in the Space's timezone.
"""

import re
import unicodedata
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from operator import eq, ge, gt, le, lt, ne
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Boolean, ColumnElement, Integer, Text, and_, func, literal, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from contactbase.contacts.filters import AGES, Condition
from contactbase.contacts.models import Contact

FINAL_SIGMA, SIGMA = "\u03c2", "\u03c3"


# Case folding: one definition, two implementations, held equal by a test over every code
# point. lower, upper, lower takes each character to a caseless form (the last lower undoes
# upper's ẞ, which upper keeps and lower turns into ß, which upper spells SS), and the final
# sigma is the sigma of any other position: then a text's folding is its characters' foldings
# side by side, so that what one text contains, its folding contains folded.
def fold_case(text: str | None) -> str | None:
    """SQLite's contactbase_fold (registered in sqlite.configure)."""
    if text is None:
        return None
    return text.lower().upper().lower().replace(FINAL_SIGMA, SIGMA)


def is_word_character(character: str) -> bool:
    """A letter or a decimal digit: Unicode's L* and Nd, as ICU's u_isalnum and so PostgreSQL's
    [[:alnum:]] under an ICU collation judge it."""
    category = unicodedata.category(character)
    return category[0] == "L" or category == "Nd"


def has_word(text: str | None, word: str | None) -> int | None:
    """SQLite's contactbase_has_word: `word` occurs in `text` with no letter or digit just
    before or after it."""
    if text is None or word is None:
        return None
    at = text.find(word)
    while at >= 0:
        end = at + len(word)
        if not (at > 0 and is_word_character(text[at - 1])) and not (
            end < len(text) and is_word_character(text[end])
        ):
            return 1
        at = text.find(word, at + 1)
    return 0


class Folded(FunctionElement[str]):
    """A text folded as fold_case folds it."""

    type = Text()
    inherit_cache = True


@compiles(Folded, "postgresql")
def _fold_on_postgresql(element: Folded, compiler: SQLCompiler, **kw: Any) -> str:
    # ICU's mappings, not the C library's under the database's LC_CTYPE (ASCII only for C).
    text = compiler.process(element.clauses, **kw)
    folded = f'lower(upper(lower(({text}) COLLATE "und-x-icu")))'
    return f"replace({folded}, '{FINAL_SIGMA}', '{SIGMA}')"


@compiles(Folded, "sqlite")
def _fold_on_sqlite(element: Folded, compiler: SQLCompiler, **kw: Any) -> str:
    return f"contactbase_fold({compiler.process(element.clauses, **kw)})"


class Position(FunctionElement[int]):
    """Where the second text first occurs in the first, counted from 1; 0 when it does not."""

    type = Integer()
    inherit_cache = True


@compiles(Position, "postgresql")
def _position_on_postgresql(element: Position, compiler: SQLCompiler, **kw: Any) -> str:
    return f"strpos({compiler.process(element.clauses, **kw)})"


@compiles(Position, "sqlite")
def _position_on_sqlite(element: Position, compiler: SQLCompiler, **kw: Any) -> str:
    return f"instr({compiler.process(element.clauses, **kw)})"


class HasWord(FunctionElement[bool]):
    """has_word(text, word), given as (text, word, pattern): SQLite's function takes the word,
    PostgreSQL the regular expression that finds it."""

    type = Boolean()
    inherit_cache = True


@compiles(HasWord, "postgresql")
def _has_word_on_postgresql(element: HasWord, compiler: SQLCompiler, **kw: Any) -> str:
    text, _word, pattern = element.clauses
    return f"({compiler.process(text, **kw)}) ~ ({compiler.process(pattern, **kw)})"


@compiles(HasWord, "sqlite")
def _has_word_on_sqlite(element: HasWord, compiler: SQLCompiler, **kw: Any) -> str:
    text, word, _pattern = element.clauses
    return f"contactbase_has_word({compiler.process(text, **kw)}, {compiler.process(word, **kw)})"


# The characters that are not themselves in a regular expression (PostgreSQL's ARE), outside a
# bracket expression; a backslash before any of them makes it plain.
REGEX_SPECIAL = re.compile(r"([\\^$.|?*+()\[\]{}])")
NOT_A_WORD_CHARACTER = "[^[:alnum:]]"
# U+0001 cannot be in a slot nor in a value (control characters are refused): put after both, it
# ties an occurrence to the end.
END = "\x01"


def _text_clause(column: Any, operator: str, value: str) -> ColumnElement[bool]:
    folded, sought = Folded(column), Folded(literal(value, Text))
    if operator == "equal_to":
        return folded == sought
    if operator == "not_equal_to":
        return folded != sought
    if operator == "contains":  # "" occurs in every text: it matches every set value
        return Position(folded, sought) > 0
    if operator == "not_contains":
        return Position(folded, sought) == 0
    if operator == "starts_with":  # the first occurrence is at 1 exactly when it starts there
        return Position(folded, sought) == 1
    if operator == "ends_with":
        return Position(folded + END, sought + END) > 0
    assert operator == "contains_word", operator
    # The pattern is folded in the database like the text; escaping and the brackets are ASCII
    # punctuation and lower-case letters, which folding leaves as they are.
    escaped = REGEX_SPECIAL.sub(r"\\\1", value)
    pattern = f"(^|{NOT_A_WORD_CHARACTER}){escaped}($|{NOT_A_WORD_CHARACTER})"
    return HasWord(folded, sought, Folded(literal(pattern, Text)))


COMPARISONS = {
    "equal_to": eq,
    "not_equal_to": ne,
    "greater_than": gt,
    "greater_than_or_equal_to": ge,
    "less_than": lt,
    "less_than_or_equal_to": le,
}


FIRST_DAY, LAST_DAY = date.min.toordinal(), date.max.toordinal()
# Texts just outside the calendar, in the stored forms: they sort before or after every date
# and every date-time a slot holds.
BEFORE_EVERY_DATE, AFTER_EVERY_DATE = "0000-12-31", "9999-12-32"
BEFORE_EVERY_INSTANT, AFTER_EVERY_INSTANT = "0000-12-31T00:00:00Z", "9999-12-31T24:00:00Z"


def _day_text(day: int) -> str:
    """The day (an ordinal) as a stored date is written."""
    if day < FIRST_DAY:
        return BEFORE_EVERY_DATE
    if day > LAST_DAY:
        return AFTER_EVERY_DATE
    return date.fromordinal(day).isoformat()


def _day_start(day: int, zone: ZoneInfo) -> str:
    """The first instant of the day (an ordinal) in `zone`, as a stored date-time is written.
    Midnight with fold=0 is the day's first instant even where the clocks skip or repeat it.
    Days beyond the calendar's ends take the offset of the nearest day in it (east of UTC the
    day after the last starts on 9999-12-31)."""
    near = date.fromordinal(min(max(day, FIRST_DAY), LAST_DAY))
    local = datetime.combine(near, time(), zone)
    offset = local.utcoffset() or timedelta()
    try:
        moment = local.replace(tzinfo=None) - offset + timedelta(days=day - near.toordinal())
    except OverflowError:
        return BEFORE_EVERY_INSTANT if day <= FIRST_DAY else AFTER_EVERY_INSTANT
    return moment.isoformat(timespec="seconds") + "Z"


def _date_clause(
    column: Any, first: int | None, after: int | None, zone: ZoneInfo
) -> ColumnElement[bool]:
    """The slot's date (a date-time's in `zone`) lies in the days [first, after) (ordinals;
    None: unbounded). The two stored forms are told apart by their length, and each is
    compared as text with bounds written in its own form: ranges an index on the slot serves."""
    dates, moments = [func.length(column) == 10], [func.length(column) > 10]
    if first is not None:
        dates.append(column >= _day_text(first))
        moments.append(column >= _day_start(first, zone))
    if after is not None:
        dates.append(column < _day_text(after))
        moments.append(column < _day_start(after, zone))
    return or_(and_(*dates), and_(*moments))


def _days_of(condition: Condition, today: date) -> tuple[int | None, int | None]:
    """The days a date condition asks for, as [first, after) ordinals; None: unbounded."""
    operator, value = condition.operator, condition.value
    if operator in AGES:
        day = today.toordinal() - int(value)
        return {
            "age_equal_to": (day, day + 1),
            "age_greater_than": (None, day),
            "age_less_than": (day + 1, None),
        }[operator]
    if operator == "between":
        start, end = (
            date.fromisoformat(str(condition.start)),
            date.fromisoformat(str(condition.end)),
        )
        return start.toordinal(), end.toordinal() + 1
    day = date.fromisoformat(str(value)).toordinal()
    return {
        "equal_to": (day, day + 1),
        "greater_than": (day + 1, None),
        "less_than": (None, day),
    }[operator]


def where(conditions: Sequence[Condition], timezone: str, today: date) -> list[ColumnElement[bool]]:
    """One clause over Contact's slots per condition, for the caller to AND into its query.
    `timezone` is the Space's and `today` the date there: a date-time's day and the ages are
    read in it."""
    zone = ZoneInfo(timezone)
    clauses: list[ColumnElement[bool]] = []
    for condition in conditions:
        column = getattr(Contact, condition.field)
        operator = condition.operator
        if operator == "any":
            clauses.append(column.is_not(None))
        elif operator == "unknown":
            clauses.append(column.is_(None))
        elif condition.slot_type == "text":
            clauses.append(_text_clause(column, operator, condition.value))
        elif condition.slot_type == "number":
            clauses.append(COMPARISONS[operator](column, condition.value))
        else:
            first, after = _days_of(condition, today)
            clauses.append(_date_clause(column, first, after, zone))
    return clauses
