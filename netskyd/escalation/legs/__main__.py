"""``python -m netskyd.escalation.legs``: run one leg from a JSON request on stdin (see
``netskyd.escalation.legs.main``)."""

from __future__ import annotations

from netskyd.escalation.legs import main

# Guarded so that importing this module (a tool walking the package) does not read stdin.
if __name__ == "__main__":
    main()
