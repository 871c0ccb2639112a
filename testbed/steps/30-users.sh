#!/bin/bash
# Step 30: the unprivileged test users and the directories a session uses.
#   * shjuser1, shjuser2: ordinary login users (home, bash); shjbench: owner of
#     the queue benchmark's held jobs (no home, no shell).
#   * /etc/subuid and /etc/subgid: one private range of 65536 ids each, which
#     rootless Podman needs to map the container's users.
#   * /run/user/UID: rootless Podman's runtime dir. Without systemd-logind
#     nothing creates it on this kind of machine.
#   * /var/tmp/sh-jupyter (root, 0755) and /var/tmp/sh-jupyter/USER (the
#     user, 0700): node-local scratch, as an admin's tmpfiles.d would make them
#     (the Slurm prolog makes them for sessions; `run --local` has no prolog).
#     Anything else found there (a link, another user's) is moved aside.
#   * /safe_data/USER (persistent data) and /safe_outputs/USER (results),
#     private to their user, under root-owned parents.
#   * Project groups, as a safe haven shares data: /safe_data/PROJECT and
#     /safe_outputs/PROJECT owned by root and the project group, mode 2770
#     (setgid: new files belong to the project), holding a 0640 file.
set -euo pipefail
# shellcheck source=testbed/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

readonly SUBID_COUNT=65536

# subid_ok FILE USER UID: true when USER has exactly one range of at least
# SUBID_COUNT ids in FILE and it overlaps no other line's range.
subid_ok() {
    awk -F: -v user="$2" -v uid="$3" -v need="$SUBID_COUNT" '
        NF < 3 || $1 ~ /^#/ { next }
        { n++; name[n] = $1; lo[n] = $2 + 0; hi[n] = $2 + $3 - 1 }
        $1 == user || $1 == uid { mine++; me = n; if ($3 + 0 < need) short = 1 }
        END {
            if (mine != 1 || short) exit 1
            for (i = 1; i <= n; i++)
                if (i != me && lo[i] <= hi[me] && lo[me] <= hi[i]) exit 1
            exit 0
        }' "$1"
}

# next_free_subid FILE: first id above every range in FILE (and above the
# SUB_UID_MIN convention of 100000), so a new range overlaps nothing.
next_free_subid() {
    awk -F: '
        BEGIN { top = 100000 }
        NF >= 3 && $1 !~ /^#/ { end = $2 + $3; if (end > top) top = end }
        END { print top }' "$1"
}

# fix_subids FILE USER UID DEL_OPT ADD_OPT: drop USER's ranges in FILE that
# are missing, too small or overlapping, and give it one fresh range.
fix_subids() {
    local file="$1" user="$2" uid="$3" del_opt="$4" add_opt="$5" start range
    touch -- "$file"
    if subid_ok "$file" "$user" "$uid"; then
        return 0
    fi
    while IFS=: read -r name first count; do
        if [[ "$name" == "$user" || "$name" == "$uid" ]]; then
            usermod "$del_opt" "$first-$((first + count - 1))" "$user"
        fi
    done <"$file"
    start="$(next_free_subid "$file")"
    range="$start-$((start + SUBID_COUNT - 1))"
    usermod "$add_opt" "$range" "$user"
    log "$user: $(basename -- "$file") range $range"
}

ensure_dir /safe_data 0755
ensure_dir /safe_outputs 0755
ensure_dir /run/user 0755

# node_dir PATH OWNER MODE: a real directory (not a link) owned by OWNER, else moved aside.
node_dir() {
    local path="$1" owner="$2" mode="$3"
    if [[ -L "$path" || ( -e "$path" && ! -d "$path" ) ]] \
        || { [[ -d "$path" ]] && [[ "$(stat -c %u:%g -- "$path")" != "$owner" ]]; }; then
        mv -- "$path" "$path.foreign-$(date +%Y%m%dT%H%M%S)-$$"
        log "moved a foreign $path aside"
    fi
    [[ -d "$path" ]] || mkdir -m "$mode" -- "$path"
    chown -h "$owner" -- "$path"
    chmod "$mode" -- "$path"
}
node_dir /var/tmp/sh-jupyter 0:0 0755

for user in "${TESTBED_USERS[@]}"; do
    if ! getent passwd "$user" >/dev/null; then
        # -U: a private group of the same name, like a site's user would have.
        useradd -m -U -s /bin/bash -c "sh-jupyter test user" "$user"
        log "created user $user"
    fi
    uid="$(id -u "$user")"
    gid="$(id -g "$user")"
    fix_subids /etc/subuid "$user" "$uid" --del-subuids --add-subuids
    fix_subids /etc/subgid "$user" "$uid" --del-subgids --add-subgids
    ensure_dir "/run/user/$uid" 0700 "$uid:$gid"
    node_dir "/var/tmp/sh-jupyter/$user" "$uid:$gid" 0700
    ensure_dir "/safe_data/$user" 0700 "$uid:$gid"
    ensure_dir "/safe_outputs/$user" 0700 "$uid:$gid"
