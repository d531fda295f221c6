# Decisions to stop (continue until converged): the store operations of
# mdcampaign.convergence, as POSIX shell functions run in the store's root.
#
# Not run by itself: convergence.py puts the values it is given before this text, as
# quoted variable assignments, and a call after it. The layout values come from
# mdcampaign.layout, never written here:
#   sims          the simulations' folder (layout.STORE_SIMS)
#   decisions     the decisions' folder (layout.STORE_DECISIONS)
#   seg_digits    digits of a segment's number (layout.SEGMENT_DIGITS)
#   observables   a stored segment's observables file (layout.SEGMENT_OBSERVABLES)
#   system, goal  the system, and its goal's key (convergence.Goal.key)
#   replicas      the system's replica folders (r1 r2 ...)
# and for `series`, boundary (how many segments of each replica).

# A number with $2 digits.
padded() {
    printf "%0${2}d" "$1"
}

# Per replica: "r<n><TAB><segments stored with observables, in order>"; then, if the
# system's decision exists, a line "decision" and the decision.
state() {
    for r in $replicas; do
        n=0
        while [ -f "$sims/$system/$r/segments/$(padded "$n" "$seg_digits")/$observables" ]; do
            n=$((n + 1))
        done
        printf '%s\t%s\n' "$r" "$n"
    done
    if [ -f "$decisions/$system/$goal.json" ]; then
        echo decision
        cat "$decisions/$system/$goal.json"
    fi
}

# The observables of each replica's first $boundary segments, each file after a line
# "== r<n> <segment>".
series() {
    for r in $replicas; do
        k=0
        while [ "$k" -lt "$boundary" ]; do
            printf '== %s %s\n' "$r" "$k"
            cat "$sims/$system/$r/segments/$(padded "$k" "$seg_digits")/$observables" || exit 1
            k=$((k + 1))
        done
    done
}

# File the decision on stdin unless one was filed (a hard link: created whole, and
# only once); print the one that stands.
decide() {
    mkdir -p "$decisions/$system" || exit 1
    t=$(mktemp "$decisions/$system/.decision.XXXXXX") || exit 1
    cat > "$t" || { rm -f "$t"; exit 1; }
    ln "$t" "$decisions/$system/$goal.json" 2>/dev/null || true
    rm -f "$t"
    cat "$decisions/$system/$goal.json"
}
