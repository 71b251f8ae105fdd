// The blocked SGEMM driver shared by gemm.cpp and conv.cpp: packed panel layouts, the
// cache blocking, per-thread scratch and the tile loop over a thread pool.
//
// Panel layouts (both zero padded to whole panels):
//   A: ceil(M/mr) panels of K x mr floats; element (i, k) at (i/mr)*K*mr + k*mr + i%mr.
//   B: ceil(N/nr) panels of K x nr floats; element (k, j) at (j/nr)*K*nr + k*nr + j%nr.
// A whole-K panel serves every K block: block pc of panel p starts at p*K*r + pc*r.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <memory>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "kernels/gemm_ukernel.h"

namespace kiln {

class ThreadPool;

// 64-byte aligned float storage.
// bytes (rounded up) 64-byte aligned; from 2 MiB on, 2 MiB aligned, asking for transparent
// huge pages on its whole 2 MiB blocks: one TLB entry per 2 MiB of streamed weights or arena,
// and one page fault per 2 MiB at the first touch. nullptr when out of memory; std::free it.
void* alloc_aligned(size_t bytes);

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t n) { resize(n); }
  void resize(size_t n);  // grow only; contents are not kept
  float* data() { return ptr_.get(); }
  const float* data() const { return ptr_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> ptr_;
  size_t size_ = 0;
};

// Per-thread scratch slots (grow only, reused across calls).
enum ScratchSlot : int {
  kScratchA = 0,
  kScratchB,
  kScratchConv,
  kScratchResidual,
  kScratchPad,
  // a conv's NHWC operands around an algorithm that runs NCHW (kernels/conv.cpp)
  kScratchEdgeIn,
  kScratchEdgeOut,
  kScratchEdgeResidual,
  // a batch of few-pixel images laid side by side into one GEMM (Conv2d::run_gemm)
  kScratchBatch,
  kScratchCount
};
float* gemm_scratch(ScratchSlot slot, size_t n);
// `residual` as an epilogue may read it while `out` (out_len floats) is written: itself, or
// a scratch copy (kScratchResidual) when the two overlap.
const float* residual_apart(const float* residual, const float* out, size_t out_len);

struct GemmBlocking {
  size_t kc;  // K block: the kc x nr B micro-panel takes ~1/8 of L2
  size_t mc;  // M block: an mc x kc A block of about L2
  size_t nc;  // N block: the unit of work handed to a thread
};
GemmBlocking gemm_blocking(const GemmKernel& k);
// Overrides the blocking (0 = derive from the caches); for tuning and tests.
void set_gemm_blocking_override(size_t kc, size_t mc, size_t nc);

// Tuning hook: the smallest column block of the conv GEMM paths (0 = one GEMM micro-panel).
void set_conv_min_column_block(size_t columns);

inline size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }

#if defined(__SSE2__)
// d[j * ds + i] = s[i * ss + j] for i, j < 4: one 4 x 4 block through SSE registers (the
// packing and layout files are built for the baseline ISA, where this beats a float at a
// time several times over).
inline void transpose_4x4(const float* s, size_t ss, float* d, size_t ds) {
  __m128 x0 = _mm_loadu_ps(s), x1 = _mm_loadu_ps(s + ss);
  __m128 x2 = _mm_loadu_ps(s + 2 * ss), x3 = _mm_loadu_ps(s + 3 * ss);
  _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
  _mm_storeu_ps(d, x0);
  _mm_storeu_ps(d + ds, x1);
  _mm_storeu_ps(d + 2 * ds, x2);
  _mm_storeu_ps(d + 3 * ds, x3);
}
#endif

// A block size that splits n into as many blocks as `block` does, but of equal size (a
// multiple of align; the last may be shorter by less than align): no sliver at the end that
// streams the other operand again for a few rows or columns.
inline size_t even_block(size_t n, size_t block, size_t align) {
  const size_t blocks = (n + block - 1) / block;
  return round_up((n + blocks - 1) / blocks, align);
}

void pack_a_panels(size_t mr, bool trans_a, size_t M, size_t K, const float* A, size_t lda,
                   float* dst, ThreadPool* pool);
void pack_b_panels(size_t nr, bool trans_b, size_t K, size_t N, const float* B, size_t ldb,
                   float* dst, ThreadPool* pool);
