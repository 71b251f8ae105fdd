#include "kernels/int8_gemm.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "cpu.h"
#include "kernels/int8_row_ukernel.h"
#include "kernels/ukernels.h"
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

void kiln_u8s8_gemm_ukernel__generic(size_t rows, size_t nseg, size_t seg_len,
                                     const uint8_t* const* a, const int8_t* b, int32_t* c,
                                     size_t ldc, size_t cols) {
  for (size_t r = 0; r < rows; ++r)
    for (size_t j = 0; j < cols; ++j) {
      int32_t acc = 0;
      for (size_t s = 0; s < nseg; ++s) {
        const uint8_t* ar = a[r * nseg + s];
        const int8_t* bs = b + s * seg_len * kInt8Nr;
        for (size_t q = 0; q < seg_len; q += 4)
          for (size_t t = 0; t < 4; ++t)
            acc += int32_t(ar[q + t]) * int32_t(bs[q * kInt8Nr + j * 4 + t]);
      }
      c[r * ldc + j] = acc;
    }
}

KILN_INT8_LOOPS_DEFS(generic, byte_map_impl, dw_u8s8_impl)

bool kiln_range_f32__generic(size_t n, const float* x, float* lo, float* hi) {
  float l = *lo, h = *hi;
  bool nan = false;
  for (size_t i = 0; i < n; ++i) {
    l = x[i] < l ? x[i] : l;
    h = x[i] > h ? x[i] : h;
    nan |= x[i] != x[i];
  }
  *lo = l;
  *hi = h;
  return nan;
}

const Int8Loops& int8_loops() { return select_int8_loops(active_isa()); }

namespace {

constexpr size_t kInt8Mb = kInt8Mr * 8;   // rows per task: A block stays in L1/L2
constexpr size_t kAmxMb = 64;             // rows per task on AMX: two pairs of 16-row tiles
// AMX pads K to 64 and copies A once more: measured slower than VNNI below K ~ 128
// (1x1 convolutions of 96->96 at 40 x 40: 200 vs 188 us; 128->96: 220 vs 235 us).
constexpr size_t kAmxMinK = 128;
constexpr size_t kInt8Nc = kInt8Nr * 4;   // columns per epilogue tile

}  // namespace

bool amx_int8_active() {
#if KILN_HAS_X86
  const PlanIsa* plan = current_plan_isa();
  return vnni_active() && (!plan || plan->amx) && amx_int8_ready();
#else
  return false;
#endif
}

const char* int8_gemm_kernel_name() {
  return amx_int8_active() ? "kiln_u8s8_gemm_panel__amx"
                           : select_u8s8_gemm(active_isa()).name;
}

