#!/usr/bin/env bash
# End-to-end benchmark of the release binary against the bundled Drive emulator, with references
# measured in the same run. Prints files/s, MB/s (10^6 bytes/s), peak RSS and ratios per scenario.
#
#   bash benches/e2e.sh                       # scenarios small and big1g (a few minutes)
#   bash benches/e2e.sh small big1g big8g listing200k
#
# Scenarios
#   small        10,000 files × 4,096 bytes (in 50 folders)
#                → local folder (target ≥ 2,000 files/s) and → S3 (target ≥ 1.5× rclone's files/s)
#   users        USERS_N (8) users × USERS_FILES (200) files with user_rps = USER_RPS (20): one user, all
#                users in one process (target ≥ 5× one user's files/s), then 2 and 3 shard processes
#   s3small      5,000 files of mixed sizes (0 B to 256 KiB, 7 sizes in turn, 250 MB in all) → S3 against
#                rclone copying the same bytes from local disk: 3 interleaved rounds (mirrorflow, then
#                rclone), each into a fresh prefix and state; medians (target ≥ 1.5×). Needs s3s-fs + rclone
#   big1g        one 1 GiB file → local folder (target ≥ 90 % of `curl alt=media | md5sum`) and → local
#                folder with `[pipeline] sha256 = false` (md5 only, like the reference), in BIG_ROUNDS
#                interleaved rounds with the reference (medians); then → S3 once
#   big8g        one 8 GiB file → local folder: peak RSS within 10 % of big1g's and
#                ≤ 64 MiB + uploader concurrency × chunk_size × chunk_depth (needs ~25 GB of disk with S3)
#   budget       eight 256 MiB files → S3 at once, 32 MiB parts, 4 parts in flight per file: peak RSS with
#                `[pipeline] memory_budget` = 256 MiB (the default) and with 4 GiB (no bound in practice:
#                8 × (4 + 1) × 32 MiB = 1.25 GiB of part buffers); needs s3s-fs
#   listing200k  200,000 zero-byte files → local folder (peak RSS ≤ 512 MiB), then a --once re-run with
#                no change in Drive: counts the changes.list requests it makes (target 1)
#   million      1,000,000 zero-byte files in 200 folders (MILLION_FILES=N for another count) → local
#                folder (targets: peak RSS ≤ 256 MiB at ≥ 5,000 files/s), then a --once re-run with no
#                change (≤ 15 s, ≤ 128 MiB); prints the state's size on disk and bytes per file
#   index        10,000 files × 4,096 bytes → local folder without and with `[index]` (a throwaway
#                PostgreSQL from scripts/postgres.sh): the run's slowdown with the sink on, then the index
#                added to a finished mirror (a rebuild of every row in one transaction): sink rows/s
#   dups         2,000 files × 256 KiB → local folder, twice: all distinct, then 500 distinct contents
#                held by 4 files each (an original and 3 copies in other folders, listed right after it,
#                so the copies are planned while the original downloads): bytes downloaded from Drive
#                (emulator stats) and time (content dedup within a run: each content downloaded once)
#   verify100k   100,000 files × 1,024 bytes (VERIFY_FILES=N for another count) → local folder, then
#                `mirrorflow verify` and `verify --checksum` of that mirror (time and peak RSS; memory must
#                not grow with the number of files)
#
# References (each measured in the same run, on the same emulator / S3 server)
#   curl         `curl -H "Authorization: Bearer …" …/files/ID?alt=media | md5sum` (big files): the limit of
#                reading and hashing the source
#   rclone       `rclone copy` of the same bytes from local disk (mirrorflow's local mirror) into the same
#                S3 server, `--transfers` = mirrorflow's uploader concurrency (Debian's rclone; optional)
#   S3 server    s3s-fs (optional): `cargo install s3s-fs@0.14.1 --locked --features binary`
#                Without s3s-fs the S3 and rclone rows are skipped with a message.
#
# Output: one row per measured command: files, MB, wall seconds (process start to exit, so start-up and
# the Drive listing are included), files/s, MB/s, peak RSS ("Maximum resident set size" of
# /usr/bin/time -v) and CPU seconds (user + system of that process; the emulator and the S3 server run
# beside it on the same cores and are not counted). Each command's stdout/stderr/time -v output is in
# the work folder (KEEP=1 keeps it). Results are also collected in $WORK/results.txt.
#
# Environment
#   DRIVE_RPS=100000   [rate_limit] drive_rps for mirrorflow. The default of the binary (150/s) models
#                      Google's per-user quota; against the local emulator it would be the only limit
#                      (10,000 files ≥ 67 s). Set DRIVE_RPS=150 to see that.
#   CONCURRENCY=8      [stages.downloader|uploader] concurrency (also rclone's --transfers)
#   BIG_ROUNDS=3       interleaved rounds of big1g/big8g (curl, → local, → local md5 only): medians
#   EMU_PORT=18700 S3_PORT=18701   loopback ports
#   WORK=/tmp/...      work folder (default: a fresh mktemp -d, removed at the end unless KEEP=1)
#   NO_BUILD=1         skip `cargo build --release`
#   MIRRORFLOW_BIN=…   measure this binary instead of target/release/mirrorflow
#
# Everything listens on 127.0.0.1 only; everything started here is stopped on exit (trap).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD

SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -eq 0 ] && SCENARIOS=(small big1g)
for s in "${SCENARIOS[@]}"; do
    case $s in small | s3small | big1g | big8g | budget | listing200k | million | verify100k | index | dups | users) ;; *)
        echo "unknown scenario $s (small s3small big1g big8g budget listing200k million verify100k index dups users)" >&2
        exit 2
        ;;
    esac
done

DRIVE_RPS=${DRIVE_RPS:-100000}
CONCURRENCY=${CONCURRENCY:-8}
CHUNK_MIB=1
CHUNK_DEPTH=4
BIG_ROUNDS=${BIG_ROUNDS:-3}
EMU_PORT=${EMU_PORT:-18700}
S3_PORT=${S3_PORT:-18701}
EMU=http://127.0.0.1:$EMU_PORT
S3=http://127.0.0.1:$S3_PORT
S3_KEY=benchkey
S3_SECRET=benchsecret
BIN=${MIRRORFLOW_BIN:-$ROOT_DIR/target/release/mirrorflow}

# ---------------------------------------------------------------------------------------------- tools
need_apt() { # command package
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "installing $2 (apt-get)" >&2
    (apt-get install -y -qq "$2" >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$2" >/dev/null 2>&1; }) || true
    command -v "$1" >/dev/null 2>&1 || { echo "$1 is required (apt-get install $2)" >&2; exit 1; }
}
need_apt curl curl
need_apt jq jq
need_apt md5sum coreutils
[ -x /usr/bin/time ] || need_apt /usr/bin/time time
HAVE_S3=0
if command -v s3s-fs >/dev/null 2>&1; then HAVE_S3=1; else
    echo "note: s3s-fs not installed: the S3 rows are skipped (cargo install s3s-fs@0.14.1 --locked --features binary)" >&2
fi
HAVE_RCLONE=0
if command -v rclone >/dev/null 2>&1; then HAVE_RCLONE=1; else
    echo "note: rclone not installed: the rclone reference is skipped (apt-get install rclone)" >&2
fi

if [ "${NO_BUILD:-0}" != 1 ]; then
    echo "building release…" >&2
    cargo build --release --quiet --bin mirrorflow
fi

# ------------------------------------------------------------------------------------ work and trap
if [ -n "${WORK:-}" ]; then mkdir -p "$WORK"; else WORK=$(mktemp -d /tmp/mirrorflow-e2e.XXXXXX); fi
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "${PG_DIR:-}" ]; then bash scripts/postgres.sh stop "$PG_DIR"; rm -rf "$PG_DIR"; fi
    if [ "${KEEP:-0}" = 1 ]; then echo "work folder kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() { # pid: stop one process this script started
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