// pack_b_panels (not transposed) of max(0?, B[k][j] * scale[k] + shift[k]): a per-row affine
// (an inference BatchNormalization) and optional Relu applied while packing.
void pack_b_panels_affine(size_t nr, size_t K, size_t N, const float* B, size_t ldb,
                          const float* scale, const float* shift, bool relu, float* dst,
                          ThreadPool* pool);

// Sets subnormal values (0 < |v| < FLT_MIN) to zero. Applied to constant weights when they are
// packed: on x86 a multiply with a subnormal operand can take a microcode assist of ~100+
// cycles, and trained models carry them (PP-OCRv4 rec: 31,350 in its squeeze-excitation convs,
// which ran 10x slower than their flops). Each product changes by less than FLT_MIN * |x|.
void flush_subnormals(float* values, size_t count);

// C = Ap * Bp + epilogue, both operands in the panel layouts of `k`.
void gemm_packed_core(const GemmKernel& k, size_t M, size_t N, size_t K, const float* Ap,
                      const float* Bp, float* C, size_t ldc, const Epilogue& ep,
                      ThreadPool* pool);

// The same with B (row-major K x N, row stride ldb, not transposed) read in place by the
// microkernel: no packing copy of B but for its last partial nr-wide column block. For B
// that is used once per call and fits in L2 (a 1x1 convolution's input).
void gemm_in_place_b_core(const GemmKernel& k, size_t M, size_t N, size_t K, const float* Ap,
                          const float* B, size_t ldb, float* C, size_t ldc,
                          const Epilogue& ep, ThreadPool* pool);

// Where product row i reads its A row: row i itself (cols == 0), or the rows of an image
// grid: `cols` product rows per grid row (a multiple of the kernel's mr, so no tile crosses a
// grid row), of which the first `valid` exist, over `stride` A rows per grid row. Product row
// i reads A row i / cols * stride + i % cols; rows past `valid` are neither read nor stored.
// A convolution so computes no product row for the padding columns between its output rows
// (a 7-wide output in 9-wide padded rows: 49 rows for 61, in tiles of 7).
struct RowGrid {
  size_t cols = 0, stride = 0, valid = 0;
  size_t row(size_t i) const { return cols ? i / cols * stride + i % cols : i; }
  // Rows of a tile of up to mr rows starting at product row i (a multiple of mr).
  size_t tile_rows(size_t i, size_t mr) const {
    return cols ? std::min(mr, valid - i % cols) : mr;
  }
};

// The same with A read in place: element (i, k) at A[a_offsets[k] + grid.row(i) * a_stride]
// (a convolution's input pixels, each k a (channel, tap) offset into it: rows consecutive in
// NCHW planes, a_stride = 1, or C floats apart in an NHWC image), B packed panels.
// Every row grid.row(i), i < M, of every k group must be readable.
void gemm_in_place_a_core(const GemmKernel& k, size_t M, size_t N, size_t K, const float* A,
                          const size_t* a_offsets, size_t a_stride, const float* Bp, float* C,
                          size_t ldc, const Epilogue& ep, ThreadPool* pool,
                          RowGrid grid = RowGrid{});

class PackedAPanels final : public PackedA {
 public:
  PackedAPanels(size_t mr, size_t m, size_t k) : mr_(mr), m_(m), k_(k),
      data_(round_up(m, mr) * k) {}
  size_t M() const override { return m_; }
  size_t K() const override { return k_; }
  size_t bytes() const override { return data_.size() * sizeof(float); }
  size_t mr() const { return mr_; }
  float* data() { return data_.data(); }
  // Panels for kernel k: these, or a converted copy in scratch when k.mr differs.
  const float* panels_for(const GemmKernel& k) const;

 private:
  size_t mr_, m_, k_;
  AlignedBuffer data_;
};

class PackedBPanels final : public PackedB {
 public:
  PackedBPanels(size_t nr, size_t k, size_t n) : nr_(nr), k_(k), n_(n),
      data_(round_up(n, nr) * k) {}
  size_t K() const override { return k_; }
  size_t N() const override { return n_; }
  size_t bytes() const override { return data_.size() * sizeof(float); }
  size_t nr() const { return nr_; }
  float* data() { return data_.data(); }
  const float* panels_for(const GemmKernel& k) const;

 private:
  size_t nr_, k_, n_;
  AlignedBuffer data_;
};

}  // namespace kiln
