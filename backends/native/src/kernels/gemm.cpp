// SGEMM: the plain reference (the oracle) and the blocked driver over the per-ISA
// microkernels. Both operands are packed into panels (kernels/gemm_driver.h), then threads
// take (M block x N block) tasks from a shared counter; each task walks K blocks, N panels,
// M panels and calls the microkernel, which fuses the epilogue into its last store.
#include "kernels/gemm.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "kernels/gemm_driver.h"
#include "kernels/ukernels.h"
#include "threadpool.h"

namespace kiln {

float activation_reference(Activation act, float alpha, float beta, float x) {
  switch (act) {
    case Activation::none: return x;
    case Activation::relu: return x > 0.0f ? x : 0.0f;
    case Activation::leaky_relu: return x >= 0.0f ? x : alpha * x;
    case Activation::clip: return x < alpha ? alpha : (x > beta ? beta : x);
    case Activation::sigmoid: return 1.0f / (1.0f + std::exp(-x));
    case Activation::silu: return x / (1.0f + std::exp(-x));
    case Activation::hard_sigmoid: {
      float y = alpha * x + beta;
      return y < 0.0f ? 0.0f : (y > 1.0f ? 1.0f : y);
    }
    case Activation::hard_swish: {
      float y = x / 6.0f + 0.5f;
      return x * (y < 0.0f ? 0.0f : (y > 1.0f ? 1.0f : y));
    }
    // 1 + erf(v) == erfc(-v) and (1 + tanh(u)) / 2 == sigmoid(2u), without the cancellation
    // for negative x.
    case Activation::gelu_erf: return 0.5f * x * std::erfc(-x * 0.70710678118654752f);
    case Activation::gelu_tanh:
      return x / (1.0f + std::exp(-1.5957691216057308f * (x + 0.044715f * x * x * x)));
    case Activation::tanh: return std::tanh(x);
    case Activation::exp: return std::exp(x);
    case Activation::erf: return std::erf(x);
  }
  return x;
}

void apply_activation(Activation act, float alpha, float beta, float* x, size_t n) {
  if (act == Activation::none || n == 0) return;
  select_f32_vact(active_isa())(n, x, act, alpha, beta);
}

// ---------------------------------------------------------------- reference

void sgemm_reference(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, const float* A,
                     size_t lda, const float* B, size_t ldb, float* C, size_t ldc,
                     const Epilogue& ep, ThreadPool* pool) {
  auto rows = [&](size_t i0, size_t i1) {
    std::vector<float> acc(N);
    for (size_t i = i0; i < i1; ++i) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (size_t k = 0; k < K; ++k) {
        const float a = trans_a ? A[k * lda + i] : A[i * lda + k];
        if (trans_b) {
          for (size_t j = 0; j < N; ++j) acc[j] += a * B[j * ldb + k];
        } else {
          const float* b = B + k * ldb;
          for (size_t j = 0; j < N; ++j) acc[j] += a * b[j];
        }
      }
      // Values first (the residual may alias C), then the store.
      for (size_t j = 0; j < N; ++j) acc[j] = epilogue_value(ep, ldc, i, j, acc[j]);
      std::memcpy(C + i * ldc, acc.data(), N * sizeof(float));
    }
  };
  if (pool) pool->parallel_for(M, 1, rows, M * N * K); else rows(0, M);
}

// ---------------------------------------------------------------- scratch and blocking

void* alloc_aligned(size_t bytes) {
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t align = bytes >= kHuge ? kHuge : 64;
  void* p = std::aligned_alloc(align, round_up(std::max<size_t>(bytes, 1), align));
#if defined(MADV_HUGEPAGE)
  // Only whole blocks inside `bytes`: the tail keeps small pages, so the resident set does not
  // grow past what is used.
  if (p && align == kHuge) madvise(p, bytes / kHuge * kHuge, MADV_HUGEPAGE);  // advice only
#endif
  return p;
}

void AlignedBuffer::resize(size_t n) {
  if (n <= size_) return;
  // Packed weights from 2 MiB on get huge pages, as the plan's arena does. (ResNet-50 at 2
  // threads with a peer engine in the process: 2 of 4 fresh processes ran at ~50 ms instead
  // of ~40 before, none of 7 after; one process with both forms side by side: level.)
  void* p = alloc_aligned(std::max<size_t>(n, 16) * sizeof(float));
  if (!p) throw std::bad_alloc();
  ptr_.reset(static_cast<float*>(p));
  size_ = n;
}

