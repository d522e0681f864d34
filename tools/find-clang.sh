# Sourced by the clang-based CI scripts: sets CXX/CC to the newest Debian clang, or exits.
cxx=""
for c in clang++-15 clang++-14 clang++; do
  if command -v "$c" >/dev/null; then cxx=$c; break; fi
done
if [ -z "$cxx" ]; then echo "$(basename "$0"): no clang++ found (apt-get install clang)" >&2; exit 1; fi
export CXX=$cxx CC=${cxx/++/}
