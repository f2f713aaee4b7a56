#!/usr/bin/env bash
# Plants each bug of a folder of patches in a copy of the repository and runs the test its
# patch names: every bug must make its test FAIL, within LIMIT (10) seconds of test time.
#
#   bash l4/testdata/planted/run.sh            # every patch of this folder (the data path)
#   bash l4/testdata/planted/run.sh 04 17      # the patches whose names start so
#   PLANTED=app/testdata/planted bash l4/testdata/planted/run.sh   # the wiring's
#
# A patch says which test catches it (# caught by: TestX or TestX/sub), when not l4's in
# which package (# in: ./app/), and when its bug is in one engine's code, which (# engine:
# epoll); the others run on LB_ENGINE's engine, or the default.
# Prints one row per patch (patch, test, caught, seconds) and exits 1 if any bug was not caught
# in time, 2 if the tests fail without any bug planted.
set -u
repo=$(cd "$(dirname "$0")/../../.." && pwd)
here=$(cd "$repo/${PLANTED:-l4/testdata/planted}" && pwd)
limit=${LIMIT:-10}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A copy of the working tree, without .git: the patches apply to the code as it is now, and
# each is taken back out (git apply -R) before the next.
mkdir "$work/repo"
tar -C "$repo" --exclude=.git -cf - . | tar -C "$work/repo" -xf -

patches=()
for p in "$here"/*.patch; do
	name=$(basename "$p" .patch)
	if [ $# -eq 0 ]; then
		patches+=("$p")
	else
		for prefix in "$@"; do [[ $name == "$prefix"* ]] && patches+=("$p") && break; done
	fi
done

# -run pattern of a test name: TestX, or TestX/sub_test for one subtest.
pattern() {
	local IFS=/ out="" part
	for part in $1; do out+="${out:+/}^${part}\$"; done
	echo "$out"
}
header() { sed -n "s/^# $1: //p" "$2" | head -1; }
pkgof() { local p; p=$(header in "$1"); echo "${p:-./l4/}"; }
# The engine a patch's test runs on: its "# engine:" (a bug in one engine's code), else
# LB_ENGINE's, else the default.
engineof() { local e; e=$(header engine "$1"); echo "${e:-${LB_ENGINE:-auto}}"; }
runtest() { # dir package pattern log engine
	(cd "$1" && LB_ENGINE="$5" go test -count=1 -timeout 60s -run "$3" "$2" </dev/null >"$4" 2>&1)
}

# Without any bug, every named test must pass, on the engine it runs on.
for pe in $(for p in "${patches[@]}"; do echo "$(pkgof "$p")@$(engineof "$p")"; done | sort -u); do
	pkg=${pe%@*} engine=${pe#*@}
	tests=$(for p in "${patches[@]}"; do [ "$(pkgof "$p")@$(engineof "$p")" = "$pe" ] && header "caught by" "$p" | cut -d/ -f1; done | sort -u | paste -sd'|')
	if ! runtest "$work/repo" "$pkg" "^($tests)\$" "$work/baseline.log" "$engine"; then
		echo "the tests of $pkg fail on $engine with no bug planted:" >&2
		tail -30 "$work/baseline.log" >&2
		exit 2
	fi
done

printf '%-48s %-74s %-7s %s\n' PATCH TEST CAUGHT SECONDS
missed=0
for p in "${patches[@]}"; do
	name=$(basename "$p" .patch)
	test=$(header "caught by" "$p")
	pkg=$(pkgof "$p")
	log="$work/$name.log"
	caught=no secs=-
	if ! (cd "$work/repo" && git apply "$p" 2>"$log"); then
		caught="no (patch does not apply)"
	else
		start=$(date +%s.%N)
		runtest "$work/repo" "$pkg" "$(pattern "$test")" "$log" "$(engineof "$p")"
		rc=$?
		(cd "$work/repo" && git apply -R "$p")
		wall=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
		top=${test%%/*}
		# The test's own time; after a panic, the package's; else the wall clock.
		secs=$(sed -n "s/^--- FAIL: $top (\([0-9.]*\)s)$/\1/p" "$log" | head -1)
		[ -n "$secs" ] || secs=$(sed -n 's/^FAIL[[:space:]]lb\/[a-z0-9/]*[[:space:]]\([0-9.]*\)s$/\1/p' "$log" | head -1)
		[ -n "$secs" ] || secs=$(printf '%.2f' "$wall")
		if grep -q -e '\[build failed\]' -e '\[setup failed\]' "$log"; then
			caught="no (does not build)"
		elif grep -q 'no tests to run' "$log"; then
			caught="no (no such test)"
		elif [ $rc -ne 0 ] && awk -v s="$secs" -v l="$limit" 'BEGIN { exit !(s < l) }'; then
			caught=yes
		elif [ $rc -ne 0 ]; then
			caught="late"
		fi
	fi
	printf '%-48s %-74s %-7s %s\n' "$name" "$test" "$caught" "$secs"
	if [ "$caught" != yes ]; then
		missed=$((missed + 1))
		[ -n "${VERBOSE:-}" ] && tail -20 "$log"
	fi
done
echo "${#patches[@]} planted bugs, $((${#patches[@]} - missed)) caught within ${limit}s"
[ $missed -eq 0 ]