float* gemm_scratch(ScratchSlot slot, size_t n) {
  thread_local AlignedBuffer slots[kScratchCount];
  slots[slot].resize(n);
  return slots[slot].data();
}

namespace {
std::atomic<size_t> g_kc{0}, g_mc{0}, g_nc{0};
}

void set_gemm_blocking_override(size_t kc, size_t mc, size_t nc) {
  g_kc = kc;
  g_mc = mc;
  g_nc = nc;
}

GemmBlocking gemm_blocking(const GemmKernel& k) {
  const CacheSizes& cs = cache_sizes();
  // Measured on Zen 5 (48 KiB L1d, 1 MiB L2): long K blocks win over an L1-resident B
  // micro-panel, because each K block costs a load + store of the C tile, and the
  // microkernel's two B loads per step stream well from L2. So the B micro-panel
  // (kc x nr) takes ~1/8 of L2. On the Xeon (2 MiB L2) that allows kc = 2048, which beat
  // 1024 at K = 2048 (C, 16 MiB, read back once less: 2048^3 one thread 148 -> 160
  // GFLOP/s), with an A block (mc x kc) of about the whole L2: at kc = 2048 half of L2
  // (126 rows) ran at 140, the whole L2 (252) at 150-160; A panels are prefetched ahead.
  size_t kc = std::clamp<size_t>(cs.l2 / 8 / (k.nr * sizeof(float)) / 8 * 8, 128, 2048);
  size_t mc = std::clamp<size_t>(cs.l2 / (kc * sizeof(float)), k.mr, 4096) / k.mr * k.mr;
  size_t nc = round_up(4096, k.nr);
  if (size_t v = g_kc.load()) kc = v;
  if (size_t v = g_mc.load()) mc = round_up(v, k.mr);
  if (size_t v = g_nc.load()) nc = round_up(v, k.nr);
  return {kc, mc, nc};
}

// ---------------------------------------------------------------- packing

namespace {

// d[k * mr + r] = s[r * lda + k] for r < rows, k < K: one A panel from row-major rows.
// 16 k at a time, so the reads stay within `rows` cache lines and the writes are sequential;
// on x86 in 4 x 4 blocks through SSE registers (this file is built for the baseline ISA),
// several times faster than element by element.
void transpose_rows_into_panel(const float* s, size_t lda, size_t rows, size_t K, size_t mr,
                               float* d) {
  for (size_t k0 = 0; k0 < K; k0 += 16) {
    const size_t k1 = std::min(K, k0 + 16);
    size_t r0 = 0;
#if defined(__SSE2__)
    for (; r0 + 4 <= rows; r0 += 4) {
      size_t k = k0;
      for (; k + 4 <= k1; k += 4) transpose_4x4(s + r0 * lda + k, lda, d + k * mr + r0, mr);
      for (; k < k1; ++k)
        for (size_t r = r0; r < r0 + 4; ++r) d[k * mr + r] = s[r * lda + k];
    }
#endif
    for (size_t k = k0; k < k1; ++k)
      for (size_t r = r0; r < rows; ++r) d[k * mr + r] = s[r * lda + k];
  }
}

}  // namespace

void pack_a_panels(size_t mr, bool trans_a, size_t M, size_t K, const float* A, size_t lda,
                   float* dst, ThreadPool* pool) {
  const size_t panels = (M + mr - 1) / mr;
  auto run = [&](size_t p0, size_t p1) {
    for (size_t p = p0; p < p1; ++p) {
      float* d = dst + p * K * mr;
      const size_t i0 = p * mr, rows = std::min(mr, M - i0);
      if (rows < mr) std::memset(d, 0, K * mr * sizeof(float));
      if (!trans_a) {
        transpose_rows_into_panel(A + i0 * lda, lda, rows, K, mr, d);
      } else {
        for (size_t k = 0; k < K; ++k)
          std::memcpy(d + k * mr, A + k * lda + i0, rows * sizeof(float));
      }
    }
  };
  if (pool && M * K >= 1 << 16) pool->parallel_for(panels, 1, run); else run(0, panels);
}

