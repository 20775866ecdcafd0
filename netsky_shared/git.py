"""What the client and the daemon agree on about running git (stdlib only).

``GIT_REPO_VARS``: environment variables that would point a git command at another
repository, work tree or index than the one it is run in; netsky drops them from every git
call it makes (netskyd.work.git; ``netskyctl doctor``'s work-loop checks).
"""

from __future__ import annotations

GIT_REPO_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
)


def without_repo_vars(environ: dict[str, str]) -> dict[str, str]:
    """A copy of ``environ`` without ``GIT_REPO_VARS``."""
    return {k: v for k, v in environ.items() if k not in GIT_REPO_VARS}
