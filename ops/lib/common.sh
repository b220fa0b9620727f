# Shared set-up for ops/ scripts: the virtualenv and the services the project needs.
# Sourced, not run. Every function is idempotent: a fresh machine and a warm one both work.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

ensure_venv() {
  local stamp="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
  if [ ! -x "$PY" ]; then
    log "creating virtualenv at .venv"
    python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ]; then
    log "installing Sendplane and its test dependencies"
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -e "$ROOT[test]"
    rm -f "$VENV"/.installed-* && touch "$stamp"
  fi
}

# PostgreSQL runs on these machines before a session starts; start it if it stopped.
ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
  log "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && return 0; sleep 1; done
  echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2
  return 1
}

# SpamAssassin's spamd from Debian's packages, on loopback, local tests only (-L: no network).
ensure_spamd() {
  local port="${SPAMD_PORT:-783}"
  if ! command -v spamd >/dev/null 2>&1; then
    log "installing Debian's spamd and spamassassin"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q spamd spamassassin >/dev/null 2>&1 || {
      apt-get update -q >/dev/null 2>&1 && apt-get install -y -q spamd spamassassin >/dev/null
    }
  fi
  if spamc -p "$port" -K >/dev/null 2>&1 </dev/null; then return 0; fi
  log "starting spamd on 127.0.0.1:$port (local tests only)"
  # A home its children (user nobody) can write, or they log a failed Bayes lock on every message.
  local home="/var/tmp/sendplane-spamd-home"
  mkdir -p "$home" && chown nobody "$home" 2>/dev/null || true
  spamd -L -d -i 127.0.0.1 -p "$port" -m 2 -u nobody -H "$home" -r "/tmp/sendplane-spamd-$port.pid" -s stderr >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do spamc -p "$port" -K >/dev/null 2>&1 </dev/null && return 0; sleep 1; done
  echo "spamd did not start on 127.0.0.1:$port" >&2
  return 1
}

# Debian's Chromium for the browser tests (tests/browser/): Playwright drives /usr/bin/chromium and downloads no browser.
ensure_chromium() {
  if [ -x /usr/bin/chromium ]; then return 0; fi
  log "installing Debian's chromium (browser tests)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 || {
    apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null
  }
}
