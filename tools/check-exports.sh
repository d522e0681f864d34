#!/bin/sh
# Checks the dynamic symbols libpatternkv exports: the public API (include/patternkv, marked
# PATTERNKV_API) and the standard-library template instances it uses, nothing internal.
# Usage: tools/check-exports.sh path/to/libpatternkv.so
set -eu
lib=$1
syms=$(nm -D --defined-only "$lib" | awk '{ $1 = ""; $2 = ""; sub(/^ +/, ""); print }' | c++filt)
[ -n "$syms" ] || { echo "check-exports: $lib exports no symbols"; exit 1; }
status=0
internal=$(printf '%s\n' "$syms" | grep -E 'patternkv::(core|detail|simd|gpu|reference)::|layer_cache_state|cpu_backend|tbb::|fmt::' || true)
if [ -n "$internal" ]; then
    echo "check-exports: internal symbols are exported:"; printf '%s\n' "$internal" | head -20; status=1
fi
# whatever is neither ours nor a standard-library instance (typeinfo and vtables included)
foreign=$(printf '%s\n' "$syms" | sed -E 's/^(typeinfo name for|typeinfo for|vtable for|guard variable for) //' |
          grep -vE '^(void |bool |char |int |unsigned |long |float |double )?(std::|__gnu_cxx::|patternkv::)' |
          grep -vE '^(_init|_fini|_edata|_end|__bss_start)$' || true)
if [ -n "$foreign" ]; then
    echo "check-exports: symbols outside the API:"; printf '%s\n' "$foreign" | head -20; status=1
fi
for api in 'patternkv::layer_cache::append(' 'patternkv::layer_cache::attend(' 'patternkv::save_model(' \
           'patternkv::load_layer(' 'patternkv::patternkv_config(int)' 'patternkv::config::validate() const' \
           'typeinfo for patternkv::error' 'patternkv::backend_unavailable_reason'; do
    printf '%s\n' "$syms" | grep -qF "$api" || { echo "check-exports: missing API symbol $api"; status=1; }
done
count=$(printf '%s\n' "$syms" | grep -c 'patternkv::' || true)
[ $status -eq 0 ] && echo "check-exports: $count patternkv symbols exported, none internal"
exit $status
