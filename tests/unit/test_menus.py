"""Menus read by shape (``netskyd.runtimes.screen.parse_menu``) and the ``unknown`` dialog.

Table tests on small screens; the recorded screens of every release go through the
same code in tests/unit/test_catalogue.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netskyd.activity.classify import Activity, Observation, classify, read_screen
from netskyd.activity.dialogs import NoPlan, detect, plan
from netskyd.config import Runtime
from netskyd.runtimes.screen import parse_menu

RULE = "─" * 60

# Claude Code 2.1.332's folder trust: no numbers, and the refusing answer preselected.
TRUST_UNNUMBERED = f"""\
{RULE}
 Accessing workspace:

 /tmp/work

 Quick safety check: Is this a project you created or one you trust? (Like your own code, a
 well-known open source project, or work from your team).

 Security guide

 ❯ No, exit
   Yes, I trust this folder

 Enter to confirm · Esc to cancel
"""

UNKNOWN = f"""\
 ▐▛███▜▌   Claude Code v9.9.9
{RULE}
  Something new: pick a mode

  ❯ Fast
      (descriptions indented deeper are not options)
    Careful
    Off

  Enter to select · ↑/↓ to navigate · Esc to cancel
"""


def test_an_unnumbered_menu_is_read_by_its_shape() -> None:
    menu = parse_menu(TRUST_UNNUMBERED.splitlines())
    assert menu is not None
    assert [o.label for o in menu.options] == ["No, exit", "Yes, I trust this folder"]
    assert [o.number for o in menu.options] == [None, None]
    assert menu.highlighted is not None and menu.highlighted.label == "No, exit"
    assert menu.footer == "Enter to confirm · Esc to cancel"
    assert not menu.numbered


def test_a_numbered_menu_keeps_its_numbers_out_of_the_labels() -> None:
    lines = [" Do you want to proceed?", " ❯ 1. Yes", "   2. No", "", " Esc to cancel"]
    menu = parse_menu(lines)
    assert menu is not None and menu.numbered
    assert [(o.number, o.label) for o in menu.options] == [(1, "Yes"), (2, "No")]


def test_the_known_dialog_is_named_and_answered_by_label_without_numbers() -> None:
    dialog = detect(Runtime.CLAUDE, TRUST_UNNUMBERED)
    assert dialog is not None and dialog.name == "claude.folder-trust"
    assert plan(dialog, "approve").to_json()["keys"] == ["Down", "Enter"]
    assert plan(dialog, "deny").to_json()["keys"] == ["Enter"]


def test_a_menu_no_entry_names_is_the_unknown_dialog_never_answered() -> None:
    dialog = detect(Runtime.CLAUDE, UNKNOWN)
    assert dialog is not None and dialog.name == "unknown"
    assert [o.label for o in dialog.options] == ["Fast", "Careful", "Off"]
    assert "  Something new: pick a mode" in dialog.lines
    for action in ("approve", "deny"):
        with pytest.raises(NoPlan):
            plan(dialog, action)
    facts = read_screen(Runtime.CLAUDE, UNKNOWN)
    obs = Observation(
        agent="agent3",
        runtime=Runtime.CLAUDE,
        now=10_000.0,
        alive=True,
        screen=UNKNOWN,
        facts=facts,
        dialog=dialog,
        fp_changed_at=0.0,  # unchanged for hours, with work pending: still waiting, not hung
        inbox=3,
    )
    verdict = classify(obs)
    assert verdict.activity is Activity.WAITING
    assert verdict.evidence["dialog"]["name"] == "unknown"


@pytest.mark.parametrize(
    ("runtime", "screen"),
    [
        # Claude's idle composer, its transcript's earlier prompt, a numbered list in a reply.
        (
            Runtime.CLAUDE,
            f"❯ pick a database\n{RULE}\n● Sure.\n{RULE}\n❯ \n{RULE}\n  ⏵⏵ auto mode on",
        ),
        (Runtime.CLAUDE, "● Options:\n  1. Foo\n  2. Bar\n\n" + f"{RULE}\n❯ \n{RULE}\n"),
        # A marked list with a footer, but the composer under it: transcript, not a dialog.
        (
            Runtime.CLAUDE,
            "  ❯ one\n    two\n\n  Enter to confirm · Esc to cancel\n" + f"{RULE}\n❯ \n{RULE}\n",
        ),
        # A marked menu with no confirm footer: not the whole shape.
        (Runtime.CLAUDE, f"{RULE}\n  ❯ one\n    two\n\n  something else\n"),
        # Codex's composer with its placeholder, and its footer.
        (
            Runtime.CODEX,
            "› Ask Codex to do anything\n\n  GPT-6.1-Sol default · /tmp/w\n"
            "  ← for agents · ? for shortcuts",
        ),
        # No catalogue, no unknown dialogs: a shell's own menus are its business.
        (Runtime.SHELL, "  ❯ one\n    two\n\n  Enter to confirm · Esc to cancel\n"),
    ],
)
def test_no_dialog_where_the_shape_is_incomplete(runtime: Runtime, screen: str) -> None:
    assert detect(runtime, screen) is None


def test_boxed_menus_keep_their_columns() -> None:
    lines = [
        "╭──────────────────────────╮",
        "│ Pick one                 │",
        "│  › Trust and continue    │",
        "│    Back                  │",
        "│  enter continue · esc back│",
        "╰──────────────────────────╯",
    ]
    menu = parse_menu(lines)
    assert menu is not None
    assert [o.label for o in menu.options] == ["Trust and continue", "Back"]
    assert menu.footer is not None


SCREENS = Path(__file__).resolve().parents[1] / "screens"


@pytest.mark.parametrize("version", ["0.169.0", "0.171.0"])
def test_codex_readiness_does_not_hang_on_one_footer(version: str) -> None:
    """A ready Codex with its footer reworded (here: the bare "? for shortcuts" that
    marks the starting screen) is still at its prompt, by its status line; the real
    starting screen, which has no status line, is not."""
    idle = (SCREENS / f"codex-{version}" / "idle.100x30.txt").read_text(encoding="utf-8")
    footer = next(ln for ln in idle.splitlines() if "? for shortcuts" in ln)
    reworded = idle.replace(footer, "  ? for shortcuts")
    assert read_screen(Runtime.CODEX, reworded).at_prompt
    assert read_screen(Runtime.CODEX, idle.replace(footer, "")).at_prompt
    starting = (SCREENS / f"codex-{version}" / "starting.100x30.txt").read_text(encoding="utf-8")
    assert not read_screen(Runtime.CODEX, starting).at_prompt
