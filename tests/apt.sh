# Sourced by tests/embedded/run.sh and tests/panic_free/run.sh, which define log and
# die: `apt_install PKG…` installs the Debian packages given, with apt-get as root or
# through sudo, or dies saying what to install by hand.
apt_install() {
    [ "$#" -gt 0 ] || return 0
    log "installing missing Debian packages: $*"
    command -v apt-get >/dev/null || die "apt-get not found: install $* (Debian 12 bookworm-security) by hand"
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || die "not root and no sudo: install $* by hand"
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q >/dev/null || die "apt-get update failed"
    $sudo apt-get install -y -q --no-install-recommends "$@" >/dev/null \
        || die "apt-get install $* failed"
}
