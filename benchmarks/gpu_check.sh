#!/usr/bin/env bash
# One GPU check of otpipe (issue 13): needs no network, at most 6 minutes on a fresh GPU machine (the steps'
# time limits add up to 330 s), and writes ONE markdown table, $OUT/gpu_check.md (with the logs beside it:
# 6 files under $OUT).
#
#   bash benchmarks/gpu_check.sh               # on the GPU machine, from the repository root
#   bash benchmarks/gpu_check.sh --cpu-smoke   # anywhere: the same steps at tiny sizes on the CPU (Triton's
#                                              # interpreter, CPU Dask workers): catches typos, measures nothing
#
# Steps, each under its own `timeout`, the next one running whatever the previous did:
#   1. `pytest -m gpu` (the GPU tests: Triton kernels against the dense reference, multiscale on CUDA, GPU tasks)
#   2. benchmarks/bench_gpu.py: otpipe triton vs flash-sinkhorn fp32/tf32 vs otpipe tensorized (20k, 50k; D = 3,
#      64), 200k, multiscale with gradients at 200k and 1M
#   3. benchmarks/bench_gpu.py --sections digits: the S_eps matrix of the 1,797 scikit-learn digits by
#      `otpipe distances --gpus` (the 2-core CPU figure, measured on the CPU machine, is $DIGITS_CPU)
#   4. `otpipe distances --gpus` on a synthetic collection, compared with a CPU run of the same collection
#
# Environment: OUT (output folder; default ./out/gpu_check), PYTHON (default python3), DIGITS_CPU (text of the
# CPU figure). Wheels in .whl/ (no network) are installed into /tmp/site first when that folder is absent.
# KeOps is blocked (a stub `pykeops` that raises ImportError): it segfaults on the CUDA 13 stack it was tried on,
# and nothing of this check needs it.
set -u
cd "$(dirname "$0")/.."
SMOKE=0
[ "${1:-}" = "--cpu-smoke" ] && SMOKE=1
OUT=${OUT:-$PWD/out/gpu_check}
PY=${PYTHON:-python3}
DIGITS_CPU=${DIGITS_CPU:-"236 s run (248 s command), 2-core AMD EPYC, load 9-10 (shared machine), 2026-12-01"}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/otpipe-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
T_START=$(date +%s)

