#!/usr/bin/env bash
# One-command local CI for kvreceipts (upstream: scripts/ci-local.sh bitnet-server-receipts).
#
# Bootstraps nox, uv and this checkout into .venv-ci/ with nothing but a Python >= 3.11 and its
# pip, then runs `kvreceipts validate TARGET`, whose verdict counts a skipped step as a failure.
# nox finds the pyenv interpreters (3.11, 3.13) by itself: noxfile.py adds them to PYENV_VERSION.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${KVRECEIPTS_CI_VENV:-$ROOT/.venv-ci}"
OUT="$ROOT/.ci-local"
TARGETS="receipts all quick"

usage() {
    cat <<'EOF'
usage: ./ci-local.sh [receipts|all|quick] [--fresh] [--no-cache] [--jobs N] [--print] [nox args...]

targets:
  receipts   upstream's nine steps: baseline, lint, format, docs, msrv, the feature combos,
             the happy and the guard path
  all        the default set: the nine, tests on the newest Python, crosscheck (default)
  quick      lint and the tests with every feature on, on the current Python

options:
  --fresh    recreate the session venvs (default: reuse them; installs still run, as no-ops)
  --no-cache run every session, also those that passed with the same inputs before
  --jobs N   sessions at once (default: the number of CPUs, at most 4; 1 runs them in order)
  --print    show what would be bootstrapped and run, and run nothing
  --bootstrap  only make .venv-ci/ ready (kvreceipts validate uses it when nox is missing)
  -h, --help this help

Anything else goes to nox, e.g. `./ci-local.sh quick --verbose` or, after `--`, to the
sessions: `./ci-local.sh quick -- -k receipts`. One step alone: `.venv-ci/bin/nox -s NAME` or
`kvreceipts validate STEP` (list them: `kvreceipts validate --list`).
The JSON report is written to .ci-local/validate-TARGET.json.
EOF
}

die() {
    echo "ci-local.sh: $1" >&2
    [[ "${2:-}" == usage ]] && usage >&2
    exit 2
}

target=all
if [[ $# -gt 0 && "$1" != -* ]]; then
    [[ " $TARGETS " == *" $1 "* ]] || die "unknown target '$1' (choose from: ${TARGETS// /, })" usage
    target="$1"
    shift
fi

fresh=0
no_cache=0
print_only=0
bootstrap_only=0
jobs="${KVRECEIPTS_CI_JOBS:-}"
nox_args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --fresh) fresh=1 ;;
        --no-cache) no_cache=1 ;;
        --print) print_only=1 ;;
        --bootstrap) bootstrap_only=1 ;;
        --jobs | -j)
            [[ $# -ge 2 ]] || die "$1 needs a number" usage
            jobs="$2"
            shift
            ;;
        --jobs=*) jobs="${1#--jobs=}" ;;
        --) nox_args+=("$@"); break ;;
        *) nox_args+=("$1") ;;
    esac
    shift
done
if [[ -z "$jobs" ]]; then
    jobs="$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)"
    ((jobs > 4)) && jobs=4
fi
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die "--jobs wants a positive number, not '$jobs'" usage

# A Python >= 3.11 to bootstrap with: $KVRECEIPTS_PYTHON, python3, then pyenv's or PATH's 3.1x.
find_python() {
    local candidates=() version py
    [[ -n "${KVRECEIPTS_PYTHON:-}" ]] && candidates+=("$KVRECEIPTS_PYTHON")
    candidates+=(python3 python)
    local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
    if [[ -d "$pyenv_root/versions" ]]; then
        while IFS= read -r version; do
            candidates+=("$version/bin/python3")
        done < <(printf '%s\n' "$pyenv_root"/versions/3.* | sort -V)
    fi
    candidates+=(python3.11 python3.12 python3.13 python3.14)
    for py in "${candidates[@]}"; do
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
            command -v "$py"
            return 0
        fi
    done
    return 1
}

# The ci dependency group, read from pyproject.toml: the one place dependencies are declared.
ci_requirements() {
    "$1" - "$ROOT/pyproject.toml" <<'PY'
import sys, tomllib

groups = tomllib.load(open(sys.argv[1], "rb"))["dependency-groups"]

def expand(name):
    for item in groups[name]:
        if isinstance(item, dict):
            yield from expand(item["include-group"])
        else:
            yield item

print("\n".join(expand("ci")))
PY
}

stamp="$VENV/.ci-local-stamp"
want_stamp="$(cksum <"$ROOT/pyproject.toml" | cut -d' ' -f1)"
ready=0
if [[ -x "$VENV/bin/kvreceipts" && -x "$VENV/bin/nox" && -x "$VENV/bin/uv" && -f "$stamp" &&
    "$(cat "$stamp")" == "$want_stamp" ]] && "$VENV/bin/python" -c '' 2>/dev/null; then
    ready=1
fi

report="$OUT/validate-$target.json"
validate=("$VENV/bin/kvreceipts" validate "$target" --jobs "$jobs" --output "$report")
if ((fresh)); then validate+=(--fresh); else validate+=(--reuse); fi
((no_cache)) && validate+=(--no-cache)
for arg in "${nox_args[@]+"${nox_args[@]}"}"; do
    validate+=("--nox-arg=$arg")
done

if ((print_only)); then
    if ((ready)); then
        echo "bootstrap: $VENV is ready"
    else
        echo "bootstrap: $VENV (python -m venv, then pip install the ci group and -e $ROOT)"
    fi
    printf 'run:'
    printf ' %q' "${validate[@]}"
    printf '\n'
    if ((ready)); then # the nox command line validate would run
        (cd "$ROOT" && "${validate[@]}" --dry-run)
    fi
    exit 0
fi

if ((!ready)); then
    python="$(find_python)" || die "no Python >= 3.11 found (tried python3, python, pyenv, python3.1x); set KVRECEIPTS_PYTHON"
    echo "ci-local.sh: bootstrapping $VENV with $python" >&2
    if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c '' 2>/dev/null; then
        rm -rf "$VENV"
        "$python" -m venv "$VENV" ||
            die "could not create $VENV: '$python -m venv' failed (on Debian/Ubuntu: apt install python3-venv)"
    fi
    mapfile -t requirements < <(ci_requirements "$VENV/bin/python")
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "${requirements[@]}" -e "$ROOT"
    echo "$want_stamp" >"$stamp"
fi
((bootstrap_only)) && exit 0

mkdir -p "$OUT"
rm -f "$report"
cd "$ROOT"
exec "${validate[@]}" # it prints the verdict and where the report is
