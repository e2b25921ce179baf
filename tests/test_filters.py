"""Search filters: the periods --since and --until name, and what a filter refuses."""

from __future__ import annotations

import os
from datetime import datetime

import pytest

from index import QueryError
from index.filters import SearchFilter, period


@pytest.mark.parametrize("text, start, end", [
    ("2024-06-15", datetime(2024, 6, 15), datetime(2024, 6, 16)),
    ("2024-02-29", datetime(2024, 2, 29), datetime(2024, 3, 1)),  # a leap day
    ("2023-12-31", datetime(2023, 12, 31), datetime(2024, 1, 1)),
    ("2024-02", datetime(2024, 2, 1), datetime(2024, 3, 1)),
    ("2024-12", datetime(2024, 12, 1), datetime(2025, 1, 1)),  # December runs into the next year
    (" 2024-6 ", datetime(2024, 6, 1), datetime(2024, 7, 1)),
    ("2023", datetime(2023, 1, 1), datetime(2024, 1, 1)),
    ("9999", datetime(9999, 1, 1), datetime.max), ("9999-12-31", datetime(9999, 12, 31), datetime.max),
])
def test_period_is_the_day_month_or_year_named(text, start, end):
    assert period(text) == (start, end)


@pytest.mark.parametrize("text", ["2024-13", "2023-02-29", "June 2024", "24-06-01", "", "2024/06/01"])
def test_period_refuses_what_is_not_a_date_and_says_the_forms(text):
    with pytest.raises(QueryError, match=r"since .* is not a date: give a day, month or year as YYYY-MM-DD"):
        period(text, "since")


def test_filter_of_a_search_includes_both_ends_and_normalises_the_rest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    only = SearchFilter.of("photos", since="2024-06", until="2024-08", camera="  Pixel 8 ")
    assert only == SearchFilter((os.path.join(str(tmp_path), "photos"),), "2024-06-01T00:00:00",
                                "2024-09-01T00:00:00", "Pixel 8")  # August included
    assert SearchFilter.of(until="2024-08-31").taken_before == "2024-09-01T00:00:00"
    assert SearchFilter.of(since="2024-08-31", until="2024-08-31")  # one day
    assert not SearchFilter.of() and not SearchFilter.of(camera="   ")


def test_an_empty_date_range_is_refused():
    with pytest.raises(ValueError, match="the date range is empty"):
        SearchFilter.of(since="2024-09", until="2024-08")
    with pytest.raises(ValueError, match=r"until .*2024-8-x.* is not a date"):
        SearchFilter.of(since="2024-01", until="2024-8-x")
