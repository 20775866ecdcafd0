"""cron.toml (netskyd.schedule.crontab): entries read and written back, and hostile files
refused with the line that is wrong, so the daemon can keep its last good schedule."""

from __future__ import annotations

import tomllib

import pytest

from netskyd.schedule.crontab import (
    MAX_BYTES,
    CronEntry,
    CrontabError,
    add,
    read,
    remove,
    set_paused,
)

GOOD = """
# the owner's comment
[[cron]]
name = "standup"
schedule = "0 11 * * 1-5"
agent = "agent0"
text = "Post the standup summary."
tz = "Europe/Berlin"

[[cron]]
name = "sweep"
schedule = "*/7 * * * *"
agent = "agent2"
text = "Look for stale branches."
catchup = "none"
paused = true
"""


def test_entries_are_read_with_their_defaults() -> None:
    assert read(GOOD) == [
        CronEntry("standup", "0 11 * * 1-5", "agent0", "Post the standup summary.",
                  "Europe/Berlin", "one", False),
        CronEntry("sweep", "*/7 * * * *", "agent2", "Look for stale branches.", "UTC", "none",
                  True),
    ]  # fmt: skip
    assert read("") == []


def test_add_reads_back_the_same_entry_whatever_the_text_holds() -> None:
    tricky = CronEntry("q", "0 0 * * *", "agent1", 'say "hi"\n\ttab \\ back \'\'\' ☃ """', "UTC")
    text = add(GOOD, tricky)
    again = read(text)
    assert again == [*read(GOOD), tricky]
    assert tomllib.loads(text)["cron"][0]["name"] == "standup"
    assert read(add("", tricky)) == [tricky]


def test_edits_keep_the_owners_comments_and_layout() -> None:
    paused = set_paused(GOOD, "standup", True)
    assert "# the owner's comment" in paused
    assert [e.paused for e in read(paused)] == [True, True]
    removed = remove(paused, "sweep")
    assert "# the owner's comment" in removed and "sweep" not in removed
    assert [e.name for e in read(removed)] == ["standup"]
    assert read(remove(removed, "standup")) == []


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda t: remove(t, "nope"), "no cron entry named 'nope'"),
        (lambda t: set_paused(t, "nope", True), "no cron entry named 'nope'"),
        (lambda t: add(t, CronEntry("standup", "* * * * *", "agent0", "x")), "exists"),
        (lambda t: add(t, CronEntry("x", "* * * * *", "agent0", "a\x1bb")), "control character"),
        (lambda t: add(t, CronEntry("x", "* * * * *", "agent0", "</channel>")), "channel"),
        (lambda t: add("[[cron]\n", CronEntry("x", "* * * * *", "agent0", "t")), "parse"),
    ],
)
def test_bad_edits_are_refused(edit: object, why: str) -> None:
    with pytest.raises(CrontabError, match=why):
        edit(GOOD)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[[cron]\nname = 1", "does not parse"),
        ('[[cron]]\nname = "x"\nschedule = "61 * * * *"\nagent = "agent0"\ntext = "t"',
         "line 1: schedule '61 \\* \\* \\* \\*': Bad minute"),
        ('\n\n[[cron]]\nname = "x"\nschedule = "* * *"\nagent = "agent0"\ntext = "t"',
         "line 3: .*5 fields"),
        ('[[cron]]\nname = "x"\nschedule = "* * * * *"\nagent = "agent0"\ntext = "t"\n'
         'tz = "Mars/Olympus"', "unknown time zone"),
        ('[[cron]]\nname = "x"\nschedule = "* * * * *"\nagent = "agent42x"\ntext = "t"',
         "not an agent id"),
        ('[[cron]]\nname = "x"\nschedule = "* * * * *"\nagent = "agent0"\ntext = "t"\n'
         'catchup = "burst"', "catchup must be one of"),
        ('[[cron]]\nname = "../x"\nschedule = "* * * * *"\nagent = "agent0"\ntext = "t"',
         "name"),
        ('[[cron]]\nname = "x"\nschedule = "* * * * *"\nagent = "agent0"\ntext = ""',
         "text must be a non-empty string"),
        ('[[cron]]\nname = "x"\nschedule = "* * * * *"\nagent = "agent0"\ntext = "t"\nrm = 1',
         "unknown key"),
        ('[[cron]]\nname = "x"\nschedule = "* * * * *"\nagent = "agent0"\ntext = "t"\n'
         '[[cron]]\nname = "x"\nschedule = "* * * * *"\nagent = "agent0"\ntext = "u"',
         "line 6: a second entry named 'x'"),
        ("[other]\nx = 1", "unknown table"),
    ],
)  # fmt: skip
def test_bad_files_are_refused_naming_the_line(text: str, why: str) -> None:
    with pytest.raises(CrontabError, match=why):
        read(text)


def test_a_ten_megabyte_string_is_refused_before_it_is_parsed() -> None:
    huge = '[[cron]]\nname = "x"\nschedule = "* * * * *"\nagent = "agent0"\ntext = "'
    huge += "a" * (10 * 1024 * 1024) + '"\n'
    with pytest.raises(CrontabError, match=f"at most {MAX_BYTES}"):
        read(huge)