namespace {

// The panel loop shared by the B packers: copy_panel(d, j0, cols) fills one zeroed-when-
// partial panel of width nr with columns [j0, j0 + cols).
template <typename CopyPanel>
void for_each_b_panel(size_t nr, size_t K, size_t N, float* dst, ThreadPool* pool,
                      const CopyPanel& copy_panel) {
  const size_t panels = (N + nr - 1) / nr;
  auto run = [&](size_t p0, size_t p1) {
    for (size_t p = p0; p < p1; ++p) {
      float* d = dst + p * K * nr;
      const size_t j0 = p * nr, cols = std::min(nr, N - j0);
      if (cols < nr) std::memset(d, 0, K * nr * sizeof(float));
      copy_panel(d, j0, cols);
    }
  };
  if (pool && K * N >= 1 << 16) pool->parallel_for(panels, 1, run); else run(0, panels);
}

// K rows of NR floats: a fixed-length copy the compiler inlines and vectorizes, where a
// memcpy call per row costs more than the copy itself (the 1x1 conv path packs every
// activation this way).
template <size_t NR>
void copy_rows(size_t K, const float* src, size_t ld, float* dst) {
  for (size_t k = 0; k < K; ++k)
    for (size_t j = 0; j < NR; ++j) dst[k * NR + j] = src[k * ld + j];
}

// One full-width B panel by copy_rows; false when nr has no fixed-length copy.
bool copy_full_panel(size_t nr, size_t K, const float* src, size_t ld, float* dst) {
  switch (nr) {
    case 32: copy_rows<32>(K, src, ld, dst); return true;
    case 16: copy_rows<16>(K, src, ld, dst); return true;
    default: return false;
  }
}

}  // namespace

void pack_b_panels(size_t nr, bool trans_b, size_t K, size_t N, const float* B, size_t ldb,
                   float* dst, ThreadPool* pool) {
  for_each_b_panel(nr, K, N, dst, pool, [&](float* d, size_t j0, size_t cols) {
    if (!trans_b) {
      if (cols == nr && copy_full_panel(nr, K, B + j0, ldb, d)) return;
      for (size_t k = 0; k < K; ++k)
        std::memcpy(d + k * nr, B + k * ldb + j0, cols * sizeof(float));
      return;
    }
    // B^T rows are the panel's columns: the A panel's transpose (4 x 4 blocks), not an
    // element-by-element gather (an LSTM's input weights, 2048 x 512 per direction, packed
    // every run: 14% of its time went to that gather).
    transpose_rows_into_panel(B + j0 * ldb, ldb, cols, K, nr, d);
  });
}

void pack_b_panels_affine(size_t nr, size_t K, size_t N, const float* B, size_t ldb,
                          const float* scale, const float* shift, bool relu, float* dst,
                          ThreadPool* pool) {
  // Row by row, each row's N values read in one sequential run and dealt to the panels: going
  // panel by panel instead read every row K times in short pieces ldb apart, which the
  // prefetchers do not follow (DenseNet-121, one thread: 12% of its time in this packing).
  // The ISA's kernel writes each panel's vectors straight from the row (a staging row and a
  // copy per panel, in plain C++, took 7% of DenseNet-121's time; 3% this way).
  const f32_vaffine_panels_fn affine = select_f32_vaffine_panels(active_isa());
  auto run = [&](size_t k0, size_t k1) {
    for (size_t k = k0; k < k1; ++k)
      affine(N, B + k * ldb, scale[k], shift[k], relu, dst + k * nr, nr, K * nr);
  };
  if (pool && K * N >= 1 << 16) pool->parallel_for(K, 1, run, K * N);
  else run(0, K);
}

const float* residual_apart(const float* residual, const float* out, size_t out_len) {
  if (!residual || residual >= out + out_len || out >= residual + out_len) return residual;
  float* copy = gemm_scratch(kScratchResidual, out_len);
  std::memcpy(copy, residual, out_len * sizeof(float));
  return copy;
}

// ---------------------------------------------------------------- the tile loop

