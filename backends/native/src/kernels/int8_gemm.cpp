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

KILN_INT8_LOOPS_DEFS(generic, int8_row_u8_impl, byte_map_impl, dw_u8s8_impl, dw_layout_none,
                     transpose_u8_impl)

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

// How a GEMM's rows and columns split into tasks. Enough row blocks: one task per block (A
// filled once). Few rows (a transformer's sequence): split the columns too, so every thread
// gets work. One column chunk: products rows N apart, so a tile that spans every column is
// one contiguous run for the epilogue.
struct Int8Tasks {
  size_t nchunks, ld, count;
  bool split_n;

  Int8Tasks(size_t M, size_t N, size_t mb_rows, size_t threads) {
    const size_t mblocks = (M + mb_rows - 1) / mb_rows;
    nchunks = (N + kInt8Nc - 1) / kInt8Nc;
    split_n = mblocks < 4 * threads && nchunks > 1;
    ld = nchunks == 1 ? N : kInt8Nc;
    count = split_n ? mblocks * nchunks : mblocks;
  }
  // Task t's row block and its column chunks [c0, c1).
  size_t block(size_t t) const { return split_n ? t / nchunks : t; }
  size_t chunk0(size_t t) const { return split_n ? t % nchunks : 0; }
  size_t chunk1(size_t t) const { return split_n ? chunk0(t) + 1 : nchunks; }
};

// Runs the tasks on the pool when there are several and the GEMM is worth the hand-off.
template <typename Run>
void run_int8_tasks(const Int8Tasks& tasks, size_t work, ThreadPool* pool, Run&& run) {
  if (pool && pool->size() > 1 && tasks.count > 1 && work >= (1 << 16))
    pool->parallel_for(tasks.count, 1, run);
  else
    run(0, tasks.count);
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
  const Int8Tasks tasks(M, N, mb_rows, pool ? pool->size() : 1);
  const size_t ld = tasks.ld;
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
      const size_t mb = tasks.block(t), c0 = tasks.chunk0(t), c1 = tasks.chunk1(t);
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
  run_int8_tasks(tasks, M * N * B.K, pool, run);
}

PackedInt8B pack_int8_b_segments(const int8_t* B, size_t segments, size_t seg_len, size_t N,
                                 size_t ldb) {
  const size_t seg64 = (seg_len + 63) / 64 * 64;
  std::vector<int8_t> padded(segments * seg64 * N, 0);
  for (size_t s = 0; s < segments; ++s)
    for (size_t k = 0; k < seg_len; ++k)
      std::memcpy(&padded[(s * seg64 + k) * N], B + (s * seg_len + k) * ldb, N);
  return pack_int8_b(padded.data(), segments * seg64, N, N);
}

void gemm_u8s8_amx_strided(size_t M, const PackedInt8B& B, const Int8StridedIO& io,
                           ThreadPool* pool) {
#if KILN_HAS_X86
  if (M == 0 || B.N == 0) return;
  const size_t nseg = io.segments, seg64 = (io.seg_len + 63) / 64 * 64, Kq = B.Kq, N = B.N;
  if (nseg == 0 || io.seg_len == 0 || Kq != nseg * seg64)
    throw std::invalid_argument("int8 AMX GEMM: B is not packed in segments of the rows' K");
  const Int8Tasks tasks(M, N, kAmxMb, pool ? pool->size() : 1);
  const size_t ld = tasks.ld;
  // Whether every byte the 16 loaded rows of each segment may touch lies in [begin, end).
  const auto inside = [&](const AmxRows& tile) {
    const auto [lo, hi] = std::minmax_element(tile.bases, tile.bases + nseg);
    const uintptr_t first = reinterpret_cast<uintptr_t>(*lo);
    const uintptr_t last = reinterpret_cast<uintptr_t>(*hi) + 15 * tile.lda + seg64;
    return first >= reinterpret_cast<uintptr_t>(io.begin) &&
           last <= reinterpret_cast<uintptr_t>(io.end);
  };
  auto run = [&](size_t t0, size_t t1) {
    thread_local std::vector<int32_t> cbuf;
    thread_local std::vector<AmxRows> tbuf;
    thread_local std::vector<const uint8_t*> pbuf;
    thread_local std::vector<uint8_t> gbuf;
    int32_t* acc = scratch(cbuf, kAmxMb * kInt8Nc);
    const uint8_t** ptrs = scratch(pbuf, kAmxMb * nseg * 2);
    kiln_amx_tiles_begin();
    for (size_t t = t0; t < t1; ++t) {
      const size_t mb = tasks.block(t), c0 = tasks.chunk0(t), c1 = tasks.chunk1(t);
      const size_t i0 = mb * kAmxMb, rows = std::min(kAmxMb, M - i0);
      // The block's rows as tiles of up to 16 rows at one stride each.
      tbuf.clear();
      size_t copies = 0;
      for (size_t i = i0; i < i0 + rows;) {
        const uint8_t** bases = ptrs + tbuf.size() * nseg;
        size_t lda = 0;
        const size_t n = std::min({io.run(i, bases, &lda), size_t{16}, i0 + rows - i});
        tbuf.push_back({bases, lda, n});
        copies += !inside(tbuf.back());
        i += n;
      }
      // A tile whose loads would leave [begin, end) (rows at the end of the input) is copied:
      // its real bytes, zeros after them.
      uint8_t* g = copies ? scratch(gbuf, copies * 16 * Kq) : nullptr;
      for (size_t k = 0; copies && k < tbuf.size(); ++k) {
        AmxRows& tile = tbuf[k];
        if (inside(tile)) continue;
        std::memset(g, 0, 16 * Kq);
        const uint8_t** copied = ptrs + (kAmxMb + k) * nseg;
        for (size_t s = 0; s < nseg; ++s) {
          for (size_t r = 0; r < tile.rows; ++r)
            std::memcpy(g + r * Kq + s * seg64, tile.bases[s] + r * tile.lda, io.seg_len);
          copied[s] = g + s * seg64;
        }
        tile = {copied, Kq, tile.rows};
        g += 16 * Kq;
      }
      for (size_t ch = c0; ch < c1; ++ch) {
        const size_t j0 = ch * kInt8Nc, cols = std::min(kInt8Nc, N - j0);
        for (size_t jp = 0; jp < cols; jp += kInt8Nr) {
          const int8_t* panel = B.panels.data() + (j0 + jp) / kInt8Nr * Kq * kInt8Nr;
          const size_t pc = std::min(kInt8Nr, cols - jp);
          int32_t* c = acc + jp;
          for (size_t k = 0; k < tbuf.size(); k += 2) {
            const size_t pair = std::min<size_t>(2, tbuf.size() - k);
            kiln_u8s8_gemm_rows__amx(&tbuf[k], pair, nseg, seg64, panel, c, ld, pc);
            c += (tbuf[k].rows + (pair > 1 ? tbuf[k + 1].rows : 0)) * ld;
          }
        }
        io.epilogue(i0, rows, j0, cols, acc, ld);
      }
    }
    kiln_amx_tiles_end();
  };
  run_int8_tasks(tasks, M * N * B.K, pool, run);
#else
  (void)M, (void)B, (void)io, (void)pool;
  throw std::logic_error("int8 AMX GEMM on a CPU without AMX");
#endif
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
