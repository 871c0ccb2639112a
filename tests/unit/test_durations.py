"""Slurm walltime values, as sbatch --time accepts them."""

from __future__ import annotations

import pytest

from sh_jupyter.durations import format_walltime, parse_walltime

MIN, HOUR, DAY = 60, 3600, 86400


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90 * MIN),  # M: minutes
        ("1", 1 * MIN),
        ("1:30", 1 * MIN + 30),  # M:S
        ("6:00:00", 6 * HOUR),  # H:M:S
        ("06:00:00", 6 * HOUR),
        ("0:0:1", 1),
        ("1-00:00:00", DAY),  # D-H:M:S
        ("2-12", 2 * DAY + 12 * HOUR),  # D-H
        ("1-2:03", DAY + 2 * HOUR + 3 * MIN),  # D-H:M
        ("1-2:03:04", DAY + 2 * HOUR + 3 * MIN + 4),
        ("0-1", HOUR),
        ("  6:00:00 ", 6 * HOUR),
        ("36:00:00", 36 * HOUR),
    ],
)
def test_parse(text: str, seconds: int) -> None:
    assert parse_walltime(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["0", "00", "0:00", "0:00:00", "0-0", "0-00:00:00", "", " ", "abc", "1:2:3:4", "-1",
     "-1:00:00", "1-", "-", "1:", ":30", "1.5", "1h", "1-2-3", "1 :00", "+5", "6:00:00x"],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_walltime(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1, "00:00:01"),
        (90, "00:01:30"),
        (6 * HOUR, "06:00:00"),
        (DAY - 1, "23:59:59"),
        (DAY, "1-00:00:00"),
        (DAY + 2 * HOUR + 3 * MIN + 4, "1-02:03:04"),
        (10 * DAY + 5, "10-00:00:05"),
        (0, "00:00:00"),
        (-5, "00:00:00"),
    ],
)
def test_format(seconds: int, text: str) -> None:
    assert format_walltime(seconds) == text


@pytest.mark.parametrize(
    "seconds",
    [1, 59, 60, 61, 3599, 3600, 21600, DAY - 1, DAY, DAY + 1, 93784, 7 * DAY + 12345],
)
def test_format_round_trips(seconds: int) -> None:
    assert parse_walltime(format_walltime(seconds)) == seconds


@pytest.mark.parametrize("text", ["06:00:00", "1-00:00:00", "1-02:03:04", "00:00:59"])
def test_parse_format_round_trips_canonical_text(text: str) -> None:
    assert format_walltime(parse_walltime(text)) == text
