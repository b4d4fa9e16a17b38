# Shared by scripts/run and scripts/test: make .venv with Aegis installed, once.
# Sourced, not run. Re-installs only when setup.cfg/pyproject.toml change.

ensure_venv() {
    local extras="${1:-}"
    local python="${PYTHON:-python3}"
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "Aegis needs Python 3.11 or newer ($python is $("$python" -V 2>&1))." >&2
        exit 1
    fi
    if [ ! -x .venv/bin/python ]; then
        if ! "$python" -m venv .venv 2>/dev/null; then
            rm -rf .venv
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                echo "Installing python3-venv (Debian ships venv separately)..."
                apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
                "$python" -m venv .venv
            else
                echo "python3 -m venv failed: run 'sudo apt-get install -y python3-venv' first." >&2
                exit 1
            fi
        fi
    fi
    local stamp=".venv/.aegis-installed${extras:+-$extras}"
    local want
    want=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "Installing Aegis${extras:+ with [$extras]} into .venv ..."
        .venv/bin/python -m pip install -q --upgrade pip >/dev/null
        # A plain editable install: setup.cfg's package_dir makes setuptools put the
        # checkout itself on sys.path, so twistd finds twisted/plugins/aegis_plugin.py here.
        .venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
        echo "$want" > "$stamp"
    fi
}