# --- environment: wheels, the KeOps blocker, otpipe from this checkout
if [ "$SMOKE" = 0 ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && [ ! -d /tmp/site ]; then
    echo "+ installing the wheels of .whl/ into /tmp/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || echo "warning: wheel install failed" >&2
fi
mkdir -p "$WORK/block/pykeops" "$WORK/block/keopscore"
for m in pykeops keopscore; do
    echo "raise ImportError('$m is blocked by benchmarks/gpu_check.sh (KeOps is never needed here)')" \
        > "$WORK/block/$m/__init__.py"
done
SITE=""
[ -d /tmp/site ] && [ "$SMOKE" = 0 ] && SITE="/tmp/site:"
export PYTHONPATH="$WORK/block:$SITE$PWD"
if [ "$SMOKE" = 1 ]; then
    export TRITON_INTERPRET=1
    DEVICE_ARGS=(--device cpu --small --repeats 1)
    GPUS_FLAG=(--n-workers 2)
    K=4   # the CPU (interpreter, 2 cores) needs longer time limits
else
    unset TRITON_INTERPRET
    DEVICE_ARGS=(--device cuda --repeats 2)
    GPUS_FLAG=(--gpus)
    K=1
fi
status() { echo "$1" >> "$WORK/rows.txt"; }

# --- 1. pytest -m gpu
echo "+ [1/4] pytest -m gpu"
t0=$(date +%s)
if [ "$SMOKE" = 1 ]; then   # no GPU: the GPU tests' code dry-run at small sizes where they allow it
    TESTS=(tests/geometry/test_triton.py -k "gpu_agrees or fuses or pipeline_tasks or multiscale_on_triton")
    PYTEST_MARK=()
else
    TESTS=(tests/geometry tests/solvers/test_multiscale_device.py tests/solvers/test_fused.py tests/pipelines/test_gpu_workers.py tests/test_package.py)   # every gpu-marked test
    PYTEST_MARK=(-m gpu)
fi
timeout $((100 * K)) "$PY" -m pytest -q -p no:cacheprovider --continue-on-collection-errors "${PYTEST_MARK[@]}" "${TESTS[@]}" > "$OUT/pytest.log" 2>&1
rc=$?
summary=$(grep -E "(passed|failed|error|skipped|no tests ran)" "$OUT/pytest.log" | tail -1 | tr '|' '/')
status "| pytest ${PYTEST_MARK[*]} | | | exit $rc$([ $rc = 124 ] && echo ' (timed out)') | $(( $(date +%s) - t0 )) s | ${summary:-see pytest.log} | | | |"

# --- 2. the benchmark rows
echo "+ [2/4] bench_gpu.py (solver, multiscale, large)"
timeout $((120 * K)) "$PY" benchmarks/bench_gpu.py "${DEVICE_ARGS[@]}" --sections solver,multiscale,large --budget $((100 * K)) \
    --out "$OUT/bench_main.md" > "$OUT/bench.log" 2>&1
rc=$?
[ $rc = 0 ] || status "| bench_gpu.py solver/large/multiscale | | | exit $rc$([ $rc = 124 ] && echo ' (timed out)') | | see bench.log | | | |"

# --- 3. the digits matrix on GPU workers
echo "+ [3/4] bench_gpu.py --sections digits"
timeout $((60 * K)) "$PY" benchmarks/bench_gpu.py "${DEVICE_ARGS[@]}" --sections digits --digits-cpu "$DIGITS_CPU" \
    --workdir "$WORK/digits" --out "$OUT/bench_digits.md" >> "$OUT/bench.log" 2>&1
rc=$?
[ $rc = 0 ] || status "| bench_gpu.py digits | | | exit $rc$([ $rc = 124 ] && echo ' (timed out)') | | see bench.log | | | |"

# --- 4. otpipe distances --gpus on a synthetic collection vs a CPU run of it
echo "+ [4/4] otpipe distances ${GPUS_FLAG[*]} vs CPU workers"
if [ "$SMOKE" = 1 ]; then NM=(--n-measures 12 --n-points 40 --min-points 10); else NM=(--n-measures 80 --n-points 300 --min-points 50); fi
{
    "$PY" -m otpipe.cli synth --out "$WORK/syn.zarr" --kind mixed "${NM[@]}" --dim 3 --seed 1 &&
    s0=$(date +%s.%N) &&
    timeout $((25 * K)) "$PY" -m otpipe.cli distances "$WORK/syn.zarr" --out "$WORK/gpu.zarr" "${GPUS_FLAG[@]}" --dtype float64 \
        -q --no-progress &&
    s1=$(date +%s.%N) &&
    timeout $((25 * K)) "$PY" -m otpipe.cli distances "$WORK/syn.zarr" --out "$WORK/cpu.zarr" --n-workers 4 --dtype float64 \
        --backend tensorized -q --no-progress &&
    s2=$(date +%s.%N) &&
    "$PY" - "$WORK" "$s0" "$s1" "$s2" "${GPUS_FLAG[*]}" >> "$WORK/rows.txt" <<'EOF'
import sys
import numpy as np
from otpipe.engine.result import open_result
w, s0, s1, s2, flag = sys.argv[1], *map(float, sys.argv[2:5]), sys.argv[5]
g, c = open_result(f"{w}/gpu.zarr"), open_result(f"{w}/cpu.zarr")
G, C = g.divergence.values, c.divergence.values
n = G.shape[0]
rel = float(np.abs(G - C).max() / np.abs(C).max())
gpu_workers = sum(1 for k in g.attrs.get("workers", {}))
print(f"| distances {flag}, synthetic, float64 | {n} measures ({n * (n - 1) // 2:,} pairs) | 3 | "
      f"otpipe distances {flag} (gpu={g.attrs.get('gpu')}, device={g.attrs['parameters'].get('device')}, "
      f"{gpu_workers} worker(s)) | {g.attrs['seconds']:.1f} s run, {s1 - s0:.1f} s command | - | {rel:.1e} vs CPU run | - | - |")
print(f"| distances, synthetic, float64 | {n} measures | 3 | same, CPU workers (--n-workers 4 --backend tensorized) | "
      f"{c.attrs['seconds']:.1f} s run, {s2 - s1:.1f} s command | - | reference | - | - |")
EOF
} > "$OUT/distances.log" 2>&1 || status "| distances ${GPUS_FLAG[*]} vs CPU | | | FAILED | | see distances.log: $(tail -1 "$OUT/distances.log" | cut -c1-150 | tr '|' '/') | | | |"

# --- the one table
"$PY" - "$OUT" "$WORK/rows.txt" "$(( $(date +%s) - T_START ))" "$SMOKE" <<'EOF'
import sys
from pathlib import Path
out, rows_file, total, smoke = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
machine, notes, head, rows = "", "", [], []
for name in ("bench_main.md", "bench_digits.md"):
    p = out / name
    if not p.exists():
        continue
    lines = p.read_text().splitlines()
    machine = machine or next((l for l in lines if l.startswith("Machine:")), "")
    notes = notes or next((l for l in lines if l.startswith("S_eps value")), "")
    table = [l for l in lines if l.startswith("|")]
    head = head or table[:2]
    rows += table[2:]
extra = rows_file.read_text().splitlines() if rows_file.exists() else []
if not head:
    head = ["| figure | N = M | D | implementation | time | S_eps | rel. err. value | rel. err. grad | speed-up |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
title = "# otpipe GPU check" + (" (CPU smoke test: nothing here is a measurement)" if smoke else "")
text = "\n".join([title, "", machine or "Machine: (bench_gpu.py wrote no machine line: see bench.log)", "",
                  notes, "", f"Whole check: {total} s (`bash benchmarks/gpu_check.sh`).", "",
                  *head, *rows, *extra]) + "\n"
(out / "gpu_check.md").write_text(text)
print(text)
EOF
echo "wrote $OUT/gpu_check.md ($(( $(date +%s) - T_START )) s)"