wait_http() { # url what
    for _ in $(seq 1 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
    echo "$2 did not start ($1)" >&2
    exit 1
}

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
# Prints "seconds peak_rss_kib exit_code cpu_seconds" for a command run under /usr/bin/time -v.
timed() { # label cmd...
    local label=$1
    shift
    local t0 t1 code=0
    t0=$(now)
    /usr/bin/time -v -o "$WORK/$label.time" "$@" >"$WORK/$label.out" 2>"$WORK/$label.err" || code=$?
    t1=$(now)
    local rss cpu
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/$label.time")
    cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {printf "%.2f", s}' "$WORK/$label.time")
    echo "$(calc "$t1 - $t0") ${rss:-0} $code ${cpu:-0}"
}

# ------------------------------------------------------------------------------------------ emulator
EMU_PID=
start_emulator() { # extra args…
    "$BIN" emulator --listen "127.0.0.1:$EMU_PORT" --write-key "$WORK/key.json" \
        --files "${EMU_FILES:-0}" --gdocs 0 --shared-drives 0 "$@" >"$WORK/emulator.log" 2>&1 &
    EMU_PID=$!
    PIDS+=("$EMU_PID")
    for _ in $(seq 1 300); do grep -q "listening on" "$WORK/emulator.log" && return 0; sleep 0.1; done
    cat "$WORK/emulator.log" >&2
    echo "emulator did not start" >&2
    exit 1
}
stop_emulator() {
    if [ -n "$EMU_PID" ]; then stop_pid "$EMU_PID"; fi
    EMU_PID=
}

# Creates `count` files of `size` bytes, round-robin over the folders (or My Drive's root). A size of
# "mixed" gives file k the size MIXED_SIZES[k mod 7] (0 B to 256 KiB).
MIXED_SIZES="0 100 1024 4096 16384 65536 262144"
create_files() { # count size|mixed
    local count=$1 size=$2 batch=5000 start=0
    jq -r '.items[] | select(.mime_type == "application/vnd.google-apps.folder") | .id' \
        <(curl -sf "$EMU/_emu/tree?checksums=false") >"$WORK/folders.txt"
    [ -s "$WORK/folders.txt" ] || echo root >"$WORK/folders.txt"
    while [ "$start" -lt "$count" ]; do
        local n=$((count - start < batch ? count - start : batch))
        awk -v start="$start" -v n="$n" -v size="$size" -v mixed="$MIXED_SIZES" '
            { f[NR - 1] = $0 } END {
                m = split(mixed, sizes, " ")
                printf "{\"ops\":["
                for (i = 0; i < n; i++) {
                    k = start + i
                    sz = size == "mixed" ? sizes[k % m + 1] : size
                    printf "%s{\"op\":\"create\",\"parent\":\"%s\",\"name\":\"f-%07d.bin\",\"size\":%d}", (i ? "," : ""), f[k % NR], k, sz
                }
                printf "]}"
            }' "$WORK/folders.txt" >"$WORK/ops.json"
        curl -sf -X POST -H 'Content-Type: application/json' --data-binary @"$WORK/ops.json" "$EMU/_emu/mutate" >/dev/null
        start=$((start + n))
    done
}

access_token() {
    local r
    r=$(curl -sf -X POST "$EMU/_emu/refresh_token")
    curl -sf -X POST "$(jq -r .token_uri <<<"$r")" \
        --data-urlencode grant_type=refresh_token \
        --data-urlencode "refresh_token=$(jq -r .refresh_token <<<"$r")" \
        --data-urlencode "client_id=$(jq -r .client_id <<<"$r")" \
        --data-urlencode "client_secret=$(jq -r .client_secret <<<"$r")" | jq -r .access_token
}

# --------------------------------------------------------------------------------------------- S3
S3_PID=
start_s3() {
    [ "$HAVE_S3" = 1 ] || return 0
    rm -rf "$WORK/s3"
    mkdir -p "$WORK/s3/mirrorflow" "$WORK/s3/rclone"
    s3s-fs --host 127.0.0.1 --port "$S3_PORT" --access-key "$S3_KEY" --secret-key "$S3_SECRET" "$WORK/s3" \
        >"$WORK/s3s.log" 2>&1 &
    S3_PID=$!
    PIDS+=("$S3_PID")
    wait_http "$S3/" "s3s-fs"
}
stop_s3() {
    if [ -n "$S3_PID" ]; then stop_pid "$S3_PID"; fi
    S3_PID=
    rm -rf "$WORK/s3"
}

# ------------------------------------------------------------------------------------------ configs
write_config() { # name destination-block
    cat >"$WORK/$1.toml" <<EOF
[source]
credentials = "$WORK/key.json"
api_base_url = "$EMU/"
docs_base_url = "$EMU/"
drives = ["all"]

[destination]
$2

[state]
dir = "$WORK/$1-state"

[stages.downloader]
concurrency = $CONCURRENCY

[stages.uploader]
concurrency = $CONCURRENCY

[pipeline]
chunk_size = "${CHUNK_MIB}MiB"
chunk_depth = $CHUNK_DEPTH

[rate_limit]
drive_rps = $DRIVE_RPS
EOF
    echo "$WORK/$1.toml"
}
local_config() { write_config "$1" "url = \"file://$WORK/$1-dest\""; }
s3_config() {
    write_config "$1" "url = \"s3://mirrorflow/$1\"
endpoint = \"$S3\"
region = \"us-east-1\"
access_key_id = \"$S3_KEY\"
secret_access_key = \"$S3_SECRET\""
}

run_mirrorflow() { # label config → "secs rss code"
    timed "$1" env -u AWS_CA_BUNDLE MIRRORFLOW_LOG=mirrorflow=warn "$BIN" run --once --quiet "$2"
}

run_rclone() { # label source-dir dest-path → "secs rss code"
    timed "$1" env -u AWS_CA_BUNDLE \
        RCLONE_CONFIG="$WORK/rclone.conf" \
        RCLONE_CONFIG_BENCHS3_TYPE=s3 RCLONE_CONFIG_BENCHS3_PROVIDER=Other \
        RCLONE_CONFIG_BENCHS3_ENDPOINT="$S3" RCLONE_CONFIG_BENCHS3_REGION=us-east-1 \
        RCLONE_CONFIG_BENCHS3_ACCESS_KEY_ID="$S3_KEY" RCLONE_CONFIG_BENCHS3_SECRET_ACCESS_KEY="$S3_SECRET" \
        RCLONE_CONFIG_BENCHS3_FORCE_PATH_STYLE=true \
        rclone copy "$2" "benchs3:rclone/$3" --transfers "$CONCURRENCY" --checkers 16 --s3-no-check-bucket
}

# ------------------------------------------------------------------------------------------ results
RESULTS=$WORK/results.txt
: >"$RESULTS"
declare -A R # scenario.key → value
row() { # scenario what files bytes secs rss_kib code cpu_s [ratio text]
    local files_s mb_s
    if [ "$7" != 0 ]; then
        printf '%-12s %-28s FAILED (exit %s after %.2f s; see %s)\n' "$1" "$2" "$7" "$5" "$WORK" | tee -a "$RESULTS"
        return 0
    fi
    files_s=$(calc "$3 / $5")
    mb_s=$(calc "$4 / 1000000 / $5")
    printf '%-12s %-28s %7d files %7.1f MB %7.2f s %9.1f files/s %7.1f MB/s  RSS %6.1f MiB  CPU %6.2f s  %s\n' \
        "$1" "$2" "$3" "$(calc "$4 / 1000000")" "$5" "$files_s" "$mb_s" "$(calc "$6 / 1024")" "$8" "${9:-}" |
        tee -a "$RESULTS"
}
ratio() { # a b → a / b, or "n/a" when either is missing (a run failed)
    if [ -n "${1:-}" ] && [ -n "${2:-}" ]; then awk "BEGIN { printf \"%.2f\", $1 / $2 }"; else echo n/a; fi
}
check_exit() { # label code
    if [ "$2" != 0 ]; then
        echo "!! $1 exited $2; stderr tail:" >&2
        tail -n 20 "$WORK/$1.err" >&2
    fi
}

# ------------------------------------------------------------------------------------------ scenarios
mirror_pair() { # scenario files bytes → runs mirrorflow → local and → S3, then rclone; fills R[]
    local sc=$1 files=$2 bytes=$3 secs rss code cpu
    read -r secs rss code cpu < <(run_mirrorflow "$sc-local" "$(local_config "$sc-local")")
    check_exit "$sc-local" "$code"
    row "$sc" "mirrorflow → local folder" "$files" "$bytes" "$secs" "$rss" "$code" "$cpu"
    if [ "$code" = 0 ]; then R[$sc.local.secs]=$secs R[$sc.local.rss]=$rss; fi
    if [ "$HAVE_S3" = 1 ]; then
        start_s3
        read -r secs rss code cpu < <(run_mirrorflow "$sc-s3" "$(s3_config "$sc-s3")")
        check_exit "$sc-s3" "$code"
        row "$sc" "mirrorflow → S3 (s3s-fs)" "$files" "$bytes" "$secs" "$rss" "$code" "$cpu"
        if [ "$code" = 0 ]; then R[$sc.s3.secs]=$secs R[$sc.s3.rss]=$rss; fi
        if [ "$HAVE_RCLONE" = 1 ]; then
            sync
            read -r secs rss code cpu < <(run_rclone "$sc-rclone" "$WORK/$sc-local-dest" "$sc")
            check_exit "$sc-rclone" "$code"
            if [ "$code" = 0 ]; then R[$sc.rclone.secs]=$secs; fi
            row "$sc" "ref: rclone local → S3" "$files" "$bytes" "$secs" "$rss" "$code" "$cpu" \
                "mirrorflow→S3 / rclone = $(ratio "${R[$sc.rclone.secs]:-}" "${R[$sc.s3.secs]:-}")×"
        fi
        stop_s3
    fi
}

scenario_small() {
    local n=10000 size=4096
    echo "== small: $n × $size bytes" | tee -a "$RESULTS"
    start_emulator --folders 50 --depth 3
    create_files "$n" "$size"
    mirror_pair small "$n" $((n * size))
    printf '   targets: → local ≥ 2000 files/s (got %s); mirrorflow→S3 / rclone ≥ 1.5 (got %s)\n' \
        "$(ratio "$n" "${R[small.local.secs]:-}")" "$(ratio "${R[small.rclone.secs]:-}" "${R[small.s3.secs]:-}")" |
        tee -a "$RESULTS"
    stop_emulator
    rm -rf "$WORK"/small-*-dest "$WORK"/small-*-state
}

proc_cpu() { # pid → user + system CPU seconds it has used so far (0 when it is gone)
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

median() { # values… → their median (empty when none)
    [ $# -gt 0 ] || return 0
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

scenario_s3small() {
    local n=5000 bytes r secs rss code cpu
    echo "== s3small: $n files of mixed sizes ($MIXED_SIZES bytes in turn) → S3, 3 interleaved rounds" | tee -a "$RESULTS"
    if [ "$HAVE_S3" != 1 ] || [ "$HAVE_RCLONE" != 1 ]; then
        echo "   (skipped: needs s3s-fs and rclone)" | tee -a "$RESULTS"
        return 0
    fi
    start_emulator --folders 50 --depth 3
    create_files "$n" mixed
    curl -sf "$EMU/_emu/tree" >/dev/null # the emulator computes md5s lazily: warm them outside the timings
    # rclone's source: the same bytes on local disk (mirrorflow's own local mirror of the corpus).
    read -r secs rss code cpu < <(run_mirrorflow s3small-local "$(local_config s3small-local)")
    check_exit s3small-local "$code"
    [ "$code" = 0 ] || { stop_emulator; return 0; }
    bytes=$(du -sb --apparent-size "$WORK/s3small-local-dest" | cut -f1)
    sync
    start_s3
    local mf=() rc=() e0 s0
    # Besides each client's own CPU, the CPU the emulator and the S3 server spent on its run: on a
    # 2-core machine all three share the cores, so this is what a file costs the machine.
    for r in 1 2 3; do
        e0=$(proc_cpu "$EMU_PID") s0=$(proc_cpu "$S3_PID")
        read -r secs rss code cpu < <(run_mirrorflow "s3small-s3-$r" "$(s3_config "s3small-s3-$r")")
        check_exit "s3small-s3-$r" "$code"
        row s3small "round $r: mirrorflow → S3" "$n" "$bytes" "$secs" "$rss" "$code" "$cpu" \
            "emulator CPU $(calc "$(proc_cpu "$EMU_PID") - $e0") s, S3 server CPU $(calc "$(proc_cpu "$S3_PID") - $s0") s"
        [ "$code" = 0 ] && mf+=("$secs")
        s0=$(proc_cpu "$S3_PID")
        read -r secs rss code cpu < <(run_rclone "s3small-rclone-$r" "$WORK/s3small-local-dest" "s3small-$r")
        check_exit "s3small-rclone-$r" "$code"
        row s3small "round $r: ref rclone → S3" "$n" "$bytes" "$secs" "$rss" "$code" "$cpu" \
            "S3 server CPU $(calc "$(proc_cpu "$S3_PID") - $s0") s"
        [ "$code" = 0 ] && rc+=("$secs")
    done
    if [ ${#mf[@]} = 3 ] && [ ${#rc[@]} = 3 ]; then
        local m c
        m=$(median "${mf[@]}")
        c=$(median "${rc[@]}")
        printf '   medians: mirrorflow %.2f s (%.0f files/s), rclone %.2f s (%.0f files/s): %s× (target ≥ 1.5)\n' \
            "$m" "$(calc "$n / $m")" "$c" "$(calc "$n / $c")" "$(ratio "$c" "$m")" | tee -a "$RESULTS"
    fi
    stop_s3
    stop_emulator
    rm -rf "$WORK"/s3small-*-dest "$WORK"/s3small-*-state
}

big_file() { # scenario mib
    local sc=$1 mib=$2 bytes=$(($2 * 1024 * 1024)) id md5 token secs rss code cpu got r
    echo "== $sc: one file of $mib MiB, $BIG_ROUNDS interleaved rounds (curl, → local, → local md5 only)" | tee -a "$RESULTS"
    start_emulator --folders 0 --big-file-mib "$mib"
    # The emulator computes a big file's md5 lazily on first request: warm it outside the timings.
    curl -sf "$EMU/_emu/tree" >"$WORK/tree.json"
    id=$(jq -r '.items[] | select(.name | startswith("big-")) | .id' "$WORK/tree.json")
    md5=$(jq -r '.items[] | select(.name | startswith("big-")) | .md5' "$WORK/tree.json")
    token=$(access_token)
    # Rounds interleave the reference and mirrorflow so that both see the same machine: one run of
    # each on a shared 2-core machine varied 0.66–1.14× from run to run; the medians do not.
    local curls=() locals=() md5s=() md5cfg
    for r in $(seq 1 "$BIG_ROUNDS"); do
        read -r secs rss code cpu < <(timed "$sc-curl-$r" bash -c \
            "curl -sf -H 'Authorization: Bearer $token' '$EMU/drive/v3/files/$id?alt=media' | md5sum")
        got=$(cut -d' ' -f1 "$WORK/$sc-curl-$r.out")
        [ "$got" = "$md5" ] || echo "!! curl | md5sum gave $got, Drive says $md5" >&2
        if [ "$code" = 0 ] && [ "$got" = "$md5" ]; then curls+=("$secs"); fi
        row "$sc" "r$r ref: curl alt=media | md5sum" 1 "$bytes" "$secs" "$rss" "$code" "$cpu"
        rm -rf "$WORK/$sc-local-dest" "$WORK/$sc-local-state"
        read -r secs rss code cpu < <(run_mirrorflow "$sc-local-$r" "$(local_config "$sc-local")")
        check_exit "$sc-local-$r" "$code"
        row "$sc" "r$r mirrorflow → local folder" 1 "$bytes" "$secs" "$rss" "$code" "$cpu"
        if [ "$code" = 0 ]; then locals+=("$secs"); R[$sc.local.rss]=$rss; fi
        rm -rf "$WORK/$sc-md5only-dest" "$WORK/$sc-md5only-state"
        md5cfg=$(local_config "$sc-md5only")
        sed -i 's/^chunk_depth = .*/&\nsha256 = false/' "$md5cfg"
        read -r secs rss code cpu < <(run_mirrorflow "$sc-md5only-$r" "$md5cfg")
        check_exit "$sc-md5only-$r" "$code"
        row "$sc" "r$r mirrorflow → local, md5 only" 1 "$bytes" "$secs" "$rss" "$code" "$cpu"
        if [ "$code" = 0 ]; then md5s+=("$secs"); fi
    done
    local c l m
    c=$(median "${curls[@]}")
    l=$(median "${locals[@]}")
    m=$(median "${md5s[@]}")
    printf '   medians: curl|md5sum %s s, → local %s s, → local md5 only %s s\n' "$c" "$l" "$m" | tee -a "$RESULTS"
    printf '   mirrorflow → local / curl|md5sum = %s (target ≥ 0.9); md5 only / curl|md5sum = %s\n' \
        "$(ratio "$c" "$l")" "$(ratio "$c" "$m")" | tee -a "$RESULTS"
    if [ "$HAVE_S3" = 1 ]; then
        start_s3
        read -r secs rss code cpu < <(run_mirrorflow "$sc-s3" "$(s3_config "$sc-s3")")
        check_exit "$sc-s3" "$code"
        row "$sc" "mirrorflow → S3 (s3s-fs)" 1 "$bytes" "$secs" "$rss" "$code" "$cpu"
        stop_s3
    fi
    local bound=$((64 * 1024 + CONCURRENCY * CHUNK_MIB * 1024 * CHUNK_DEPTH))
    printf '   peak RSS → local %s MiB (bound 64 MiB + %d × %d MiB × %d = %d MiB)\n' \
        "$(ratio "${R[$sc.local.rss]:-}" 1024)" "$CONCURRENCY" "$CHUNK_MIB" "$CHUNK_DEPTH" $((bound / 1024)) |
        tee -a "$RESULTS"
    stop_emulator
    rm -rf "$WORK/$sc"-*-dest "$WORK/$sc"-*-state
}

scenario_big1g() { big_file big1g 1024; }
scenario_big8g() {
    big_file big8g 8192
    if [ -n "${R[big1g.local.rss]:-}" ]; then
        printf '   peak RSS 8 GiB / 1 GiB → local = %s (target ≤ 1.10)\n' \
            "$(ratio "${R[big8g.local.rss]:-}" "${R[big1g.local.rss]}")" | tee -a "$RESULTS"
    else
        echo "   (run big1g in the same invocation to get the 8 GiB / 1 GiB peak RSS ratio)" | tee -a "$RESULTS"
    fi
}

scenario_budget() {
    local n=8 size=$((256 * 1024 * 1024)) budget secs rss code cpu cfg
    echo "== budget: $n × 256 MiB → S3 at once, 32 MiB parts × 4 in flight per file" | tee -a "$RESULTS"
    [ "$HAVE_S3" = 1 ] || { echo "   (skipped: needs s3s-fs)" | tee -a "$RESULTS"; return 0; }
    start_emulator --folders 0
    create_files "$n" "$size"
    curl -sf "$EMU/_emu/tree" >/dev/null # the emulator computes md5s lazily: warm them outside the timings
    for budget in 256MiB 4GiB; do
        start_s3
        cfg=$(s3_config "budget-$budget")
        sed -i "s/^chunk_depth = .*/&\npart_size = \"32MiB\"\nmemory_budget = \"$budget\"/; s/^\[stages.uploader\]/&\npart_concurrency = 4/" "$cfg"
        read -r secs rss code cpu < <(run_mirrorflow "budget-$budget" "$cfg")
        check_exit "budget-$budget" "$code"
        row budget "memory_budget = $budget" "$n" $((n * size)) "$secs" "$rss" "$code" "$cpu"
        stop_s3
    done
    stop_emulator
    rm -rf "$WORK"/budget-*-state
}

scenario_listing200k() {
    local n=200000 secs rss code cpu lists
    echo "== listing200k: $n zero-byte files" | tee -a "$RESULTS"
    start_emulator --folders 200 --depth 4
    local t0
    t0=$(now)
    create_files "$n" 0
    echo "   (corpus created in $(calc "$(now) - $t0") s)" >&2
    local cfg
    cfg=$(local_config listing200k-local)
    read -r secs rss code cpu < <(run_mirrorflow listing200k-local "$cfg")
    check_exit listing200k-local "$code"
    row listing200k "mirrorflow → local folder" "$n" 0 "$secs" "$rss" "$code" "$cpu" "(target RSS ≤ 512 MiB)"
    # A poll with nothing changed on the fully mirrored drive.
    curl -sf -X POST "$EMU/_emu/stats/reset" >/dev/null
    read -r secs rss code cpu < <(run_mirrorflow listing200k-rerun "$cfg")
    check_exit listing200k-rerun "$code"
    lists=$(curl -sf "$EMU/_emu/stats" | jq '[.requests | to_entries[] | select(.key | startswith("changes.list")) | .value] | add // 0')
    local flists
    flists=$(curl -sf "$EMU/_emu/stats" | jq '[.requests | to_entries[] | select(.key | startswith("files.list")) | .value] | add // 0')
    row listing200k "no-change re-run (--once)" 0 0 "$secs" "$rss" "$code" "$cpu" \
        "changes.list requests: $lists (target 1), files.list: $flists"
    stop_emulator
    rm -rf "$WORK"/listing200k-*-dest "$WORK"/listing200k-*-state
}

scenario_million() {
    local n=${MILLION_FILES:-1000000} secs rss code cpu state_kib
    echo "== million: $n zero-byte files in 200 folders" | tee -a "$RESULTS"
    start_emulator --folders 200 --depth 1
    local t0
    t0=$(now)
    create_files "$n" 0
    echo "   (corpus created in $(calc "$(now) - $t0") s)" >&2
    local cfg
    cfg=$(local_config million-local)
    read -r secs rss code cpu < <(run_mirrorflow million-local "$cfg")
    check_exit million-local "$code"
    row million "mirrorflow → local folder" "$n" 0 "$secs" "$rss" "$code" "$cpu" \
        "(targets ≥ 5,000 files/s, RSS ≤ 256 MiB)"
    state_kib=$(du -sk "$WORK/million-local-state" | cut -f1)
    printf '   state on disk %.1f MiB, %.0f bytes per file\n' "$(calc "$state_kib / 1024")" \
        "$(calc "$state_kib * 1024 / $n")" | tee -a "$RESULTS"
    read -r secs rss code cpu < <(run_mirrorflow million-rerun "$cfg")
    check_exit million-rerun "$code"
    row million "no-change re-run (--once)" 0 0 "$secs" "$rss" "$code" "$cpu" "(targets ≤ 15 s, ≤ 128 MiB)"
    stop_emulator
    rm -rf "$WORK"/million-*-dest "$WORK"/million-*-state
}

scenario_verify100k() {
    local n=${VERIFY_FILES:-100000} size=1024 secs rss code cpu
    echo "== verify100k: $n files × $size bytes" | tee -a "$RESULTS"
    start_emulator --folders 100 --depth 3
    create_files "$n" "$size"
    local cfg
    cfg=$(local_config verify100k-local)
    read -r secs rss code cpu < <(run_mirrorflow verify100k-local "$cfg")
    check_exit verify100k-local "$code"
    row verify100k "mirrorflow → local folder" "$n" $((n * size)) "$secs" "$rss" "$code" "$cpu"
    read -r secs rss code cpu < <(timed verify100k-verify env MIRRORFLOW_LOG=mirrorflow=warn "$BIN" verify --quiet "$cfg")
    check_exit verify100k-verify "$code"
    row verify100k "verify (sizes)" "$n" 0 "$secs" "$rss" "$code" "$cpu"
    read -r secs rss code cpu < <(timed verify100k-checksum env MIRRORFLOW_LOG=mirrorflow=warn "$BIN" verify --quiet --checksum "$cfg")
    check_exit verify100k-checksum "$code"
    row verify100k "verify --checksum" "$n" $((n * size)) "$secs" "$rss" "$code" "$cpu"
    stop_emulator
    rm -rf "$WORK"/verify100k-*-dest "$WORK"/verify100k-*-state
}

scenario_index() {
    local n=10000 size=4096 secs rss code cpu url db rows
    echo "== index: $n × $size bytes, with and without [index]" | tee -a "$RESULTS"
    # Its own folder in /tmp: the server runs as the postgres user, which cannot enter $WORK.
    PG_DIR=$(mktemp -d /tmp/mirrorflow-bench-pg.XXXXXX)
    url=$(bash scripts/postgres.sh start "$PG_DIR")
    start_emulator --folders 50 --depth 3
    create_files "$n" "$size"
    local plain with
    plain=$(local_config index-plain)
    read -r secs rss code cpu < <(run_mirrorflow index-plain "$plain")
    check_exit index-plain "$code"
    row index "mirrorflow → local, no index" "$n" $((n * size)) "$secs" "$rss" "$code" "$cpu"
    R[index.plain.secs]=$secs
    db="${url%/postgres}/bench_live"
    psql -q "$url" -c "CREATE DATABASE bench_live" >/dev/null
    with=$(local_config index-with)
    printf '\n[index]\nurl = "%s"\ncatch_up_timeout = "10min"\n' "$db" >>"$with"
    read -r secs rss code cpu < <(run_mirrorflow index-with "$with")
    check_exit index-with "$code"
    rows=$(psql -tA "$db" -c "SELECT count(*) FROM mirrorflow.file_hierarchy")
    row index "mirrorflow → local + index" "$n" $((n * size)) "$secs" "$rss" "$code" "$cpu" \
        "$rows rows; with / without = $(ratio "$secs" "${R[index.plain.secs]}")×"
    db="${url%/postgres}/bench_rebuild"
    psql -q "$url" -c "CREATE DATABASE bench_rebuild" >/dev/null
    printf '\n[index]\nurl = "%s"\ncatch_up_timeout = "10min"\n' "$db" >>"$plain"
    read -r secs rss code cpu < <(run_mirrorflow index-rebuild "$plain")
    check_exit index-rebuild "$code"
    rows=$(psql -tA "$db" -c "SELECT count(*) FROM mirrorflow.file_hierarchy")
    row index "index added: rebuild (no change)" "$rows" 0 "$secs" "$rss" "$code" "$cpu" \
        "sink ≥ $(ratio "$rows" "$secs") rows/s (whole run)"
    stop_emulator
    bash scripts/postgres.sh stop "$PG_DIR"
    rm -rf "$PG_DIR"
    PG_DIR=
    rm -rf "$WORK"/index-*-dest "$WORK"/index-*-state
}

# Creates `groups` × `per_group` originals of `size` bytes, each followed in the listing by `copies`
# copies (same bytes) in other folders.
create_duplicates() { # groups per_group copies size
    local groups=$1 per=$2 copies=$3 size=$4 g ids
    jq -r '.items[] | select(.mime_type == "application/vnd.google-apps.folder") | .id' \
        <(curl -sf "$EMU/_emu/tree?checksums=false") >"$WORK/folders.txt"
    for g in $(seq 0 $((groups - 1))); do
        awk -v g="$g" -v n="$per" -v size="$size" '{ f[NR - 1] = $0 } END {
            printf "{\"ops\":["
            for (i = 0; i < n; i++) printf "%s{\"op\":\"create\",\"parent\":\"%s\",\"name\":\"o-%04d-%03d.bin\",\"size\":%d}", (i ? "," : ""), f[(g * n + i) % NR], g, i, size
            printf "]}" }' "$WORK/folders.txt" >"$WORK/ops.json"
        ids=$(curl -sf -X POST -H 'Content-Type: application/json' --data-binary @"$WORK/ops.json" "$EMU/_emu/mutate" | jq -r '.created[]')
        awk -v copies="$copies" 'NR == FNR { f[n++] = $0; next } { id[m++] = $0 } END {
            printf "{\"ops\":["; k = 0
            for (i = 0; i < m; i++) for (c = 1; c <= copies; c++)
                printf "%s{\"op\":\"copy\",\"id\":\"%s\",\"parent\":\"%s\",\"name\":\"copy-%d-of-%s\"}", (k++ ? "," : ""), id[i], f[(i * 7 + c) % n], c, id[i]
            printf "]}" }' "$WORK/folders.txt" <(echo "$ids") >"$WORK/ops.json"
        curl -sf -X POST -H 'Content-Type: application/json' --data-binary @"$WORK/ops.json" "$EMU/_emu/mutate" >/dev/null
    done
}

media_bytes_served() { curl -sf "$EMU/_emu/stats" | jq .bytes_served.media; }

# Mirrors the emulator's drive (filled by the corpus command) into a local folder; one row, with the
# bytes Drive served.
dups_run() { # label what files bytes corpus-command…
    local label=$1 what=$2 files=$3 bytes=$4 secs rss code cpu served cfg
    shift 4
    start_emulator --folders 50 --depth 3
    "$@"
    cfg=$(local_config "$label")
    read -r secs rss code cpu < <(run_mirrorflow "$label" "$cfg")
    check_exit "$label" "$code"
    served=$(media_bytes_served)
    row dups "$what" "$files" "$bytes" "$secs" "$rss" "$code" "$cpu" \
        "downloaded $(awk "BEGIN { printf \"%.1f\", $served / 1000000 }") MB from Drive"
    stop_emulator
}

scenario_dups() {
    local n=2000 size=262144
    echo "== dups: $n × $size bytes, all distinct, then 500 contents × 4 files" | tee -a "$RESULTS"
    dups_run dups-distinct "distinct → local" "$n" $((n * size)) create_files "$n" "$size"
    dups_run dups-copies "500 contents × 4 → local" "$n" $((n * size)) create_duplicates 10 50 3 "$size"
    rm -rf "$WORK"/dups-*-dest "$WORK"/dups-*-state
}

echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) (CPU s = user + system time of the measured process)" | tee -a "$RESULTS"
echo "mirrorflow e2e: $(nproc) cores, uploader/downloader concurrency $CONCURRENCY, chunk ${CHUNK_MIB} MiB × depth $CHUNK_DEPTH, drive_rps $DRIVE_RPS" |
    tee -a "$RESULTS"
# users: USERS_N users × USERS_FILES files (the emulator's sizes), [rate_limit] user_rps = USER_RPS: one user alone, then
# every user (drives_in_parallel = USERS_N), then the domain split over 2 and 3 shard processes at once.
users_config() { # label dest-dir subjects → config path
    local cfg
    cfg=$(write_config "$1" "url = \"file://$2\"")
    sed -i "s|^drives = \[\"all\"\]|drives = [\"my-drive\"]\nsubjects = $3\ndrives_in_parallel = ${USERS_N:-8}|" "$cfg"
    printf 'user_rps = %s\n' "${USER_RPS:-20}" >>"$cfg"
    echo "$cfg"
}

scenario_users() {
    local n=${USERS_N:-8} files=${USERS_FILES:-200} emails=() all secs rss code cpu one_secs k i worst peak
    echo "== users: $n users × $files files, user_rps = ${USER_RPS:-20}" | tee -a "$RESULTS"
    for i in $(seq 0 $((n - 1))); do emails+=("\"u$i@example.com\""); done
    all="[$(IFS=,; echo "${emails[*]}")]"
    EMU_FILES=$files start_emulator --users "$(IFS=,; echo "${emails[*]//\"/}")" --admin admin@example.com
    read -r secs rss code cpu < <(run_mirrorflow users-one "$(users_config users-one "$WORK/users-one-dest" '["u0@example.com"]')")
    check_exit users-one "$code"
    row users "1 user" "$files" "$(du -sb --apparent-size "$WORK/users-one-dest" | cut -f1)" "$secs" "$rss" "$code" "$cpu"
    one_secs=$secs
    read -r secs rss code cpu < <(run_mirrorflow users-all "$(users_config users-all "$WORK/users-all-dest" "$all")")
    check_exit users-all "$code"
    row users "$n users, 1 process" $((n * files)) "$(du -sb --apparent-size "$WORK/users-all-dest" | cut -f1)" "$secs" "$rss" "$code" "$cpu"
    printf '   %s users: %s× the files/s of one user (target ≥ 5)\n' "$n" \
        "$(awk "BEGIN { printf \"%.2f\", ($n * $files / $secs) / ($files / $one_secs) }")" | tee -a "$RESULTS"
    local shard_pids
    for k in 2 3; do
        shard_pids=()
        for i in $(seq 0 $((k - 1))); do
            cfg=$(users_config "users-k$k-$i" "$WORK/users-k$k-dest" "$all")
            timed "users-k$k-$i" env MIRRORFLOW_SHARD="$i/$k" MIRRORFLOW_LOG=mirrorflow=warn \
                "$BIN" run --once --quiet "$cfg" >"$WORK/users-k$k-$i.res" &
            shard_pids+=($!)
        done
        wait "${shard_pids[@]}"
        worst=0 peak=0
        for i in $(seq 0 $((k - 1))); do
            read -r secs rss code cpu <"$WORK/users-k$k-$i.res"
            check_exit "users-k$k-$i" "$code"
            row users "shard $i/$k" 0 0 "$secs" "$rss" "$code" "$cpu"
            worst=$(awk "BEGIN { print ($secs > $worst) ? $secs : $worst }")
            peak=$(awk "BEGIN { print ($rss > $peak) ? $rss : $peak }")
        done
        printf '   %s shards: wall %.2f s (slowest shard), peak RSS per shard %.1f MiB\n' "$k" "$worst" \
            "$(calc "$peak / 1024")" | tee -a "$RESULTS"
    done
    stop_emulator
    rm -rf "$WORK"/users-*-dest "$WORK"/users-*-state
}

for s in "${SCENARIOS[@]}"; do "scenario_$s"; done
echo
echo "== summary"
cat "$RESULTS"
