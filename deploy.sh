#!/usr/bin/env bash
# Deploy orderpipe's eight functions to Cloud Run functions (2nd gen).
#
# The per-function table (access, service account, secrets, sizing) is infra/functions.json;
# infra/deploy_plan.py turns it into the commands below. Long-lived resources (APIs, service
# accounts, IAM, Cloud SQL, queues, schedules, secret containers) are Terraform's: see infra/README.md.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: ./deploy.sh --project P --region R [--env E] [--only fn,fn] [--migrate | --migrate-only] [--dry-run]

Stages build/<fn>/ (main.py + shared/ + requirements.txt from requirements.lock) for each function,
optionally applies migrations through the Cloud SQL connector, then runs `gcloud functions deploy`
for each function (order_worker first) and adds the invoker bindings. Safe to re-run.

  --project P              Google Cloud project id (required)
  --region R               region of the functions, queues and Cloud SQL instance (required)
  --env E                  environment label (default dev); reads infra/env/E.json when it exists
                           (terraform -chdir=infra output -json deploy_config > infra/env/E.json)
  --only fn,fn             deploy only these functions
  --migrate                apply migrations before deploying
  --migrate-only           apply migrations and stop (Cloud Build's migrate step)
  --bootstrap-db           one-off: as postgres (password asked), create the app role and let the
                           deployer's IAM user create tables; see infra/README.md
  --dry-run                print the plan; stage, migrate and call nothing
  --build-dir DIR          where to stage (default build/; env ORDERPIPE_BUILD_DIR)
  --config FILE            the deploy_config JSON (default infra/env/E.json when present)
  --project-number N       skip `gcloud projects describe` (the run.app URLs contain it)
  --secret-version NAME=V  pin a secret version (default: the latest enabled one, resolved now)
  --public fn,fn           also make these public (only admin, self_test may be)
  --invoker fn=MEMBER      add a run.invoker binding (e.g. admin=group:ops@example.com)
  --db-password-auth       Cloud SQL password auth (secret db-password) instead of IAM auth
  --safe-mode true|false   gateway sandboxes (default: config file, else true)
  --metrics-timezone TZ    METRICS_TIMEZONE (default: config file, else UTC)
  --public-base-url URL    PUBLIC_BASE_URL: the storefront's base for payment return URLs
  --log-level LEVEL        LOG_LEVEL (default INFO)
  --set-env KEY=VALUE      one more environment variable for every function (repeat)
  --migrate-db-user USER   the database user migrations log in as (default: the deployer's IAM user)
  --order-worker-url URL   ORDER_WORKER_URL and OIDC audience (default https://order-worker-NUMBER.REGION.run.app)

Environment: ORDERPIPE_PYTHON = the python that runs migrations (needs requirements.lock installed;
default: a venv made in <build-dir>/.venv-migrate).
EOF
}

die() {
    echo "deploy.sh: $*" >&2
    exit 2
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

helper() {
    python3 "$ROOT/infra/deploy_plan.py" "$@"
}

dry_run=0
migrate=0
migrate_only=0
bootstrap=0
build_dir=""
plan_args=()

while (($#)); do
    option="$1"
    value=""
    has_value=0
    if [[ "$option" == --*=* ]]; then
        value="${option#*=}"
        option="${option%%=*}"
        has_value=1
    fi
    case "$option" in
        --project | --region | --env | --only | --public | --project-number | --secret-version | --build-dir | \
            --config | --safe-mode | --metrics-timezone | --public-base-url | --log-level | --set-env | --invoker | \
            --migrate-db-user | --order-worker-url)
            if ((!has_value)); then
                (($# >= 2)) || die "$option needs a value"
                value="$2"
                shift
            fi
            [[ -n "$value" ]] || die "$option needs a value"
            if [[ "$option" == --build-dir ]]; then
                build_dir="$value"
            else
                plan_args+=("$option" "$value")
            fi
            ;;
        --db-password-auth) plan_args+=("$option") ;;
        --dry-run) dry_run=1 ;;
        --migrate) migrate=1 ;;
        --migrate-only) migrate_only=1 ;;
        --bootstrap-db) bootstrap=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

build_dir="${build_dir:-${ORDERPIPE_BUILD_DIR:-$ROOT/build}}"
[[ "$build_dir" == /* ]] || build_dir="$PWD/$build_dir"
plan_args+=(--build-dir "$build_dir")

# Flags are checked (and the manifest with its connection budget) before anything happens.
helper check "${plan_args[@]}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

say() {
    printf '%s\n' "$*"
}

show() {
    local quoted
    printf -v quoted '%q ' "$@"
    say "+ ${quoted% }"
}

# Runs the records deploy_plan.py wrote to file $1: NUL-separated words, `kind argv...`, an empty word after each.
run_records() {
    local word kind=""
    local -a argv=()
    while IFS= read -r -d '' word <&3; do
        if [[ -z "$word" ]]; then
            execute "$kind" "${argv[@]}"
            kind=""
            argv=()
        elif [[ -z "$kind" ]]; then
            kind="$word"
        else
            argv+=("$word")
        fi
    done 3<"$1"
}

execute() {
    local kind="$1" answer
    shift
    show "$@"
    case "$kind" in
        run) "$@" </dev/null ;;
        check-url)
            answer="$("$@" </dev/null)"
            printf '%s' "$answer" | helper check-url "${plan_args[@]}" ${resolved_args[@]+"${resolved_args[@]}"}
            ;;
        *) die "unknown step kind $kind" ;;
    esac
}

migration_python() {
    if [[ -n "${ORDERPIPE_PYTHON:-}" ]]; then
        printf '%s\n' "$ORDERPIPE_PYTHON"
        return
    fi
    local venv="$build_dir/.venv-migrate"
    if ((dry_run)); then
        printf '%s\n' "$venv/bin/python"
        return
    fi
    if ! cmp -s "$ROOT/requirements.lock" "$venv/requirements.lock" 2>/dev/null; then
        say "making $venv (requirements.lock) for the migration" >&2
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements.lock" >&2
        cp "$ROOT/requirements.lock" "$venv/requirements.lock"
    fi
    printf '%s\n' "$venv/bin/python"
}

resolved_args=()

if ((bootstrap)); then
    ((!dry_run)) || die "--bootstrap-db has no dry run"
    helper stage "${plan_args[@]}" >/dev/null
    python_bin="$(migration_python)"
    helper bootstrap-command "${plan_args[@]}" --python "$python_bin" >"$tmp/bootstrap"
    run_records "$tmp/bootstrap"
    exit 0
fi

if ((dry_run)); then
    kind=plan
    ((migrate)) && kind=plan-migrate
    ((migrate_only)) && kind=plan-migrate-only
    helper "$kind" "${plan_args[@]}" --python "$(migration_python)"
    exit 0
fi

say "staging into $build_dir"
helper stage "${plan_args[@]}" | sed 's/^/  /'

if ((migrate || migrate_only)); then
    python_bin="$(migration_python)"
    helper migrate-command "${plan_args[@]}" --python "$python_bin" >"$tmp/migrate"
    run_records "$tmp/migrate"
fi
if ((migrate_only)); then
    exit 0
fi

# What only Google Cloud knows: the project number (run.app URLs) and each secret's latest version (pinned).
helper resolve-commands "${plan_args[@]}" >"$tmp/resolve"
while IFS= read -r -d '' kind <&3; do
    argv=()
    while IFS= read -r -d '' word <&3 && [[ -n "$word" ]]; do
        argv+=("$word")
    done
    show "${argv[@]}"
    answer="$("${argv[@]}" </dev/null)"
    case "$kind" in
        project-number) resolved_args+=(--project-number "$answer") ;;
        secret:*)
            version="$(printf '%s' "$answer" | helper version-number)"
            resolved_args+=(--secret-version "${kind#secret:}=$version")
            ;;
        *) die "unknown resolve kind $kind" ;;
    esac
done 3<"$tmp/resolve"

helper steps "${plan_args[@]}" ${resolved_args[@]+"${resolved_args[@]}"} >"$tmp/steps"
run_records "$tmp/steps"
say "deployed: $(helper functions "${plan_args[@]}" | paste -sd ' ' -)"
