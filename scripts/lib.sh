# Shared set-up steps for scripts/demo and scripts/test (sourced, not run).
# Installs what a fresh machine lacks: tmux (apt-get, or brew on macOS), dovecot for
# the IMAP tests (apt-get only) and a virtualenv in .venv with netsky and its
# dependencies from the package index.

NETSKY_PYTHON="${NETSKY_PYTHON:-python3}"
VENV="${VENV:-.venv}"

say() { printf '==> %s\n' "$*" >&2; }

ensure_tmux() {
  if command -v tmux >/dev/null 2>&1; then return 0; fi
  say "tmux is missing; installing it"
  if command -v apt-get >/dev/null 2>&1; then
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq tmux
  elif command -v brew >/dev/null 2>&1; then
    brew install tmux
  else
    say "cannot install tmux here: install it with your package manager, then re-run"
    return 1
  fi
}

ensure_systemd_analyze() {
  # The unit-file tests run `systemd-analyze verify` (Linux only; on macOS the plists
  # are checked with plistlib instead). Debian/Ubuntu ship it in the systemd package.
  if [ "$(uname -s)" != "Linux" ] || command -v systemd-analyze >/dev/null 2>&1; then
    return 0
  fi
  if command -v apt-get >/dev/null 2>&1; then
    say "systemd-analyze is missing; installing the systemd package (unit file checks)"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends systemd
  else
    say "systemd-analyze is missing and apt-get is not here: the unit-file tests will fail"
  fi
}

ensure_dovecot() {
  # The IMAP tests run a private dovecot on 127.0.0.1 (tests/imap_server.py); they are
  # skipped when /usr/sbin/dovecot is missing. Debian's postinst would start a system
  # dovecot on every interface, so a policy-rc.d that refuses service starts is put in
  # place for the install (and removed after, unless one was there already).
  if [ -x /usr/sbin/dovecot ]; then return 0; fi
  if [ "$(uname -s)" != "Linux" ] || ! command -v apt-get >/dev/null 2>&1; then
    say "dovecot is missing and apt-get is not here: the IMAP tests will be skipped"
    return 0
  fi
  say "dovecot is missing; installing dovecot-imapd (IMAP tests; no service is started)"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  local policy=/usr/sbin/policy-rc.d made_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    made_policy=1
  fi
  local rc=0
  $sudo apt-get update -qq || rc=$?
  if [ "$rc" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      dovecot-imapd || rc=$?
  fi
  if [ -n "$made_policy" ]; then $sudo rm -f "$policy"; fi
  if [ "$rc" -ne 0 ]; then
    say "installing dovecot failed: the IMAP tests will be skipped"
  elif command -v systemctl >/dev/null 2>&1; then
    # The package enables the unit too, which would start it at the next boot.
    $sudo systemctl disable dovecot.service dovecot.socket >/dev/null 2>&1 || true
  fi
  return 0
}

ensure_venv() {
  # $1: pip extras, e.g. "[dev]" (may be empty)
  local extras="${1:-}"
  if ! "$NETSKY_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    say "netsky needs Python 3.11 or newer ($NETSKY_PYTHON is $("$NETSKY_PYTHON" -V 2>&1))"
    return 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$NETSKY_PYTHON" -m venv "$VENV"
  fi
  local stamp="$VENV/.netsky-installed$extras"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing netsky$extras into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".$extras"
    touch "$stamp"
  fi
}
