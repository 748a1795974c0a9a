# Sourced by run_all.sh and train_check.sh. A GPU machine may lack packages esam needs, and
# may have no package index: their wheels travel in the git-ignored dist/wheels/ instead.

# esam_use_wheel PY ROOT MODULE PATTERN [SITE]: when PY cannot import MODULE, make the first
# wheel in ROOT/dist/wheels/ matching PATTERN importable. Without SITE the wheel itself goes on
# PYTHONPATH (pure-Python wheels import from the zip); with SITE it is installed into that
# folder first (wheels with compiled code). Nothing else is installed.
esam_use_wheel() {
    local py="$1" root="$2" module="$3" pattern="$4" site="${5:-}" whl
    if "$py" -c "import $module" >/dev/null 2>&1; then
        return 0
    fi
    for whl in "$root"/dist/wheels/$pattern; do
        [ -f "$whl" ] || continue
        if [ -z "$site" ]; then
            export PYTHONPATH="$PYTHONPATH:$whl"
            return 0
        fi
        if "$py" -m pip install -q --no-index --no-deps --target "$site" "$whl"; then
            export PYTHONPATH="$PYTHONPATH:$site"
            return 0
        fi
    done
}