namespace {

// Rows of A as AMX reads them: each row's segments back to back, K zero padded to Kp.
void gather_rows(size_t rows, size_t nseg, size_t seg_len, const uint8_t* const* ptrs,
                 size_t Kp, uint8_t* dst) {
  const size_t K = nseg * seg_len;
  for (size_t r = 0; r < rows; ++r) {
    uint8_t* row = dst + r * Kp;
    for (size_t s = 0; s < nseg; ++s)
      std::memcpy(row + s * seg_len, ptrs[r * nseg + s], seg_len);
    std::memset(row + K, 0, Kp - K);
  }
}

// Per-thread buffers that outlive a call (pool threads are long lived).
template <typename T>
T* scratch(std::vector<T>& buf, size_t n) {
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

}  // namespace

void gemm_u8s8_fused(size_t M, const PackedInt8B& B, const Int8GemmIO& io, ThreadPool* pool) {
  if (M == 0 || B.N == 0) return;
  if (io.segment_rows && (io.segments == 0 || B.Kq % (io.segments * 4) != 0 || B.Kq != B.K))
    throw std::invalid_argument("int8 GEMM: rows in segments need K = segments x a multiple of 4");
  const int8_ukernel_fn kernel = select_u8s8_gemm(active_isa()).fn;
  const bool amx = amx_int8_active() && B.Kq >= kAmxMinK;
  const size_t Kq = B.Kq, N = B.N;
  const size_t mb_rows = amx ? kAmxMb : kInt8Mb;
  const size_t Kp = (Kq + 63) / 64 * 64;  // AMX: K in whole 64-byte tile rows
  const size_t mblocks = (M + mb_rows - 1) / mb_rows;
  const size_t nchunks = (N + kInt8Nc - 1) / kInt8Nc;
  const size_t threads = pool ? pool->size() : 1;
  // Enough row blocks: one task per block (A filled once). Few rows (a transformer's
  // sequence): split the columns too, so every thread gets work.
  const bool split_n = mblocks < 4 * threads && nchunks > 1;
  // One column chunk: products rows N apart, so a tile that spans every column is one
  // contiguous run for the epilogue.
  const size_t ld = nchunks == 1 ? N : kInt8Nc;
  const size_t tasks = split_n ? mblocks * nchunks : mblocks;
  auto run = [&](size_t t0, size_t t1) {
    thread_local std::vector<uint8_t> abuf;
    thread_local std::vector<int32_t> cbuf;
    thread_local std::vector<const uint8_t*> pbuf;
    thread_local std::vector<uint8_t> tbuf;
    uint8_t* ascratch = io.segment_rows ? nullptr : scratch(abuf, mb_rows * Kq);
    int32_t* acc = scratch(cbuf, mb_rows * kInt8Nc);
    const size_t nseg = io.segment_rows ? io.segments : 1;
    const uint8_t** ptrs = scratch(pbuf, mb_rows * nseg);
    const size_t seg_len = Kq / nseg;
    uint8_t* tiles_a = amx ? scratch(tbuf, mb_rows * Kp) : nullptr;
#if KILN_HAS_X86
    if (amx) kiln_amx_tiles_begin();
#endif
    for (size_t t = t0; t < t1; ++t) {
      const size_t mb = split_n ? t / nchunks : t;
      const size_t c0 = split_n ? t % nchunks : 0, c1 = split_n ? c0 + 1 : nchunks;
      const size_t i0 = mb * mb_rows, rows = std::min(mb_rows, M - i0);
      // Row pointers: the segments the caller found in place, or the filled block's rows.
      if (io.segment_rows) {
        io.segment_rows(i0, rows, ptrs);
      } else {
        const uint8_t* a = io.fill(i0, rows, ascratch);
        for (size_t r = 0; r < rows; ++r) ptrs[r] = a + r * Kq;
      }
      if (amx) gather_rows(rows, nseg, seg_len, ptrs, Kp, tiles_a);
      for (size_t ch = c0; ch < c1; ++ch) {
        const size_t j0 = ch * kInt8Nc, cols = std::min(kInt8Nc, N - j0);
        for (size_t jp = 0; jp < cols; jp += kInt8Nr) {
          const int8_t* panel = B.panels.data() + (j0 + jp) / kInt8Nr * Kq * kInt8Nr;
          const size_t pc = std::min(kInt8Nr, cols - jp);
#if KILN_HAS_X86
          if (amx) {
            kiln_u8s8_gemm_panel__amx(rows, Kq, tiles_a, Kp, panel, acc + jp, ld, pc);
            continue;
          }
#endif
          for (size_t r = 0; r < rows; r += kInt8Mr)
            kernel(std::min(kInt8Mr, rows - r), nseg, seg_len, ptrs + r * nseg, panel,
                   acc + r * ld + jp, ld, pc);
        }
        io.epilogue(i0, rows, j0, cols, acc, ld);
      }
    }
#if KILN_HAS_X86
    if (amx) kiln_amx_tiles_end();
#endif
  };
  if (pool && threads > 1 && tasks > 1 && M * N * B.K >= (1 << 16)) pool->parallel_for(tasks, 1, run);
  else run(0, tasks);
}

std::function<const uint8_t*(size_t, size_t, uint8_t*)> int8_rows_of(const uint8_t* A,
                                                                      size_t K, size_t lda,
                                                                      size_t Kq) {
  return [=](size_t i0, size_t rows, uint8_t* dst) -> const uint8_t* {
    if (K == Kq && lda == Kq) return A + i0 * lda;  // already in the kernel's layout
    for (size_t r = 0; r < rows; ++r) {
      std::memcpy(dst + r * Kq, A + (i0 + r) * lda, K);
      std::memset(dst + r * Kq + K, 0, Kq - K);
    }
    return dst;
  };
}

}  // namespace kiln
