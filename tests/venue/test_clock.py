"""The market clock: NYSE holidays, early closes, weekends; and the always-open mode."""

from __future__ import annotations

from datetime import date, datetime

from stockade.venue.clock import NEW_YORK, MarketClock, nyse_early_closes, nyse_holidays, settlement_date


def ny_ns(*args: int) -> int:
    return int(datetime(*args, tzinfo=NEW_YORK).timestamp()) * 1_000_000_000


def ny(ts_ns: int) -> datetime:
    return datetime.fromtimestamp(ts_ns / 1e9, NEW_YORK).replace(tzinfo=None)


NYSE = MarketClock("nyse")


def test_holidays_2025():
    assert nyse_holidays(2025) == {
        date(2025, 1, 1),
        date(2025, 1, 9),  # New Year's; national day of mourning (Carter)
        date(2025, 1, 20),
        date(2025, 2, 17),
        date(2025, 4, 18),
        date(2025, 5, 26),
        date(2025, 6, 19),
        date(2025, 7, 4),
        date(2025, 9, 1),
        date(2025, 11, 27),
        date(2025, 12, 25),
    }


def test_holidays_2026_with_weekend_observance():
    assert nyse_holidays(2026) == {
        date(2026, 1, 1),
        date(2026, 1, 19),
        date(2026, 2, 16),
        date(2026, 4, 3),
        date(2026, 5, 25),
        date(2026, 6, 19),
        date(2026, 7, 3),  # July 4th is a Saturday: observed Friday
        date(2026, 9, 7),
        date(2026, 11, 26),
        date(2026, 12, 25),
    }
    # A Saturday New Year's Day is not moved back into the old year.
    assert date(2022, 1, 1).weekday() == 5 and date(2021, 12, 31) not in nyse_holidays(2021)
    assert NYSE.session(date(2021, 12, 31)) is not None
    # Juneteenth on a Sunday is observed Monday; before 2022 it was no holiday.
    assert date(2022, 6, 20) in nyse_holidays(2022) and date(2021, 6, 18) not in nyse_holidays(2021)


def test_early_closes():
    assert nyse_early_closes(2025) == {date(2025, 7, 3), date(2025, 11, 28), date(2025, 12, 24)}
    assert nyse_early_closes(2026) == {date(2026, 11, 27), date(2026, 12, 24)}  # July 3rd is the holiday
    assert nyse_early_closes(2023) == {date(2023, 7, 3), date(2023, 11, 24)}  # Christmas Eve a Sunday
    session = NYSE.session(date(2025, 11, 28))
    assert session.early_close and session.close.hour == 13
    assert NYSE.is_open(ny_ns(2025, 11, 28, 12, 59)) and not NYSE.is_open(ny_ns(2025, 11, 28, 13, 0))
    assert ny(NYSE.next_close(ny_ns(2025, 12, 24, 10, 0))) == datetime(2025, 12, 24, 13, 0)


def test_regular_hours_and_weekends():
    assert not NYSE.is_open(ny_ns(2025, 3, 4, 9, 29, 59))
    assert NYSE.is_open(ny_ns(2025, 3, 4, 9, 30))
    assert NYSE.is_open(ny_ns(2025, 3, 4, 15, 59, 59))
    assert not NYSE.is_open(ny_ns(2025, 3, 4, 16, 0))
    assert not NYSE.is_open(ny_ns(2025, 3, 8, 12, 0))  # Saturday
    assert not NYSE.is_open(ny_ns(2025, 4, 18, 12, 0))  # Good Friday
    assert NYSE.is_open(ny_ns(2025, 7, 7, 10, 0))  # summer time: still 09:30-16:00 New York


def test_next_open_and_close():
    friday_evening = ny_ns(2025, 1, 17, 18, 0)  # Monday the 20th is MLK day
    assert ny(NYSE.next_open(friday_evening)) == datetime(2025, 1, 21, 9, 30)
    assert ny(NYSE.next_close(friday_evening)) == datetime(2025, 1, 21, 16, 0)
    during = ny_ns(2025, 3, 4, 11, 0)
    assert ny(NYSE.next_close(during)) == datetime(2025, 3, 4, 16, 0)
    assert ny(NYSE.next_open(during)) == datetime(2025, 3, 5, 9, 30)
    before = ny_ns(2025, 3, 4, 8, 0)
    assert ny(NYSE.next_open(before)) == datetime(2025, 3, 4, 9, 30)


def test_calendar_over_the_holidays():
    days = NYSE.calendar(date(2025, 12, 22), date(2026, 1, 5))
    assert [d.date for d in days] == [
        date(2025, 12, 22),
        date(2025, 12, 23),
        date(2025, 12, 24),
        date(2025, 12, 26),
        date(2025, 12, 29),
        date(2025, 12, 30),
        date(2025, 12, 31),
        date(2026, 1, 2),
        date(2026, 1, 5),
    ]
    assert [d.close.hour for d in days] == [16, 16, 13, 16, 16, 16, 16, 16, 16]
    assert len(NYSE.calendar(date(2025, 1, 1), date(2025, 12, 31))) == 250


def test_settlement_is_t_plus_one_on_bank_days():
    assert settlement_date(date(2025, 3, 4)) == date(2025, 3, 5)
    assert settlement_date(date(2025, 10, 10)) == date(2025, 10, 14)  # Columbus Day: banks shut
    assert settlement_date(date(2024, 5, 24)) == date(2024, 5, 29)  # T+2 before 2024-05-28


def test_always_open():
    now = [ny_ns(2025, 3, 8, 3, 0)]  # a Saturday night
    clock = MarketClock("always_open", now_fn=lambda: now[0])
    assert clock.is_open() and clock.is_open(ny_ns(2025, 12, 25, 12, 0))
    assert clock.now_ns() == now[0]
    # A rolling session: the close some hours ahead (never a day), the open right after it.
    hours = (clock.next_close() - now[0]) / 3600e9
    assert 7.9 < hours <= 8.02
    assert clock.next_open() - clock.next_close() == 60 * 10**9
    now[0] += 3 * 3600 * 10**9  # three hours on, the close has rolled with the time
    assert 7.9 < (clock.next_close() - now[0]) / 3600e9 <= 8.02 and clock.is_open()
    assert len(clock.calendar(date(2025, 12, 20), date(2025, 12, 31))) == 12
