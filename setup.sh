#!/usr/bin/env bash
# Installs Northanc on a Debian 12 machine (as root) and then runs it or tests it.
#   ./setup.sh run    install, initialise the archive under ./var, start the stack
#   ./setup.sh install  install only (the Dockerfile's recipe: the image runs the same steps)
#   ./setup.sh test   install, then run the whole test suite
# Every step is idempotent: a second call only installs what is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

# Debian packages the stack and its tests run on (slapd: the directory the LDAP log-in tests
# bind against; nginx-light: docker-compose.yml's TLS front, whose configuration the tests run).
# The virtual environment is built from Debian's python3 because Orthanc's Python plugin
# embeds that interpreter.
debian_packages=(
    python3 python3-venv python3-dev build-essential
    orthanc orthanc-python orthanc-dicomweb orthanc-postgresql dcmtk dicom3tools
    slurm-wlm munge
    postgresql postgresql-contrib e2fsprogs
    chromium
    bubblewrap util-linux
    slapd ldap-utils
    nginx-light
)
# The unprivileged account (and group) batch jobs run as, inside their sandbox.
jobs_account=northanc-jobs

log() { printf '[setup] %s\n' "$*" >&2; }

install_debian_packages() {
    local missing=()
    for pkg in "${debian_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # npm from Debian only where no Node.js toolchain is installed already (a newer one may be).
    if ! command -v npm >/dev/null 2>&1; then
        log "installing Debian packages: nodejs npm"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    fi
    # Debian starts its own Orthanc, OpenLDAP and nginx services where systemd runs: ours takes
    # Orthanc's ports, and the tests start their own directory server and proxy on free ports.
    if [ -d /run/systemd/system ]; then
        systemctl disable --now orthanc slapd nginx >/dev/null 2>&1 || true
    fi
}

create_jobs_account() {
    if ! id -u "$jobs_account" >/dev/null 2>&1; then
        log "creating the system account $jobs_account for batch jobs"
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$jobs_account"
    fi
}

install_venv() {
    if [ ! -x .venv/bin/python ]; then
        log "creating .venv from /usr/bin/python3"
        /usr/bin/python3 -m venv .venv
    fi
    local stamp=.venv/.requirements.sha256
    local want
    want="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        log "installing pinned Python dependencies"
        .venv/bin/pip install -q --disable-pip-version-check -r requirements.lock
        .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
        echo "$want" > "$stamp"
    fi
}

# The segmentation assistant's venv (torch and MONAI Label, ~1.3 GB) is built once per lock file
# under /opt and shared by every checkout on the machine; the checkout links to it. It is complete
# only once its stamp is written, so an interrupted build is rebuilt, never used.
install_assistant_venv() {
    local lock=segmentation/assistant/requirements.lock
    local digest
    digest="$(sha256sum "$lock" | cut -c1-16)"
    local venv="/opt/northanc/assistant-$digest"
    mkdir -p /opt/northanc
    (
        flock 9
        if [ ! -f "$venv/.complete" ]; then
            log "building the segmentation assistant's environment in $venv"
            rm -rf "$venv"
            /usr/bin/python3 -m venv "$venv"
            "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$lock"
            touch "$venv/.complete"
        fi
    ) 9>/opt/northanc/.assistant.lock
    ln -sfn "$venv" .assistant-venv
}

# An npm folder's packages exactly as its package-lock.json pins them, once per lock.
install_npm_folder() {
    local folder="$1"
    local stamp="$folder/node_modules/.lock.sha256"
    local want
    want="$(sha256sum "$folder/package-lock.json" | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        log "installing npm packages in $folder with npm ci"
        npm ci --prefix "$folder" --no-audit --no-fund --loglevel=error >/dev/null
        echo "$want" > "$stamp"
    fi
}

# JupyterHub, its spawners and the single-user server, for project notebooks: into .venv (they
# resolve with requirements.lock as constraints), once per lock; the hub's proxy from npm.
install_notebook_packages() {
    local lock=notebooks/requirements.lock
    local stamp=.venv/.notebooks.sha256
    local want
    want="$(sha256sum "$lock" | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        log "installing the notebook hub's Python packages"
        .venv/bin/pip install -q --disable-pip-version-check --no-deps -r "$lock"
        echo "$want" > "$stamp"
    fi
    install_npm_folder notebooks
}

install_all() {
    install_debian_packages
    create_jobs_account
    install_venv
    install_assistant_venv
    # The portal's front-end libraries (NiiVue, OHIF).
    install_npm_folder portal/frontend
    install_notebook_packages
}

run_stack() {
    export NORTHANC_VAR="${NORTHANC_VAR:-$here/var}"
    mkdir -p "$NORTHANC_VAR"
    .venv/bin/nora --admin init
    .venv/bin/python -m orthanc_plugin.serve start
    .venv/bin/python -m portal.serve start
    .venv/bin/python -m segmentation.assistant_service start
    .venv/bin/python -m nifti_archive.dropfolders.service start
    .venv/bin/python -m jobs.notebook_service start
    cat <<EOF

The portal is at http://127.0.0.1:5000 (log in as admin with the one-time password printed
above on the first run; \`nora --admin user passwd admin\` makes a new one).

Northanc is running. Send DICOM to AET NORTHANC on port 4242 (any called AET is accepted,
so projects may publish their own); converted series appear under $NORTHANC_VAR/archive.
Orthanc's REST API is on http://127.0.0.1:8042 (user northanc, password in
$NORTHANC_VAR/secrets/orthanc_password). The segmentation assistant (MONAI Label) answers the
portal on 127.0.0.1:8000. Project notebooks (JupyterHub, logging in through the portal) are
at http://127.0.0.1:8001/. Stop it all with:
  .venv/bin/python -m jobs.notebook_service stop
  .venv/bin/python -m nifti_archive.dropfolders.service stop
  .venv/bin/python -m segmentation.assistant_service stop; .venv/bin/python -m portal.serve stop
  .venv/bin/python -m orthanc_plugin.serve stop
Use the command line from this folder (or set NORTHANC_VAR=$NORTHANC_VAR elsewhere):
  source .venv/bin/activate
  nora -c myproject                          create a project
  nora -p myproject -a FILE... --addtag t1   register files already in its tree
  nora -p myproject -s 't1*/s0*.nii'         select files by pattern
  nora --help                                everything else
EOF
}

run_tests() {
    mkdir -p test-artifacts
    log "ruff: lint"
    .venv/bin/ruff check .
    log "mypy: types"
    .venv/bin/mypy
    local status=0
    .venv/bin/python -m pytest "$@" || status=$?
    if [ "$status" -eq 5 ]; then
        log "pytest collected no tests: that is a failure"
        status=1
    fi
    return "$status"
}

case "${1:-}" in
    run) install_all; run_stack ;;
    install) install_all ;;
    # The validators the tests run on exports (bids-validator) are for tests only.
    test) shift; install_all; install_npm_folder tests/tools; run_tests "$@" ;;
    *) echo "usage: $0 run | install | test [pytest arguments]" >&2; exit 2 ;;
esac
