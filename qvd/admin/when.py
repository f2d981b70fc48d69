"""Expiration dates the way the manual writes them: the formats of ``at(1)``.

    now | now + 2 hours | tomorrow | tomorrow 18:00 | 18:00 tomorrow | noon | 4pm
    teatime + 1 day | 10:30 AM Dec 31 | 18:00 12/31/2026 | 31.12.2026 | 2026-12-31 18:00
    2026-12-31T18:00 | never

A time of day is ``HH:MM``, ``HHMM``, ``H am|pm``, ``midnight``, ``noon`` or
``teatime`` (16:00); without a date, a time already past today means
tomorrow, as ``at`` does.  A date is ``today``, ``tomorrow``, ``<month name>
<day> [year]``, ``MMDD[CC]YY``, ``MM/DD/[CC]YY``, ``DD.MM.[CC]YY`` or
``[CC]YY-MM-DD``, before or after the time; a date alone is its midnight
(``today`` and ``tomorrow`` alone: now, and this time tomorrow).  ``+ N
minutes|hours|days|weeks`` (singular too) adds to any of them.  ``never``
(``none``, empty) clears the date.  ``now`` is QVD-DB's clock, which the HKD
compares the dates with.
"""

from __future__ import annotations

import datetime
import re
from typing import Optional

MONTHS = {name: number for number, names in enumerate(
    (("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
     ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
     ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
     ("dec", "december")), start=1) for name in names}
NAMED_TIMES = {"midnight": (0, 0), "noon": (12, 0), "teatime": (16, 0)}
UNITS = {"minute": 60, "min": 60, "hour": 3600, "day": 86400, "week": 604800}
NEVER = ("", "never", "none")
# MMDD[CC]YY, MM/DD/[CC]YY, DD.MM.[CC]YY, [CC]YY-MM-DD: the pattern and its parts' order
NUMERIC_DATES = ((r"(\d\d)(\d\d)(\d\d|\d{4})", "mdy"),
                 (r"(\d\d?)/(\d\d?)/(\d\d|\d{4})", "mdy"),
                 (r"(\d\d?)\.(\d\d?)\.(\d\d|\d{4})", "dmy"),
                 (r"(\d\d|\d{4})-(\d\d?)-(\d\d?)", "ymd"))


class WhenError(ValueError):
    """Not a date the ``at`` formats describe."""


def _year(text: str) -> int:
    year = int(text)
    return year + 2000 if len(text) == 2 else year


def _date(words: list[str], today: datetime.date) -> Optional[tuple[datetime.date, int]]:
    """A date at the start of ``words`` and how many words it took."""
    word = words[0]
    if word == "today":
        return today, 1
    if word == "tomorrow":
        return today + datetime.timedelta(days=1), 1
    try:
        if word in MONTHS and len(words) > 1 and words[1].isdigit():
            year = today.year
            taken = 2
            if len(words) > 2 and re.fullmatch(r"\d{4}", words[2]):
                year, taken = int(words[2]), 3
            return datetime.date(year, MONTHS[word], int(words[1])), taken
        for pattern, order in NUMERIC_DATES:
            match = re.fullmatch(pattern, word)
            if match:
                parts = dict(zip(order, match.groups()))
                return datetime.date(_year(parts["y"]), int(parts["m"]), int(parts["d"])), 1
    except ValueError as e:  # e.g. February 30
        raise WhenError(f"no such date: {' '.join(words)} ({e})") from None
    return None


def _time(words: list[str]) -> Optional[tuple[int, int, int]]:
    """(hour, minute, words taken) of a time of day at the start of ``words``."""
    word = words[0]
    if word in NAMED_TIMES:
        return (*NAMED_TIMES[word], 1)
    match = re.fullmatch(r"(\d\d?):(\d\d)|(\d\d)(\d\d)|(\d\d?)", word)
    if not match:
        return None
    suffix = words[1] if len(words) > 1 and words[1] in ("am", "pm") else None
    if match.group(5) is not None and suffix is None:
        return None  # a bare number is not a time
    hour = int(match.group(1) or match.group(3) or match.group(5))
    minute = int(match.group(2) or match.group(4) or 0)
    if suffix is not None:
        if not 1 <= hour <= 12:
            raise WhenError(f"{word} {suffix}: hours go from 1 to 12 with am/pm")
        hour = hour % 12 + (12 if suffix == "pm" else 0)
    if hour > 23 or minute > 59:
        raise WhenError(f"no such time of day: {word}")
    return hour, minute, 2 if suffix else 1


def _increment(words: list[str], text: str) -> datetime.timedelta:
    if len(words) != 2 or not words[0].isdigit():
        raise WhenError(f"{text!r}: after '+' give a count and minutes, hours, days or weeks")
    unit = words[1].rstrip("s")
    if unit not in UNITS:
        raise WhenError(f"{text!r}: {words[1]} is not minutes, hours, days or weeks")
    return datetime.timedelta(seconds=int(words[0]) * UNITS[unit])


def _words(text: str) -> list[str]:
    text = text.strip().lower()
    text = re.sub(r"\+", " + ", text)
    text = re.sub(r"(\d)(am|pm|minutes?|mins?|hours?|days?|weeks?)\b", r"\1 \2", text)
    return text.split()


def parse_when(text: str, now: datetime.datetime) -> Optional[datetime.datetime]:
    """The date ``text`` names, seen at ``now``; None for ``never``."""
    if text.strip().lower() in NEVER:
        return None
    try:
        return datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        pass
    words = _words(text)
    increment = datetime.timedelta()
    if "+" in words:
        plus = words.index("+")
        increment = _increment(words[plus + 1:], text)
        words = words[:plus]
    base = now
    if words and words != ["now"]:
        base = _absolute(words, text, now)
    return base + increment


def _absolute(words: list[str], text: str, now: datetime.datetime) -> datetime.datetime:
    date: Optional[datetime.date] = None
    clock: Optional[tuple[int, int]] = None
    relative_day = words in (["today"], ["tomorrow"])
    while words:
        found_time = _time(words) if clock is None else None
        if found_time is not None:
            clock, words = found_time[:2], words[found_time[2]:]
            continue
        found_date = _date(words, now.date()) if date is None else None
        if found_date is not None:
            date, words = found_date[0], words[found_date[1]:]
            continue
        raise WhenError(f"{text!r} is not a date: use e.g. now + 2 hours, tomorrow 18:00,"
                        f" 18:00 12/31/2026 or 2026-12-31T18:00")
    if relative_day:
        assert date is not None
        return datetime.datetime.combine(date, now.time())
    if clock is None:
        assert date is not None
        return datetime.datetime.combine(date, datetime.time())
    moment = datetime.datetime.combine(date or now.date(), datetime.time(*clock))
    if date is None and moment <= now:  # a time already past today: tomorrow, as at does
        moment += datetime.timedelta(days=1)
    return moment
