#!/usr/bin/env bash
# Builds and runs the three consumer projects against libpatternkv:
#   meson_subproject  this repository as a Meson subproject, dependency('patternkv')
#   pkgconfig         the library installed (meson install --destdir) and found through pkg-config
#   cmake             the same installed tree found with find_package(patternkv)
# Each consumer compiles tests/consumers/consumer.cpp (prefill / append / attend, finite output,
# version macros equal to the project version). Prints one line per consumer; exits non-zero if any
# fails. Usage: tests/consumers/run.sh BUILD_DIR [SOURCE_DIR]   (BUILD_DIR must be built already)
set -uo pipefail
if [ $# -lt 1 ]; then echo "usage: $0 BUILD_DIR [SOURCE_DIR]" >&2; exit 2; fi
build=$(cd "$1" && pwd)
src=$(cd "${2:-$(dirname "$0")/../..}" && pwd)
here="$src/tests/consumers"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pkv-consumers.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
jobs=${PKV_CONSUMER_JOBS:-2}

read -r version prefix libdir < <(meson introspect "$build" --projectinfo --buildoptions | python3 -c '
import json, sys
d = json.load(sys.stdin)
opts = {o["name"]: o["value"] for o in d["buildoptions"]}
print(d["projectinfo"]["version"], opts["prefix"], opts["libdir"])')
case "$libdir" in /*) ;; *) libdir="$prefix/$libdir" ;; esac
stage="$tmp/stage"
root="$stage$prefix"
echo "libpatternkv $version from $build, staged under $stage"

if ! meson install -C "$build" --destdir "$stage" --no-rebuild --quiet >"$tmp/install.log" 2>&1; then
  cat "$tmp/install.log"
  echo "FAIL install (meson install --destdir)"
  exit 1
fi
export LD_LIBRARY_PATH="$stage$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# pkg-config reads the installed .pc file unmodified; its prefix is redirected into the staging
# directory (a DESTDIR-staged install is not where its .pc file says).
cat >"$tmp/pkg-config" <<EOF
#!/bin/sh
exec pkg-config --define-variable=prefix="$root" "\$@"
EOF
chmod +x "$tmp/pkg-config"

prepare() {  # prepare NAME: a copy of the consumer project with consumer.cpp beside its build file
  mkdir -p "$tmp/$1"
  cp -r "$here/$1/." "$tmp/$1/"
  cp "$here/consumer.cpp" "$tmp/$1/"
}

run_meson_subproject() {
  prepare meson_subproject
  mkdir -p "$tmp/meson_subproject/subprojects"
  ln -s "$src" "$tmp/meson_subproject/subprojects/patternkv"
  meson setup "$tmp/meson_subproject/build" "$tmp/meson_subproject" -Dexpected_version="$version" &&
    ninja -C "$tmp/meson_subproject/build" -j "$jobs" &&
    "$tmp/meson_subproject/build/consumer"
}

run_pkgconfig() {
  prepare pkgconfig
  local pc="$stage$libdir/pkgconfig"
  [ -f "$pc/patternkv.pc" ] || { echo "no patternkv.pc under $pc"; return 1; }
  local cflags
  cflags=$(PKG_CONFIG_PATH="$pc" "$tmp/pkg-config" --cflags patternkv) || return 1
  echo "pkg-config --cflags patternkv: $cflags"
  # the library's exactness flags are its own: they must not be imposed on consumers
  case " $cflags " in *" -ffp-contract="*|*" -fno-fast-math "*) echo "the library's compile flags leak to consumers"; return 1 ;; esac
  PKG_CONFIG="$tmp/pkg-config" PKG_CONFIG_PATH="$pc" \
    meson setup "$tmp/pkgconfig/build" "$tmp/pkgconfig" -Dexpected_version="$version" &&
    ninja -C "$tmp/pkgconfig/build" -j "$jobs" &&
    "$tmp/pkgconfig/build/consumer"
}

run_cmake() {
  prepare cmake
  [ -f "$stage$libdir/cmake/patternkv/patternkvConfig.cmake" ] || { echo "no patternkvConfig.cmake"; return 1; }
  cmake -S "$tmp/cmake" -B "$tmp/cmake/build" -DCMAKE_PREFIX_PATH="$root" -DPKV_EXPECTED_VERSION="$version" \
    -DCMAKE_BUILD_TYPE=Release &&
    cmake --build "$tmp/cmake/build" -j "$jobs" --verbose &&
    "$tmp/cmake/build/consumer"
}

failed=0
summary=()
for c in meson_subproject pkgconfig cmake; do
  start=$SECONDS
  if "run_$c" >"$tmp/$c.log" 2>&1; then
    result="PASS"
  else
    result="FAIL"
    failed=1
    echo "---- $c log ----"
    cat "$tmp/$c.log"
    echo "---- end of $c log ----"
  fi
  line="$result $c ($((SECONDS - start)) s): $(tail -n 1 "$tmp/$c.log")"
  summary+=("$line")
  echo "$line"
done
echo "consumers: ${#summary[@]} run, $(printf '%s\n' "${summary[@]}" | grep -c '^FAIL') failed"
exit $failed
