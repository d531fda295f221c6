# Claims on the store: the operations of mdcampaign.claims, as POSIX shell functions
# run in the store's root (one `sh -c` locally, one SSH command for a remote store).
#
# Not run by itself: claims.py puts the values it is given before this text, as
# quoted variable assignments, and a call after it. The layout values come from
# mdcampaign.layout, never written here:
#   claims        the claims folder (layout.STORE_CLAIMS)
#   lease         the lease, in whole seconds
#   gen_digits    digits of a claim's number
#   seg_digits    digits of a segment's number (layout.SEGMENT_DIGITS)
#   record        a stored segment's record, in its folder (layout.MANIFEST)
#   max_failures  failed claims after which a simulation is given up
#   decisions     the decisions to stop (layout.STORE_DECISIONS, see convergence.py)
# and, per operation, d (a simulation's claims folder), g (a claim's number), holder.
#
# Times are the store's clock only: files and folders are stamped by being created (or
# by an entry created in them), never by `touch`, whose "now" is the calling process's
# clock where that clock is faked or skewed (libfaketime fakes utimensat).

# now: the store's clock (the time a file created there gets).
clock() {
    mkdir -p "$claims" && c=$(mktemp "$claims/.clock.XXXXXX") && now=$(stat -c %Y "$c") && rm -f "$c"
}

# Renew claim $d/$g: an entry created and removed in it stamps its folder.
stamp() {
    r=$(mktemp "$d/$g/.renew.XXXXXX") && rm -f "$r"
}

# newest: the newest claim of $d (empty if none).
newest_claim() {
    newest=$(ls -1 "$d" | grep -E "^[0-9]{$gen_digits}\$" | sort | tail -n 1 || true)
}

# A number with $2 digits.
padded() {
    printf "%0${2}d" "$1"
}

# Whether claim $d/$g is the newest of $d, not ended, held by $holder and not expired
# (a holder never revives an expired claim: once a whole lease has passed, a taker
# may be counting the segments, so it has lost).
mine() {
    newest_claim
    [ "$newest" = "$g" ] && [ -e "$d/$g/holder+$holder" ] && [ ! -e "$d/$g/released" ] &&
        [ ! -e "$d/$g/failed" ] && [ $((now - $(stat -c %Y "$d/$g"))) -lt "$lease" ]
}

# Record a marker "$1-NNNN" of $d: the only one of its kind.
marker() {
    rm -f "$d/$1"-*
    : >"$d/$1-$(padded "$2" "$seg_digits")"
}

# Every claim, with its time: "<path below $claims>\t<mtime>", the store's clock first;
# then a line "decisions" and each decision to stop as grep says where it stopped:
# "$decisions/<system>/<goal>.json:"segments": <count>".
listing() {
    set -e
    clock
    echo "$now"
    # claims and markers come and go while we list: a vanished one is not an error
    find "$claims" -ignore_readdir_race -mindepth 3 -maxdepth 4 ! -name '.*' -printf '%P\t%T@\n' || true
    echo decisions
    if [ -d "$decisions" ]; then
        find "$decisions" -mindepth 2 -maxdepth 2 -name '*.json' ! -name '.*' \
            -exec grep -o -H '"segments": [0-9]*' {} + 2>/dev/null || true
    fi
}

