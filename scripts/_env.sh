# Sourced by scripts/test and scripts/demo: create .venv once and install flexaudit into it.
# torch is installed first and alone, pinned to the CPU build that is already on the machine, so that
# nothing later resolves it to a multi-gigabyte CUDA build.
VENV="${FLEXAUDIT_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
stamp="$VENV/.flexaudit-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test]"
    touch "$stamp"
fi
