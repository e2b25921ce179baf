"""Which indexed photos a search may return: by folder, by when they were taken, by the camera that took them.

`SearchFilter` holds the conditions; `Database` turns them into SQL over the `files` table, and
`PhotoIndex.search` keeps the best matches whose files pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

from .errors import QueryError

# What `--since` / `--until` accept, most specific first, with the period each names.
_DATE_FORMATS = (("%Y-%m-%d", "day"), ("%Y-%m", "month"), ("%Y", "year"))


@dataclass(frozen=True)
class SearchFilter:
    """Conditions on the files a search may return; each one left empty applies no condition.

    The dates compare with the EXIF date taken (`IndexedFile.taken_at`, the camera's local time, as ISO 8601):
    a file without one is left out of any search with a date condition.
    """

    folders: tuple[str, ...] = ()  # absolute folders: files at or under any of them
    taken_from: str | None = None  # ISO 8601 date-time: taken at or after it
    taken_before: str | None = None  # ISO 8601 date-time: taken before it
    camera: str | None = None  # part of the EXIF make and model, any case: "pixel", "canon eos"

    def __post_init__(self) -> None:
        if self.taken_from and self.taken_before and self.taken_from >= self.taken_before:
            raise QueryError(f"No date is both at or after {self.taken_from} and before {self.taken_before}: "
                             f"the date range is empty")

    def __bool__(self) -> bool:
        return bool(self.folders or self.taken_from or self.taken_before or self.camera)

    @classmethod
    def of(cls, under: str | os.PathLike | None = None, since: str | None = None, until: str | None = None,
           camera: str | None = None) -> SearchFilter:
        """The filter a search's arguments ask for: files `under` a folder, taken `since` the start of a period
        and `until` its end (each YYYY, YYYY-MM or YYYY-MM-DD; both included), by a `camera`."""
        folders = (os.path.abspath(os.path.expanduser(under)),) if under is not None else ()
        taken_from = period(since, "since")[0].isoformat() if since else None
        taken_before = period(until, "until")[1].isoformat() if until else None
        return cls(folders, taken_from, taken_before, (camera.strip() or None) if camera else None)


def period(text: str, name: str = "date") -> tuple[datetime, datetime]:
    """(first instant, first instant after) of the day, month or year `text` names (YYYY-MM-DD, YYYY-MM or YYYY).

    QueryError, naming `name` and the forms it takes, for anything else. The end of year 9999 is datetime.max.
    """
    text = text.strip()
    for form, unit in _DATE_FORMATS:
        try:
            start = datetime.strptime(text, form)
        except ValueError:
            continue
        try:
            if unit == "day":
                return start, datetime.fromordinal(start.toordinal() + 1)
            if unit == "month":
                return start, start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
            return start, start.replace(year=start.year + 1)
        except ValueError:  # past year 9999
            return start, datetime.max
    raise QueryError(f"{name} {text!r} is not a date: give a day, month or year as YYYY-MM-DD, YYYY-MM or YYYY "
                     f"(e.g. 2024-06)")
