# Shared by the scripts: refuse to run without root, and find cargo under sudo.
# Source it: `. "$(dirname "$0")/lib.sh"; need_root NAME WHY`.

need_root() { # script-name why
    if [[ ${EUID} -ne 0 ]]; then
        echo "$1: must run as root: $2" >&2
        echo "  try: sudo $0" >&2
        exit 1
    fi
    find_cargo
}

find_cargo() { # under sudo, PATH usually lacks the invoking user's ~/.cargo/bin: look there
    if ! command -v cargo >/dev/null 2>&1 && [[ -n ${SUDO_USER:-} ]]; then
        local user_home
        user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
        if [[ -x $user_home/.cargo/bin/cargo ]]; then
            export PATH="$user_home/.cargo/bin:$PATH"
            export CARGO_HOME=${CARGO_HOME:-$user_home/.cargo}
            export RUSTUP_HOME=${RUSTUP_HOME:-$user_home/.rustup}
        fi
    fi
}