namespace {


// Raises the block counts (each at most its panel count) to the fewest tasks that are a
// multiple of `threads`; unchanged when no such split exists.
void balance_blocks(size_t threads, size_t mpanels, size_t npanels, size_t& mblocks,
                    size_t& nblocks) {
  if (mblocks * nblocks % threads == 0) return;
  size_t best_m = 0, best_n = 0, best = 0;
  for (size_t m = mblocks; m <= std::min(mpanels, mblocks + threads); ++m)
    for (size_t n = nblocks; n <= std::min(npanels, nblocks + threads); ++n)
      if (m * n % threads == 0 && (best == 0 || m * n < best)) {
        best_m = m, best_n = n, best = m * n;
      }
  if (best) mblocks = best_m, nblocks = best_n;
}

}  // namespace

namespace {

// Where the microkernel finds B: whole-K panels (ld == 0), or row-major op(B) read in place
// with row stride ld, its last partial column block (N % nr columns) from `tail`, one
// zero-padded whole-K panel.
struct BOperand {
  const float* data;
  size_t ld = 0;
  const float* tail = nullptr;
};

// Where the microkernel finds A: whole-K panels (offsets == nullptr), or read in place, row
// i of k group k at data[offsets[k] + i * stride].
struct AOperand {
  const float* data;
  const size_t* offsets = nullptr;
  size_t stride = 1;
  RowGrid grid{};
};

void gemm_core(const GemmKernel& kern, size_t M, size_t N, size_t K, const AOperand& A,
               const BOperand& B, float* C, size_t ldc, const Epilogue& ep_in,
               ThreadPool* pool) {
  if (M == 0 || N == 0) return;
  Epilogue ep = ep_in;
  const size_t c_len = (M - 1) * ldc + N;
  ep.residual = residual_apart(ep.residual, C, c_len);  // C is overwritten block by block
  if (K == 0) {
    for (size_t i = 0; i < M; ++i)
      for (size_t j = 0; j < N; ++j) C[i * ldc + j] = epilogue_value(ep, ldc, i, j, 0.0f);
    return;
  }
  GemmBlocking blk = gemm_blocking(kern);
  // Equal K blocks (K = 1100 runs as 2 x 552, not 1024 + 76).
  blk.kc = even_block(K, blk.kc, 8);
  const size_t mr = kern.mr, nr = kern.nr;
  // Equal M and N blocks too (M = 256 with mc = 252 runs as 2 x 140, not 252 + a 4-row
  // sliver that streams every B panel again for 4 rows).
  size_t mc = even_block(M, blk.mc, mr);
  size_t nc = even_block(N, blk.nc, nr);
  const size_t threads = pool ? pool->size() : 1;
  if (threads > 1) {
    // Enough tasks to balance the threads: split N first (keeps A blocks whole), then M.
    // Tasks are dealt from a shared counter, so with M split every thread ends up streaming
    // all of B; when A is the smaller operand (M < N: batch-1 transformer products, a
    // 16 x 384 x 384 MatMul ran no faster on 2 threads than on 1) N is split down to single
    // panels instead, each thread then reading its part of B once and the small A from L2.
    const size_t halve_from = M < N ? 2 * nr : 8 * nr;  // N blocks this wide are halved
    auto tasks = [&] { return ((M + mc - 1) / mc) * ((N + nc - 1) / nc); };
    while (tasks() < 4 * threads) {
      if (nc >= halve_from) nc = round_up(nc / 2, nr);
      else if (mc >= 2 * mr) mc = round_up(mc / 2, mr);
      else break;
    }
  }
  // Blocks are counted in micro-panels and dealt out evenly (sizes differ by one panel at
  // most); with several threads the task count is made a multiple of the thread count, so
  // no thread runs a last task alone (ResNet's 2048 x 49 1x1 conv: 9 tasks -> 10).
  const size_t mpanels = (M + mr - 1) / mr, npanels = (N + nr - 1) / nr;
  size_t mblocks = (M + mc - 1) / mc, nblocks = (N + nc - 1) / nc;
  if (threads > 1) balance_blocks(threads, mpanels, npanels, mblocks, nblocks);
  const bool stream_a = !A.offsets && M * K * sizeof(float) > cache_sizes().l2 / 2;
  // The B micro-panel is reused by every row panel of the M block: prefetching it only pays
  // when it is too large to stay in L1 next to the A panel.
  const bool stream_b =
      B.ld != 0 || blk.kc * nr * sizeof(float) > cache_sizes().l1d / 2;
  const size_t full_cols = B.ld ? N / nr * nr : N;  // columns read in place
  const size_t ntasks = mblocks * nblocks;
  // Row panels outermost for a short K and a C larger than L2 (ResNet's 64 -> 256 1x1 convs at
  // 56x56, 3 MiB with their residual as large): each row panel's rows of C (and of the
  // residual) are then walked left to right, a few sequential streams, where column panels
  // outermost touch every row at once and wait on the lines of as many streams. The B block
  // then comes from L2 once per row panel instead of from L1, so it must fit in half of it.
  // In ResNet-50 (Xeon, one thread) those convs went 1270 -> 970 us; with C already in cache
  // (a benchmark loop) the order loses ~5%, so it is kept to this case.
  const bool c_streams = K <= 256 && M * N * sizeof(float) > cache_sizes().l2;

  auto run_task = [&](size_t t) {
    const size_t mb = t % mblocks, nb = t / mblocks;
    const size_t i0 = mb * mpanels / mblocks * mr;
    const size_t i1 = std::min(M, (mb + 1) * mpanels / mblocks * mr);
    const size_t j0 = nb * npanels / nblocks * nr;
    const size_t j1 = std::min(N, (nb + 1) * npanels / nblocks * nr);
    for (size_t pc = 0; pc < K; pc += blk.kc) {
      const size_t kc = std::min(blk.kc, K - pc);
      auto tile_at = [&](size_t i, size_t j) {
        const bool in_place = j < full_cols;
        const float* bp = !B.ld ? B.data + (j / nr) * K * nr + pc * nr
                          : in_place ? B.data + pc * B.ld + j : B.tail + pc * nr;
        const float* ap = A.offsets ? A.data + A.grid.row(i) * A.stride
                                    : A.data + (i / mr) * K * mr + pc * mr;
        const GemmTile tile{C + i * ldc + j, ldc, std::min(nr, N - j), i, j,
                            pc > 0, pc + kc == K, &ep, stream_a, stream_b,
                            in_place && B.ld ? B.ld : nr,
                            A.offsets ? A.offsets + pc : nullptr, A.stride};
        kern.fn(std::min(A.grid.tile_rows(i, mr), M - i), kc, ap, bp, tile);
      };
      if (c_streams && kc * (j1 - j0) * sizeof(float) <= cache_sizes().l2 / 2) {
        for (size_t i = i0; i < i1; i += mr)
          for (size_t j = j0; j < j1; j += nr) tile_at(i, j);
      } else {
        for (size_t j = j0; j < j1; j += nr)
          for (size_t i = i0; i < i1; i += mr) tile_at(i, j);
      }
    }
  };
  if (threads <= 1 || ntasks == 1) {
    for (size_t t = 0; t < ntasks; ++t) run_task(t);
    return;
  }
  std::atomic<size_t> next{0};
  pool->parallel_for(threads, 1, [&](size_t, size_t) {
    for (size_t t = next.fetch_add(1); t < ntasks; t = next.fetch_add(1)) run_task(t);
  }, M * N * K);
}

}  // namespace

