#!/bin/bash
# The GPU suite in one device call (docs/performance.md, "Running the suite on a GPU").
#
#   bash benchmarks/gpu_suite.sh piece     # append the onnxruntime-gpu wheel pieces carried in this call (.ortK)
#   bash benchmarks/gpu_suite.sh run       # append any carried piece, unpack the wheel if complete, run the suite
#
# The pieces come from /work/shared/tools/ort-gpu-wheel.sh (.ort1 ... .ortN at the repository root, at most 60 MiB
# each: one per device call, in order). They accumulate in /tmp/ortw on the GPU machine while it stays warm; the
# wheel is unpacked (a zip: no pip, no registry) into /tmp/ortsite and put on PYTHONPATH. Without it the suite still
# runs: every ONNX Runtime CUDA row then says "no CUDA provider".
# Results: $OUT/gpu_suite.json and $OUT/gpu_suite.md (rewritten after every row, so a run cut short keeps its rows).
# Environment: ORT_WHEEL_SHA256 (checked when set), SUITE_BUDGET_S (default 420: no new measurement after that),
# SUITE_TIMEOUT_S (default 540: the suite is stopped there), SUITE_ARGS (extra arguments for gpu_suite.py).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-outputs/gpu_suite}
mkdir -p "$OUT" /tmp/ortw
wheel=/tmp/ortw/onnxruntime_gpu.whl

append_pieces() {
  for d in .ort1 .ort2 .ort3 .ort4 .ort5 .ort6 .ort7 .ort8; do
    [ -d "$d" ] || continue
    if grep -qx "$d" /tmp/ortw/done 2>/dev/null; then echo "piece $d already appended"; continue; fi
    cat "$d"/part* >> "$wheel.part" && echo "$d" >> /tmp/ortw/done && echo "appended $d ($(du -h "$wheel.part" | cut -f1) so far)"
  done
}

install_wheel() {
  [ -d /tmp/ortsite/onnxruntime ] && return 0
  [ -f "$wheel.part" ] || { echo "no onnxruntime-gpu pieces on this machine: ONNX Runtime rows will say why"; return 1; }
  if [ -n "${ORT_WHEEL_SHA256:-}" ]; then
    got=$(sha256sum "$wheel.part" | cut -d' ' -f1)
    [ "$got" = "$ORT_WHEEL_SHA256" ] || { echo "wheel incomplete or damaged (sha256 $got): carry the missing pieces"; return 1; }
  fi
  python3 -m zipfile -e "$wheel.part" /tmp/ortsite && echo "onnxruntime-gpu unpacked into /tmp/ortsite"
}

case "${1:-run}" in
  piece)
    append_pieces
    ;;
  run)
    append_pieces
    install_wheel && export PYTHONPATH="/tmp/ortsite:$PYTHONPATH"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt"
    python3 -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers())' 2>&1 | tail -1
    # shellcheck disable=SC2086
    timeout "${SUITE_TIMEOUT_S:-540}" python3 benchmarks/gpu_suite.py --out "$OUT" --budget-s "${SUITE_BUDGET_S:-420}" \
      ${SUITE_ARGS:-} 2>&1 | tee "$OUT/gpu_suite.log" | grep -v -e "Warning" -e "warn(" -e "_rename_dynamic_axes"
    echo "exit ${PIPESTATUS[0]}; results in $OUT:"; ls -la "$OUT"
    ;;
  *)
    echo "usage: bash benchmarks/gpu_suite.sh [piece|run]" >&2; exit 2
    ;;
esac
