#include "kernels/int8_gemm.h"

#include <algorithm>
#include <cstring>

#include "cpu.h"
#include "threadpool.h"

namespace kiln {

PackedInt8B pack_int8_b(const int8_t* B, size_t K, size_t N, size_t ldb) {
  PackedInt8B p;
  p.K = K;
  p.N = N;
  p.Kq = (K + 3) / 4 * 4;
  const size_t panels = (N + kInt8Nr - 1) / kInt8Nr;
  p.panels.assign(panels * p.Kq * kInt8Nr, 0);
  p.col_sums.assign(N, 0);
  for (size_t k = 0; k < K; ++k)
    for (size_t n = 0; n < N; ++n) {
      const int8_t v = B[k * ldb + n];
      const size_t panel = n / kInt8Nr, col = n % kInt8Nr;
      // panel, then k quad, then column, then k within the quad
      p.panels[(panel * p.Kq + (k / 4) * 4) * kInt8Nr + col * 4 + k % 4] = v;
      p.col_sums[n] += v;
    }
  return p;
}

void kiln_u8s8_gemm_ukernel__generic(size_t rows, size_t Kq, const uint8_t* a, const int8_t* b,
                                     int32_t* c, size_t ldc, size_t cols) {
  for (size_t r = 0; r < rows; ++r)
    for (size_t j = 0; j < cols; ++j) {
      int32_t acc = 0;
      for (size_t q = 0; q < Kq; q += 4)
        for (size_t t = 0; t < 4; ++t)
          acc += int32_t(a[r * Kq + q + t]) * int32_t(b[q * kInt8Nr + j * 4 + t]);
      c[r * ldc + j] = acc;
    }
}

namespace {

int8_ukernel_fn select_ukernel() {
#if KILN_HAS_X86
  const CpuFeatures& f = cpu_features();
  if (active_isa() == Isa::avx512 && f.avx512_vnni) return kiln_u8s8_gemm_ukernel__avx512vnni;
#endif
  return kiln_u8s8_gemm_ukernel__generic;
}

}  // namespace

const char* int8_gemm_kernel_name() {
  return select_ukernel() == kiln_u8s8_gemm_ukernel__generic ? "generic" : "avx512_vnni";
}

void gemm_u8s8s32(size_t M, const uint8_t* A, size_t lda, const PackedInt8B& B, int32_t* C,
                  size_t ldc, ThreadPool* pool) {
  if (M == 0 || B.N == 0) return;
  const int8_ukernel_fn kernel = select_ukernel();
  const size_t Kq = B.Kq, K = B.K;
  const size_t mblocks = (M + kInt8Mr - 1) / kInt8Mr;
  const size_t panels = (B.N + kInt8Nr - 1) / kInt8Nr;
  // Rows of A copied with K padded to Kq (zeros add nothing), one M block at a time.
  auto run = [&](size_t t0, size_t t1) {
    std::vector<uint8_t> a(kInt8Mr * Kq, 0);
    for (size_t mb = t0; mb < t1; ++mb) {
      const size_t i0 = mb * kInt8Mr, rows = std::min(kInt8Mr, M - i0);
      for (size_t r = 0; r < rows; ++r) std::memcpy(&a[r * Kq], A + (i0 + r) * lda, K);
      for (size_t p = 0; p < panels; ++p) {
        const size_t j0 = p * kInt8Nr, cols = std::min(kInt8Nr, B.N - j0);
        kernel(rows, Kq, a.data(), B.panels.data() + p * Kq * kInt8Nr, C + i0 * ldc + j0, ldc,
               cols);
      }
    }
  };
  if (pool && M * B.N * K >= (1 << 18)) pool->parallel_for(mblocks, 1, run);
  else run(0, mblocks);
}

}  // namespace kiln