void gemm_packed_core(const GemmKernel& kern, size_t M, size_t N, size_t K, const float* Ap,
                      const float* Bp, float* C, size_t ldc, const Epilogue& ep,
                      ThreadPool* pool) {
  gemm_core(kern, M, N, K, AOperand{Ap}, BOperand{Bp}, C, ldc, ep, pool);
}

void gemm_in_place_a_core(const GemmKernel& kern, size_t M, size_t N, size_t K, const float* A,
                          const size_t* a_offsets, size_t a_stride, const float* Bp, float* C,
                          size_t ldc, const Epilogue& ep, ThreadPool* pool, RowGrid grid) {
  gemm_core(kern, M, N, K, AOperand{A, a_offsets, a_stride, grid}, BOperand{Bp}, C, ldc, ep,
            pool);
}

void gemm_in_place_b_core(const GemmKernel& kern, size_t M, size_t N, size_t K,
                          const float* Ap, const float* B, size_t ldb, float* C, size_t ldc,
                          const Epilogue& ep, ThreadPool* pool) {
  if (M == 0 || N == 0) return;
  const size_t nr = kern.nr, full = N / nr * nr;
  float* tail = nullptr;
  if (full < N) {
    tail = gemm_scratch(kScratchB, K * nr);
    pack_b_panels(nr, false, K, N - full, B + full, ldb, tail, nullptr);
  }
  gemm_core(kern, M, N, K, AOperand{Ap}, BOperand{B, ldb, tail}, C, ldc, ep, pool);
}

