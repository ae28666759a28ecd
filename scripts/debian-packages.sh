#!/bin/sh
# Print the Debian packages of one section of scripts/debian-packages.txt (box, box-build, test
# or image), one a line: apt-get install --no-install-recommends $(scripts/debian-packages.sh test)
set -eu
[ $# -eq 1 ] || { echo "usage: $0 box|box-build|test|image" >&2; exit 2; }
list="$(dirname "$0")/debian-packages.txt"
grep -qx "\[$1\]" "$list" || { echo "$0: no section [$1] in $list" >&2; exit 2; }
awk -v want="[$1]" '/^\[/ { inside = ($1 == want); next }
                    inside && /^[a-z0-9]/ { print $1 }' "$list"
