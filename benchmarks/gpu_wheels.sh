#!/usr/bin/env bash
# Wheels a bare GPU machine needs to run archsearch from this checkout: archsearch itself (so that
# `archsearch.plugins` and the entry points resolve) and the dependencies such a machine lacks.
#
#   bash benchmarks/gpu_wheels.sh [DIR] [PYTHON_VERSION]     # default: .whl, 3.12
#
# Run it here, in the repository root, with the project's venv (.venv, from `make test`). The
# versions are the ones installed in .venv, so the GPU runs what the tests ran. PyTorch, NumPy,
# pandas, PyYAML, tqdm, matplotlib, pytest and hypothesis are expected on the GPU machine already
# (a CUDA image); everything else is carried. Then, on the GPU machine (benchmarks/gpu_check.sh
# does this first):
#
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site DIR/*.whl
#   export PYTHONPATH=/tmp/site
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
PYV=${2:-3.12}
PY=${PY:-.venv/bin/python}
# Pure-Python or manylinux wheels; SQLAlchemy has a compiled speed-up, so it is fetched for $PYV.
CARRIED="optuna sqlalchemy alembic mako colorlog cattrs attrs pluggy scikit-optimize pyaml cmaes typing-extensions"
rm -rf "$DIR"
mkdir -p "$DIR"
pins=()
for name in $CARRIED; do
  version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  pins+=("$name==$version")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$DIR" "${pins[@]}"
had_build=$([ -e build ] && echo yes || true)
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DIR" .
[ -n "$had_build" ] || rm -rf build  # setuptools' scratch folder, unless it was there before
ls -1 "$DIR"
du -sh "$DIR"