// ---------------------------------------------------------------- packed operands

namespace {

// Converts panels of width `from` into panels of width `to` (same logical matrix).
void repanel(const float* src, size_t from, float* dst, size_t to, size_t rows, size_t K) {
  const size_t dst_panels = (rows + to - 1) / to;
  std::memset(dst, 0, dst_panels * to * K * sizeof(float));
  for (size_t r = 0; r < rows; ++r) {
    const float* s = src + (r / from) * K * from + r % from;
    float* d = dst + (r / to) * K * to + r % to;
    for (size_t k = 0; k < K; ++k) d[k * to] = s[k * from];
  }
}

}  // namespace

const float* PackedAPanels::panels_for(const GemmKernel& k) const {
  if (k.mr == mr_) return data_.data();
  float* dst = gemm_scratch(kScratchA, round_up(m_, k.mr) * k_);
  repanel(data_.data(), mr_, dst, k.mr, m_, k_);
  return dst;
}

const float* PackedBPanels::panels_for(const GemmKernel& k) const {
  if (k.nr == nr_) return data_.data();
  float* dst = gemm_scratch(kScratchB, round_up(n_, k.nr) * k_);
  repanel(data_.data(), nr_, dst, k.nr, n_, k_);
  return dst;
}

// ---------------------------------------------------------------- public entry points

void sgemm(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, const float* A, size_t lda,
           const float* B, size_t ldb, float* C, size_t ldc, const Epilogue& ep,
           ThreadPool* pool) {
  if (M == 0 || N == 0) return;
  const GemmKernel& kern = gemm_kernel(active_isa());
  float* ap = gemm_scratch(kScratchA, round_up(M, kern.mr) * K);
  float* bp = gemm_scratch(kScratchB, round_up(N, kern.nr) * K);
  pack_a_panels(kern.mr, trans_a, M, K, A, lda, ap, pool);
  pack_b_panels(kern.nr, trans_b, K, N, B, ldb, bp, pool);
  gemm_packed_core(kern, M, N, K, ap, bp, C, ldc, ep, pool);
}

void flush_subnormals(float* values, size_t count) {
  const float smallest = std::numeric_limits<float>::min();
  for (size_t i = 0; i < count; ++i)  // branch-free, so the loop vectorizes
    values[i] = std::fabs(values[i]) < smallest ? 0.0f : values[i];
}

std::unique_ptr<PackedB> pack_b(bool trans_b, size_t K, size_t N, const float* B, size_t ldb) {
  const GemmKernel& kern = gemm_kernel(active_isa());
  auto packed = std::make_unique<PackedBPanels>(kern.nr, K, N);
  pack_b_panels(kern.nr, trans_b, K, N, B, ldb, packed->data(), nullptr);
  flush_subnormals(packed->data(), packed->bytes() / sizeof(float));
  return packed;
}

