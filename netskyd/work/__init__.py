"""The work loop: agent0 briefs a clone into a fresh git clone of its own, the clone reports
a commit, netsky harvests it onto the target branch behind the check (docs/work.md).

- ``names`` (pure): workspace names, branches, clone numbers.
- ``git``: every git call, each with a deadline.
- ``workspaces``: creating, inspecting and removing ``workspaces/<name>/repo``.
- ``harvest``: fetch, apply in a scratch worktree, check, move the target only on green.
- ``loop``: the daemon component (``WorkLoop``) behind ``netskyctl clone ...`` and
  ``netskyctl harvest``; it records ``clone_dispatches`` and ``harvests`` rows. Its
  briefing half is ``briefing`` (the ``Briefing`` mixin).
"""