done
# ensure_project GROUP MEMBER...: the group, its members, and its two 2770 directories
# with a 0640 file readable by the group only.
ensure_project() {
    local group="$1" member
    shift
    getent group "$group" >/dev/null || { groupadd "$group"; log "created group $group"; }
    for member in "$@"; do
        if ! getent passwd "$member" >/dev/null; then
            useradd -m -U -s /bin/bash -c "sh-jupyter test project member" "$member"
            log "created user $member"
        fi
        id -nG "$member" | tr ' ' '\n' | grep -qx "$group" || usermod -aG "$group" "$member"
    done
    ensure_dir "/safe_data/$group" 2770 "root:$group"
    ensure_dir "/safe_outputs/$group" 2770 "root:$group"
    if [[ ! -f "/safe_data/$group/README.txt" ]]; then
        printf 'project %s data: readable by its members only\n' "$group" >"/safe_data/$group/README.txt"
    fi
    chown "root:$group" "/safe_data/$group/README.txt"
    chmod 0640 "/safe_data/$group/README.txt"
}
ensure_project "$TESTBED_PROJECT" "${TESTBED_PROJECT_MEMBERS[@]}"
ensure_project "$TESTBED_OTHER_PROJECT" "${TESTBED_OTHER_MEMBERS[@]}"
# The user whose home fills up (tests/e2e/test_resources.py): an ordinary session user whose
# home is a small tmpfs of its own, so a test can fill it (and empty it) without touching the
# machine's disks. Mounted again after a reboot; its content does not need to survive one.
if ! getent passwd "$TESTBED_FULL_USER" >/dev/null; then
    useradd -m -U -s /bin/bash -c "sh-jupyter test user with a small home" "$TESTBED_FULL_USER"
    log "created user $TESTBED_FULL_USER"
fi
full_uid="$(id -u "$TESTBED_FULL_USER")"
full_gid="$(id -g "$TESTBED_FULL_USER")"
full_home="$(getent passwd "$TESTBED_FULL_USER" | cut -d: -f6)"
fix_subids /etc/subuid "$TESTBED_FULL_USER" "$full_uid" --del-subuids --add-subuids
fix_subids /etc/subgid "$TESTBED_FULL_USER" "$full_uid" --del-subgids --add-subgids
if ! mountpoint -q "$full_home"; then
    mount -t tmpfs -o "size=$TESTBED_FULL_HOME_SIZE,mode=0700,uid=$full_uid,gid=$full_gid" \
        "shj-full-home" "$full_home"
    log "$TESTBED_FULL_USER: home $full_home is a $TESTBED_FULL_HOME_SIZE tmpfs"
fi
ensure_dir "/run/user/$full_uid" 0700 "$full_uid:$full_gid"
ensure_dir "/safe_data/$TESTBED_FULL_USER" 0700 "$full_uid:$full_gid"
ensure_dir "/safe_outputs/$TESTBED_FULL_USER" 0700 "$full_uid:$full_gid"
# A small node scratch filesystem (few blocks, few inodes) that a test config mounts as /scratch.
mkdir -p "$TESTBED_SMALL_SCRATCH"
if ! mountpoint -q "$TESTBED_SMALL_SCRATCH"; then
    mount -t tmpfs -o "$TESTBED_SMALL_SCRATCH_OPTS" shj-small-scratch "$TESTBED_SMALL_SCRATCH"
    log "small scratch: tmpfs $TESTBED_SMALL_SCRATCH ($TESTBED_SMALL_SCRATCH_OPTS)"
fi
# As a site lays out node scratch: a root-owned parent (nobody can squat a user's name in it)
# and the user's own directory, made by the admin; sessions make theirs inside it.
chmod 0755 "$TESTBED_SMALL_SCRATCH"
ensure_dir "$TESTBED_SMALL_SCRATCH/$TESTBED_FULL_USER" 0700 "$full_uid:$full_gid"

# The bench's "other user" (bench/queue.py): only submits held jobs, so no home,
# no login shell, no sub-ids, no runtime dir.
if ! getent passwd "$TESTBED_BENCH_USER" >/dev/null; then
    useradd -M -U -d /nonexistent -s /usr/sbin/nologin -c "sh-jupyter bench, synthetic queued jobs" \
        "$TESTBED_BENCH_USER"
    log "created user $TESTBED_BENCH_USER"
fi
log "users: ${TESTBED_USERS[*]} (bench: $TESTBED_BENCH_USER); projects: $TESTBED_PROJECT (${TESTBED_PROJECT_MEMBERS[*]}), $TESTBED_OTHER_PROJECT (${TESTBED_OTHER_MEMBERS[*]})"

# A test user whose rootless Podman lost its pause process while the database still lists
# running containers (a job killed without its epilog, a crash test) gets "invalid internal
# status" from every podman command until `podman system migrate`; a bed with history must
# not fail on that. Only checked where the user's runtime directory exists (a session ran).
for user in "${TESTBED_USERS[@]}" "${TESTBED_PROJECT_MEMBERS[@]}" "$TESTBED_FULL_USER"; do
    [[ -d "/run/user/$(id -u "$user")" ]] || continue
    said="$(as_user "$user" timeout 60 podman ps -q 2>&1 >/dev/null || true)"
    if [[ "$said" == *"invalid internal status"* ]]; then
        as_user "$user" timeout 120 podman system migrate >/dev/null 2>&1 || true
        log "$user: podman had lost its pause process; ran podman system migrate"
    fi
done