void sgemm_packed(bool trans_a, size_t M, const float* A, size_t lda, const PackedB& B, float* C,
                  size_t ldc, const Epilogue& ep, ThreadPool* pool) {
  if (M == 0 || B.N() == 0) return;
  const GemmKernel& kern = gemm_kernel(active_isa());
  const auto& packed = static_cast<const PackedBPanels&>(B);
  const float* bp = packed.panels_for(kern);
  const size_t K = B.K(), N = B.N(), panels = (N + kern.nr - 1) / kern.nr;
  const size_t threads = pool ? pool->chunks_for(panels, 1, M * N * K) : 1;
  // One row (a recurrent step, a batch-1 Linear): B's panels are K x nr, the layout of A
  // panels nr rows high, so the panel GEMV streams them with A read as the plain vector
  // it is. The tile kernel would read A packed into an mr-row panel (a 14-float stride per
  // k step: a 512-long row spans 28 KiB, more than L1 holds next to the streaming B) with
  // one FMA chain per vector (an LSTM of H 512 both ways over 40 steps, one thread on
  // Zen 4: 8.2 -> 5.5 ms; onnxruntime 5.7).
  const f32_gemv_fn gemv = M == 1 ? select_f32_gemv(kern.isa, kern.nr) : nullptr;
  if (gemv) {
    const float* v = A;
    if (trans_a && lda != 1) {
      float* row = gemm_scratch(kScratchA, K);
      for (size_t k = 0; k < K; ++k) row[k] = A[k * lda];
      v = row;
    }
    Epilogue e = ep;
    e.residual = residual_apart(ep.residual, C, N);
    const size_t per = (panels + threads - 1) / threads;
    auto run = [&](size_t c0, size_t c1) {
      float* y = gemm_scratch(kScratchConv, per * kern.nr);
      for (size_t c = c0; c < c1; ++c) {
        const size_t p0 = c * per, p1 = std::min(panels, p0 + per);
        if (p0 >= p1) continue;
        gemv(p1 - p0, K, bp + p0 * K * kern.nr, v, y);
        const size_t j0 = p0 * kern.nr, j1 = std::min(N, p1 * kern.nr);
        for (size_t j = j0; j < j1; ++j) C[j] = epilogue_value(e, ldc, 0, j, y[j - j0]);
      }
    };
    if (threads <= 1) run(0, 1);
    else pool->parallel_for(threads, 1, run, M * N * K);
    return;
  }
  float* ap = gemm_scratch(kScratchA, round_up(M, kern.mr) * B.K());
  pack_a_panels(kern.mr, trans_a, M, B.K(), A, lda, ap, pool);
  if (M > kern.mr || threads <= 1) {
    gemm_packed_core(kern, M, N, K, ap, bp, C, ldc, ep, pool);
    return;
  }
  // One row panel (batch-1 products, recurrent steps): memory-bound on B. Each thread takes a
  // fixed range of B's panels, so across calls with the same weights each core re-reads the
  // part already in its own L2 (the shared task counter would hand them out at random).
  const size_t per = (panels + threads - 1) / threads;
  pool->parallel_for(threads, 1, [&](size_t c0, size_t c1) {
    for (size_t c = c0; c < c1; ++c) {
      const size_t j0 = c * per * kern.nr, j1 = std::min(N, (c + 1) * per * kern.nr);
      if (j0 >= j1) continue;
      Epilogue part = ep;
      if (part.bias_kind == BiasKind::per_col || part.bias_kind == BiasKind::full)
        part.bias += j0;
      if (part.residual) part.residual += j0;
      gemm_packed_core(kern, M, j1 - j0, K, ap, bp + (j0 / kern.nr) * K * kern.nr, C + j0, ldc,
                       part, nullptr);
    }
  }, M * N * K);
}

std::unique_ptr<PackedA> pack_a(bool trans_a, size_t M, size_t K, const float* A, size_t lda) {
  const GemmKernel& kern = gemm_kernel(active_isa());
  auto packed = std::make_unique<PackedAPanels>(kern.mr, M, K);
  pack_a_panels(kern.mr, trans_a, M, K, A, lda, packed->data(), nullptr);
  flush_subnormals(packed->data(), packed->bytes() / sizeof(float));
  return packed;
}

void sgemm_packed_a(const PackedA& A, bool trans_b, size_t N, const float* B, size_t ldb,
                    float* C, size_t ldc, const Epilogue& ep, ThreadPool* pool) {
  if (A.M() == 0 || N == 0) return;
  const GemmKernel& kern = gemm_kernel(active_isa());
  const auto& packed = static_cast<const PackedAPanels&>(A);
  const float* ap = packed.panels_for(kern);
  float* bp = gemm_scratch(kScratchB, round_up(N, kern.nr) * A.K());
  pack_b_panels(kern.nr, trans_b, A.K(), N, B, ldb, bp, pool);
  gemm_packed_core(kern, A.M(), N, A.K(), ap, bp, C, ldc, ep, pool);
}

const char* sgemm_kernel_name() { return gemm_kernel(active_isa()).name; }

}  // namespace kiln
