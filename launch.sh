#!/usr/bin/env bash
# cnnjax launcher.
#   ./launch.sh [absl flags...]        train/evaluate: python -m cnnjax.main with those flags
#                                      (installed, the same is the `cnnjax` command)
#   ./launch.sh test [pytest args...]  run the test suite
# The interpreter is $CNNJAX_PYTHON, else `python3`. If it cannot import cnnjax, a virtual
# environment is made in <repo>/.venv with `pip install -e .[$CNNJAX_EXTRAS]` (default `test`;
# `test,torch` adds torch for .pth files and the torchvision parity tests) and reused
# afterwards (reinstalled when pyproject.toml or the extras change).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$repo/.venv"
stamp="$venv/.cnnjax-installed"
base_python="${CNNJAX_PYTHON:-python3}"
extras="${CNNJAX_EXTRAS:-test}"

can_import_cnnjax() {  # run from / so the source tree on the cwd does not count as installed
  (cd / && "$1" -c 'import cnnjax' >/dev/null 2>&1)
}

install_stamp() {  # what the venv was installed from
  echo "$(sha256sum "$repo/pyproject.toml" | cut -c1-16) [$extras]"
}

ensure_venv() {
  if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$(install_stamp)" ]]; then
    return
  fi
  echo "cnnjax: setting up $venv with $("$base_python" --version 2>&1) (pip install -e .[$extras]; a minute or more, once)" >&2
  [[ -x "$venv/bin/python" ]] || "$base_python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet -e "$repo[$extras]" >&2
  install_stamp > "$stamp"
}

if [[ -z "${CNNJAX_PYTHON:-}" && -x "$venv/bin/python" ]] || ! can_import_cnnjax "$base_python"; then
  ensure_venv
  python="$venv/bin/python"
else
  python="$base_python"
fi

# Accelerators: JAX uses a TPU, else a GPU, else the CPU; JAX_PLATFORMS=cpu|cuda|tpu forces one.
# On a GPU JAX reserves a fraction of its memory at start-up (75% by default); cnnjax asks for
# 90%, leaving the rest to the input pipeline's other users. Set XLA_PYTHON_CLIENT_MEM_FRACTION
# yourself to change it, or XLA_PYTHON_CLIENT_PREALLOCATE=false to allocate on demand.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
# Several processes (hosts): run this script once per process with the same flags. Under
# SLURM (srun), Open MPI (mpirun) or on a TPU pod they find each other by themselves;
# elsewhere add --coordinator_address=host0:1234 --num_processes=N --process_id=i (or set
# JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).

# Compiled XLA programs are cached across launches (the second launch skips most compile time).
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cnnjax/jax_cache}"

if [[ "${1:-}" == "test" ]]; then
  shift
  cd "$repo"
  exec "$python" -m pytest "$@"
fi

# cnnjax.main adds its measured-fastest XLA flags (cnnjax/runtime.py) to XLA_FLAGS.
exec "$python" -m cnnjax.main "$@"
