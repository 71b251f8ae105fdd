#!/usr/bin/env bash
# Cross-builds the native engine's C++ core and its kernel test driver for aarch64 and runs
# the driver under QEMU user emulation on three CPU models: every feature QEMU models (-cpu max:
# NEON, dotprod, i8mm), dotprod without i8mm (cortex-a76) and no dotprod (cortex-a57,
# ARMv8.0), so every int8 path and the HWCAP dispatch are exercised. Timings under emulation
# mean nothing.
# Whole plans (a small CNN, a transformer block, an int8 MatMulInteger, an int8 convnet of
# QuantizeLinear -> QConv -> QMaxPool -> QConv -> DequantizeLinear) are compared with the
# outputs an x86 build recorded in expected_plans.txt (`kernel_driver --record FILE`).
#   bash tests/aarch64/run.sh            (BUILD_DIR defaults to /tmp/kiln-aarch64-build)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="${BUILD_DIR:-/tmp/kiln-aarch64-build}"
cpus="${QEMU_CPUS:-max cortex-a76 cortex-a57}"

need=()
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
command -v cmake >/dev/null || need+=(cmake)
if ((${#need[@]})); then
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$here" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$here/aarch64-toolchain.cmake" >/dev/null
cmake --build "$build" -j "${JOBS:-2}" >/dev/null

status=0
total_passed=0; total_failed=0
for cpu in $cpus; do
  echo "=== qemu-aarch64 -cpu $cpu ==="
  log="$build/driver-$cpu.log"
  if qemu-aarch64 -cpu "$cpu" -L /usr/aarch64-linux-gnu "$build/kernel_driver" \
      --expect "$here/expected_plans.txt" >"$log" 2>&1; then
    :
  else
    status=1
  fi
  cat "$log"
  line=$(tail -n 1 "$log")
  if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    total_passed=$((total_passed + BASH_REMATCH[1]))
    total_failed=$((total_failed + BASH_REMATCH[2]))
  else
    echo "driver under -cpu $cpu did not finish (last line: $line)"
    total_failed=$((total_failed + 1))
    status=1
  fi
done
echo "=== all CPU models ($cpus) ==="
echo "$total_passed passed, $total_failed failed"
exit $status