# Take simulation $d for $holder, unless a live holder has it. Given: segments (the
# simulation's folder of segments in the store), total (its number of segments),
# analysis (its analysis's record in the store), info (what the holder file says),
# migrate (yes/no), origin_here ("origin+<site>"), dead (holders known to have
# stopped, space-separated "holder+..." words). Says: claimed <claim> <done> | held
# <done> <holder> <age> | complete <done> | failed <done> <failures> | pinned <done>
# <site> | reserved <done> <site> | lost <done>.
claim() {
    set -e
    clock
    mkdir -p "$d"
    # the segments in the store, counted in the store itself
    n=0
    while [ -f "$segments/$(padded "$n" "$seg_digits")/$record" ]; do n=$((n + 1)); done
    marker segments "$n"
    if [ "$n" -ge "$total" ] && [ -f "$analysis" ]; then
        marker analyzed "$n"
        echo "complete $n"
        return 0
    fi
    newest_claim
    if [ -n "$newest" ]; then
        current=$(ls -1 "$d/$newest" | grep '^holder+' | head -n 1 || true)
        if [ ! -e "$d/$newest/released" ] && [ ! -e "$d/$newest/failed" ]; then
            age=$((now - $(stat -c %Y "$d/$newest")))
            if [ "$current" = "holder+$holder" ] && [ "$age" -lt "$lease" ]; then
                g=$newest
                stamp
                echo "claimed $newest $n"
                return 0
            fi
            gone=no
            set -f # the names are words to compare, not patterns
            for h in $dead; do [ "$current" = "$h" ] && gone=yes; done
            set +f
            if [ "$age" -lt "$lease" ] && [ "$gone" = no ]; then
                echo "held $n ${current#holder+} $age"
                return 0
            fi
        elif [ -e "$d/$newest/released" ]; then
            # released for a site that asked for it (a hand-over): theirs for a lease
            asked=$(ls -1 "$d" | grep "^handover+$newest+" | sort | head -n 1 || true)
            if [ -n "$asked" ] && [ "${asked#handover+"$newest"+}" != "${origin_here#origin+}" ] &&
                [ $((now - $(stat -c %Y "$d/$newest/released"))) -lt "$lease" ]; then
                echo "reserved $n ${asked#handover+"$newest"+}"
                return 0
            fi
        fi
        next=$(padded $((1$newest - 1$(padded 0 "$gen_digits") + 1)) "$gen_digits")
    else
        next=$(padded 0 "$gen_digits")
    fi
    failures=$(find "$d" -mindepth 2 -maxdepth 2 -name failed | wc -l)
    if [ "$failures" -ge "$max_failures" ]; then
        echo "failed $n $failures"
        return 0
    fi
    origin=$(ls -1 "$d" | grep '^origin+' | head -n 1 || true)
    if [ "$migrate" = no ] && [ -n "$origin" ] && [ "$origin" != "$origin_here" ]; then
        echo "pinned $n ${origin#origin+}"
        return 0
    fi
    mkdir "$d/$next" 2>/dev/null || {
        echo "lost $n"
        return 0
    }
    printf '%s\n' "$info" >"$d/$next/holder+$holder"
    rm -rf "$d"/handover+*
    # older claims go, but the previous one (and every failed one: they count)
    for old in $(ls -1 "$d" | grep -E "^[0-9]{$gen_digits}\$"); do
        if [ $((1$old)) -lt $((1$next - 1)) ] && [ ! -e "$d/$old/failed" ]; then rm -rf "${d:?}/$old"; fi
    done
    echo "claimed $next $n"
}

# Renew claim $d/$g of $holder; says $1 if it is no longer theirs, and h$1+<site> if
# a site asked to take it over at the end of its current segment.
renew() {
    if mine; then
        stamp
        asked=$(ls -1 "$d" | grep "^handover+$g+" | sort | head -n 1 || true)
        if [ -n "$asked" ]; then echo "h$1+${asked#handover+"$g"+}"; fi
    else
        echo "$1"
    fi
}

# Ask, for $site, to take over claim $d/$g at the end of its holder's current segment
# (`sites.handover_gain`). Says asked, or gone if that claim is no longer held.
ask() {
    clock || exit 3
    newest_claim
    if [ "$newest" = "$g" ] && [ ! -e "$d/$g/released" ] && [ ! -e "$d/$g/failed" ]; then
        mkdir "$d/handover+$g+$site" 2>/dev/null || true
        echo asked
    else
        echo gone
    fi
}

# Withdraw $site's request for claim $d/$g.
withdraw() {
    rmdir "$d/handover+$g+$site" 2>/dev/null || true
}

# Succeed only while $holder's claim $d/$g is theirs and was renewed less than half a
# lease ago: run just before a rename into place.
guard() {
    clock || exit 1
    if mine && [ $((now - $(stat -c %Y "$d/$g"))) -lt $((lease / 2)) ]; then exit 0; fi
    echo "lease lost: another site took over $simulation (claim $g is no longer the newest, or was not renewed in time); this copy is discarded" >&2
    exit 1
}

# After a segment (or the analysis of $done segments, if $kind is "analyzed") reached
# the store: record progress, origin ($origin_here, after segment 0) and speed ($speed:
# "speed+<site>+<ns/day>", or empty), and renew; progress parked in $parked_dir for a
# segment now stored goes. Says ok, or lost.
published() {
    if mine; then
        stamp
        marker "$kind" "$done"
        for p in "$d"/parked-*; do
            [ -e "$p" ] || continue
            s=${p##*/parked-}
            s=$(expr "${s%%+*}" + 0) # no leading zeros: not octal
            if [ "$s" -lt "$done" ]; then
                rm -f "$p"
                rm -rf "${parked_dir:?}"
            fi
        done
        if [ "$done" -eq 1 ] && [ -n "$origin_here" ]; then : >"$d/$origin_here"; fi
        if [ -n "$speed" ]; then
            rm -f "$d/${speed%+*}"+*
            : >"$d/$speed"
        fi
        echo ok
    else
        echo lost
    fi
}

# After segment $segment's progress up to step $step was parked in the store: say so
# (the only marker of its kind) and renew. Says ok, or lost.
parked() {
    if mine; then
        stamp
        rm -f "$d"/parked-*
        : >"$d/parked-$(padded "$segment" "$seg_digits")+$step"
        echo ok
    else
        echo lost
    fi
}

# End claim $d/$g of $holder: $end is "released" or "failed".
release() {
    if mine; then : >"$d/$g/$end"; fi
}
