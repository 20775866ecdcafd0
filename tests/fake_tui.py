"""A stand-in TUI for tests: draws a screen from a file and records every key it gets.

Usage (as a runtime's command; unknown arguments, such as Claude Code's
``--append-system-prompt-file``, are ignored)::

    python tests/fake_tui.py --screen SCREEN.txt --keys KEYS.log

The terminal goes into raw mode (no echo, no line editing), the screen is drawn
once, and each byte read from the terminal is appended to ``KEYS.log`` as it
arrives, so a test can tell exactly which keys netsky sent (none, for a dialog it
must not answer). It exits on SIGTERM or when its terminal closes.
"""

from __future__ import annotations

import argparse
import os
import sys
import termios
import tty


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--screen", required=True)
    parser.add_argument("--keys", required=True)
    args, _ = parser.parse_known_args()
    with open(args.screen, encoding="utf-8") as f:
        screen = f.read()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    if saved is not None:
        tty.setraw(fd)
    try:
        sys.stdout.write("\x1b[2J\x1b[H" + screen.replace("\n", "\r\n"))
        sys.stdout.flush()
        with open(args.keys, "ab", buffering=0) as log:
            while True:
                data = os.read(fd, 1024)
                if not data:
                    return 0
                log.write(data)
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


if __name__ == "__main__":
    raise SystemExit(main())
