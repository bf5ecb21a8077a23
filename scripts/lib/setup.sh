# Shared set-up for scripts/serve.sh and scripts/test.sh: installs what a fresh
# machine of this kind lacks. Debian packages need root (CI runs as root).

DEBIAN_PACKAGES=(librocksdb-dev libclang-dev pkg-config)

ensure_debian_packages() {
  local missing=()
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}" >&2
    if [ "$(id -u)" -ne 0 ]; then
      echo "run as root, or install them first: apt-get install ${missing[*]}" >&2
      exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

ensure_python_venv() {
  if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import slixmpp, pytest' 2>/dev/null; then
    echo "making .venv with slixmpp and pytest" >&2
    if ! python3 -m venv .venv 2>/dev/null; then
      ensure_root_install python3-venv
      python3 -m venv .venv
    fi
    .venv/bin/pip install -q --disable-pip-version-check -r tests/interop/requirements.txt
  fi
}

ensure_root_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "run as root, or install it first: apt-get install $*" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Debian's Prosody is the reference server the interop suite compares Chorus
# with (tests/interop/README.md), and openssl makes its certificate. The suite
# starts its own Prosody processes on free loopback ports with configs it
# writes; the system service the package would start (on 5222/5269/5280, where
# scripts/serve.sh listens) is kept from starting, and is stopped and disabled
# if it started anyway. Does nothing when both are installed.
ensure_prosody() {
  local missing=()
  dpkg-query -W -f='${Status}' prosody 2>/dev/null | grep -q "install ok installed" || missing+=(prosody)
  command -v openssl >/dev/null || missing+=(openssl)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "run as root, or install them first: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  local policy
  policy="$(apt-cache policy prosody 2>/dev/null || true)"
  if [[ " ${missing[*]} " == *" prosody "* ]] && ! [[ "$policy" =~ Candidate:\ [0-9] ]]; then
    echo "no prosody package in the apt sources: the interop suite skips its Prosody runs" >&2
    local keep=() p
    for p in "${missing[@]}"; do [ "$p" = prosody ] || keep+=("$p"); done
    [ ${#keep[@]} -gt 0 ] || return 0
    missing=("${keep[@]}")
  fi
  # Its service kept from starting during the install (a policy-rc.d answering 101).
  install_without_services "${missing[@]}"
  if [[ " ${missing[*]} " == *" prosody "* ]]; then
    stop_system_prosody
  fi
}

# Stops and disables the Prosody service of the Debian package, whichever init
# system runs it (or none).
stop_system_prosody() {
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl stop prosody.service >/dev/null 2>&1 || true
    systemctl disable prosody.service >/dev/null 2>&1 || true
  else
    if command -v update-rc.d >/dev/null; then
      update-rc.d prosody disable >/dev/null 2>&1 || true
    fi
    if [ -x /etc/init.d/prosody ]; then
      if command -v service >/dev/null; then
        service prosody stop >/dev/null 2>&1 || true
      else
        /etc/init.d/prosody stop >/dev/null 2>&1 || true
      fi
    fi
  fi
  # Whatever is left: the pid the system config writes (/run/prosody).
  local pidfile pid cmd
  for pidfile in /run/prosody/prosody.pid /var/run/prosody/prosody.pid; do
    [ -r "$pidfile" ] || continue
    pid="$(tr -dc 0-9 <"$pidfile")"
    cmd=""
    [ -n "$pid" ] && cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    if [[ "$cmd" == *prosody* ]]; then
      kill "$pid" 2>/dev/null || true
      for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}

# Installs Debian packages with their services kept from starting (a
# policy-rc.d answering 101 during the install; only a policy we wrote is
# removed). For servers the benchmarks run as their own processes.
install_without_services() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "run as root, or install them first: apt-get install $*" >&2
    exit 1
  fi
  apt-get update -qq
  echo "installing Debian packages: $*" >&2
  local own_policy="" status=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# written by chorus scripts/lib/setup.sh while installing %s\nexit 101\n' "$*" >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || status=$?
  if [ -n "$own_policy" ] && grep -q 'chorus scripts/lib/setup.sh' /usr/sbin/policy-rc.d 2>/dev/null; then
    rm -f /usr/sbin/policy-rc.d
  fi
  if [ "$status" -ne 0 ]; then
    echo "apt-get install $* failed ($status)" >&2
    exit "$status"
  fi
}

# Stops and disables a Debian service, whichever init system runs it (or none).
stop_system_service() {
  local name="$1"
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl stop "$name.service" >/dev/null 2>&1 || true
    systemctl disable "$name.service" >/dev/null 2>&1 || true
  else
    if command -v update-rc.d >/dev/null; then
      update-rc.d "$name" disable >/dev/null 2>&1 || true
    fi
    if [ -x "/etc/init.d/$name" ]; then
      if command -v service >/dev/null; then
        service "$name" stop >/dev/null 2>&1 || true
      else
        "/etc/init.d/$name" stop >/dev/null 2>&1 || true
      fi
    fi
  fi
}

# Debian's ejabberd, for chaos/bench/compare, which runs it as its own process
# with a config, spool and logs of its own. The system service (on 5222 and
# more) is kept from starting and disabled. Does nothing when installed.
ensure_ejabberd() {
  if ! dpkg-query -W -f='${Status}' ejabberd 2>/dev/null | grep -q "install ok installed"; then
    install_without_services ejabberd
  fi
  # Also when it was installed before, by hand or by an older script: its service
  # would take port 5222 at the next boot.
  stop_system_service ejabberd
}

# tsung, the cross-check load generator of chaos/bench/tsung/.
ensure_tsung() {
  command -v tsung >/dev/null && return 0
  install_without_services tsung
}

# The Python of chaos/bench/compare: a virtualenv (.venv-bench) that sees
# Debian's matplotlib, so the plots need no package index.
ensure_bench_venv() {
  if [ -x .venv-bench/bin/python ] && .venv-bench/bin/python -c 'import matplotlib' 2>/dev/null; then
    return 0
  fi
  if ! /usr/bin/python3 -c 'import matplotlib, venv' 2>/dev/null; then
    ensure_root_install python3-matplotlib python3-venv
  fi
  echo "making .venv-bench (matplotlib from Debian)" >&2
  rm -rf .venv-bench
  /usr/bin/python3 -m venv --system-site-packages .venv-bench
  .venv-bench/bin/python -c 'import matplotlib' || .venv-bench/bin/pip install -q --disable-pip-version-check matplotlib
}
