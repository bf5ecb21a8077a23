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
