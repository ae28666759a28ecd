#!/usr/bin/env bash
# Build clinibox-receiver, the box's native DICOM receiver (native/receiver/, dcmtk), into OUT.
#   scripts/build-receiver.sh OUT [SOURCE]
# Where g++ or dcmtk's headers are missing it says so and builds nothing: the box then
# receives with pynetdicom (`[dicom] receiver = "auto"`). Debian: apt-get install g++ libdcmtk-dev
set -euo pipefail
OUT=${1:?usage: build-receiver.sh OUT [SOURCE]}
SOURCE=${2:-$(dirname "$0")/../native/receiver/clinibox_receiver.cc}
if ! command -v g++ >/dev/null \
        || ! echo '#include <dcmtk/dcmnet/scp.h>' | g++ -fsyntax-only -x c++ - 2>/dev/null; then
    echo "clinibox-receiver not built (needs g++ and dcmtk's headers: apt-get install g++" \
         "libdcmtk-dev); the box receives DICOM with pynetdicom" >&2
    exit 0
fi
g++ -O2 -std=c++17 -Wall -Wextra -Werror -o "$OUT.part" "$SOURCE" \
    -ldcmtls -ldcmnet -ldcmdata -loflog -lofstd
mv "$OUT.part" "$OUT"
