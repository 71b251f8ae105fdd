// u8 x s8 -> s32 GEMM for int8 inference: C[M x N] = A[M x K] (u8) * B[K x N] (s8), the
// products summed exactly in int32. B is packed once (constant weights): panels of 32
// columns, K in groups of 4 (the VNNI vpdpbusd layout: four u8 x s8 products per int32
// lane), zero padded; its column sums are kept for the zero-point corrections.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace kiln {

class ThreadPool;

constexpr size_t kInt8Nr = 32;  // columns per B panel

struct PackedInt8B {
  size_t K = 0, N = 0, Kq = 0;  // Kq = K rounded up to a multiple of 4
  std::vector<int8_t> panels;   // ceil(N / 32) panels of Kq x 32, in groups of 4 k
  std::vector<int32_t> col_sums;  // sum over k of B[k][n]
};

// B: K x N row-major with row stride ldb.
PackedInt8B pack_int8_b(const int8_t* B, size_t K, size_t N, size_t ldb);

// The GEMM: rows of A come from `fill`, products go to `epilogue` tile by tile, so no
// M x N int32 matrix is ever written and the epilogue (zero points, scales, bias, activation,
// requantization, layout) runs while the tile is still in cache.
struct Int8GemmIO {
  // Rows [i0, i0 + rows) of A with K zero padded to Kq: either written to `scratch` (rows x Kq)
  // or found in place; returns where they are (row stride Kq either way).
  std::function<const uint8_t*(size_t i0, size_t rows, uint8_t* scratch)> fill;
  // Instead of `fill`: each row of A as `segments` pieces of Kq / segments bytes found in place
  // (a convolution's kernel rows in a padded NHWC input: no im2col copy). Writes rows x
  // segments pointers, row by row.
  size_t segments = 1;
  std::function<void(size_t i0, size_t rows, const uint8_t** ptrs)> segment_rows;
  // Products of rows [i0, i0 + rows) and columns [j0, j0 + cols), row stride ldacc.
  std::function<void(size_t i0, size_t rows, size_t j0, size_t cols, const int32_t* acc,
                     size_t ldacc)> epilogue;
};
void gemm_u8s8_fused(size_t M, const PackedInt8B& B, const Int8GemmIO& io, ThreadPool* pool);

// Int8GemmIO::fill for a row-major u8 matrix A (K columns, row stride lda).
std::function<const uint8_t*(size_t, size_t, uint8_t*)> int8_rows_of(const uint8_t* A,
                                                                      size_t K, size_t lda,
                                                                      size_t Kq);

// The epilogue of one row of products: v = acc * mult[j] + offset[j] per column j, then
//   f32: v, or max(v, 0) with relu;
//   u8:  round_half_even(clamp(v, lo, hi)) + zero, with v already in output quantization units
//        (lo = -zero, or 0 with relu; hi = 255 - zero).
// f32 rows with acc_offset: v = float(acc + acc_offset[j]) * mult[j] + offset[j], the
// zero-point correction exact in int32 before the one rounding to float, as onnxruntime
// forms float(A x B - a_zero * colsum(B)) * (a_scale * w_scale). (The u8 rows fold their
// correction into offset and read no acc_offset.)
struct Int8RowParams {
  const float* mult;
  const float* offset;
  bool relu;
  float lo, hi, zero;
  const int32_t* acc_offset = nullptr;
};
// The loops around the GEMM for the active ISA, one table per ISA (written once in
// int8_row_ukernel.h, compiled with each ISA's flags).
struct Int8Loops {
  // QuantizeLinear / DequantizeLinear of one run with one scale and zero point
  void (*quantize_u8)(size_t n, const float* x, float scale, float zero, uint8_t* y);
  void (*quantize_s8)(size_t n, const float* x, float scale, float zero, int8_t* y);
  void (*dequantize_u8)(size_t n, const uint8_t* q, float scale, int32_t zero, float* y);
  void (*dequantize_s8)(size_t n, const int8_t* q, float scale, int32_t zero, float* y);
  // min and max of n values (folded into *lo / *hi); returns true when one of them is NaN
  bool (*range)(size_t n, const float* x, float* lo, float* hi);
  // the epilogue of one row of products (Int8RowParams)
  void (*row_f32)(size_t n, const int32_t* acc, const Int8RowParams& p, float* y);
  void (*row_u8)(size_t n, const int32_t* acc, const Int8RowParams& p, uint8_t* y);
  // The same over a tile of rows (row r: acc + r * ld -> y + r * ys, the same columns); a u8
  // tile then goes through `table` (256 bytes) unless it is null. One call per tile: a row
  // of a narrow layer is a few dozen values, less work than a call.
  void (*tile_f32)(size_t rows, size_t n, const int32_t* acc, size_t ld, const Int8RowParams& p,
                   float* y, size_t ys);
  void (*tile_u8)(size_t rows, size_t n, const int32_t* acc, size_t ld, const Int8RowParams& p,
                  uint8_t* y, size_t ys, const uint8_t* table);
  // Depthwise products of `pixels` output pixels: acc[p * C + c] = sum_t x[t][p * step + c] *
  // w[t * C + c], x[t] the first pixel's tap t (C contiguous u8 channels), w the s8 taps
  // widened to int16, tap-major. `laid`: the same weights as this table's dw_layout wrote
  // them for this C, taps and flat (step == C), or null (then laid out here when needed).
  void (*dw_u8s8)(size_t C, size_t taps, size_t pixels, size_t step, const uint8_t* const* x,
                  const int16_t* w, const int8_t* laid, int32_t* acc);
  // The depthwise weights w (as dw_u8s8 takes them) in the order this ISA's kernel reads
  // them, laid out once when a layer is built; empty when it reads w as it is.
  std::vector<int8_t> (*dw_layout)(size_t C, size_t taps, bool flat, const int16_t* w);
  // dst[j * ds + i] = src[i * ss + j] for i < rows, j < cols: bytes between NCHW and NHWC.
  void (*transpose_u8)(const uint8_t* src, size_t ss, size_t rows, size_t cols, uint8_t* dst,
                       size_t ds);
};
const Int8Loops& int8_loops();

// The u8 quantization DynamicQuantizeLinear defines for values in [lo, hi] (lo <= 0 <= hi):
// scale (hi - lo) / 255, zero point round(-lo / scale) within [0, 255]. All zeros (scale 0)
// quantize with zero point 0; `step` is the divisor quantize_u8 takes (1 then).
struct DynamicU8 {
  float scale, step;
  int32_t zero;
};
inline DynamicU8 dynamic_u8(float lo, float hi) {
  const float scale = (hi - lo) / 255.0f;
  const int32_t zero = scale == 0.0f
      ? 0 : static_cast<int32_t>(std::clamp(std::nearbyint(-lo / scale), 0.0f, 255.0f));
  return {scale, scale == 0.0f ? 1.0f : scale, zero};
}

// The u8 x s8 kernel in use now: its full name, from kernels/ukernels.inc, or
// kiln_u8s8_gemm_panel__amx where amx_int8_active(); the AMX panel kernel then runs the GEMMs
// with K >= 128 and the VNNI ukernel the smaller ones (gemm_u8s8_fused).
const char* int8_gemm_kernel_name();

// AMX (x86 tile registers): whether this CPU and OS run tdpbusd (asks Linux for the tile
// state once), and the panel kernel: products of `rows` rows of A (row stride lda, K zero
// padded to a multiple of 64, rows readable up to a multiple of 16) and `cols` <= kInt8Nr
// columns of one packed panel (Kq = K rounded to 4) into c (rows x cols, row stride ldc).
// A thread calls kiln_amx_tiles_begin before its first panel and kiln_amx_tiles_end after
// its last.
bool amx_int8_ready();
// Whether the int8 GEMM runs on AMX now: where VNNI may, the plan ISA allows AMX (avx512_amx)
// and amx_int8_ready().
bool amx_int8_active();
void kiln_amx_tiles_begin();
void kiln_amx_tiles_end();
void kiln_u8s8_gemm_panel__amx(size_t rows, size_t Kq, const uint8_t* a, size_t lda,
                               const int8_t* panel, int32_t* c, size_t ldc, size_t cols);

// AMX reading A in place. Up to 16 rows of A a fixed stride apart (a run of output pixels of
// one convolution row in a padded NHWC input): row r of segment s at bases[s] + r * lda. A
// tile load takes 16 rows of 64 bytes whatever `rows` says; the products of the first `rows`
// are kept.
struct AmxRows {
  const uint8_t* const* bases;
  size_t lda, rows;
};
// Products of one or two such tiles (ntiles rows stacked: tiles[0]'s rows, then tiles[1]'s)
// and `cols` <= kInt8Nr columns of one panel packed with each of the nseg segments' K
// rounded up to seg64 (a multiple of 64) with zero weights: the bytes a load reads past a
// segment's real ones count for nothing. Between kiln_amx_tiles_begin / end.
void kiln_u8s8_gemm_rows__amx(const AmxRows* tiles, size_t ntiles, size_t nseg, size_t seg64,
                              const int8_t* panel, int32_t* c, size_t ldc, size_t cols);

// The GEMM on AMX over rows found in place as stride runs: M rows of `segments` segments of
// seg_len real bytes each; B packed by pack_int8_b_segments. `run(i, bases, lda)` writes the
// segment pointers of row i and the stride to the rows after it and returns how many rows
// (>= 1, counting row i) continue at that stride. Every byte a tile load may touch lies in
// [begin, end) or the tile is copied first (16 rows, zero padded), so an input of exactly
// its own size is never read past.
struct Int8StridedIO {
  size_t segments = 1, seg_len = 0;
  std::function<size_t(size_t i, const uint8_t** bases, size_t* lda)> run;
  const uint8_t* begin = nullptr;
  const uint8_t* end = nullptr;
  std::function<void(size_t i0, size_t rows, size_t j0, size_t cols, const int32_t* acc,
                     size_t ldacc)> epilogue;
};
// B [K = segments x seg_len, N] (row stride ldb) packed as pack_int8_b does after each segment
// is zero padded to a multiple of 64 rows.
PackedInt8B pack_int8_b_segments(const int8_t* B, size_t segments, size_t seg_len, size_t N,
                                 size_t ldb);
void gemm_u8s8_amx_strided(size_t M, const PackedInt8B& B, const Int8StridedIO& io,
                           ThreadPool* pool);
// The smallest K (Kq) a convolution takes to AMX reading its input in place: below it the
// padding of each segment to 64 bytes wastes more than the tiles gain (1 thread, NHWC in and
// out: 12 -> 96 at 80 x 80 VNNI 166 us, AMX 219; 16 -> 32 at 160 x 160 275 vs 247; 48 -> 48
// at 80 x 80 146 vs 111).
constexpr size_t kAmxConvMinK = 16;

// y[i] = table[y[i]] for n bytes with AVX-512 VBMI (run only where the CPU has it).
void kiln_byte_map__avx512vbmi(size_t n, const uint8_t* table, uint8_t* y);

// Microkernel contract (one M block of up to kInt8Mr rows x one 32-column panel): row r of A
// is `nseg` segments of seg_len bytes (a multiple of 4), segment s at a[r * nseg + s]; b: one
// packed panel (Kq = nseg * seg_len); c: rows x cols int32.
constexpr size_t kInt8Mr = 6;
using int8_ukernel_fn = void (*)(size_t rows, size_t nseg, size_t seg_len,
                                 const uint8_t* const* a, const int8_t* b, int32_t* c,
                                 size_t ldc, size_t cols);
#define KILN_INT8_LOOPS_DECL(isa)                                                         \
  void kiln_quantize_u8__##isa(size_t n, const float* x, float scale, float zero, uint8_t* y); \
  void kiln_quantize_s8__##isa(size_t n, const float* x, float scale, float zero, int8_t* y);  \
  void kiln_dequantize_u8__##isa(size_t n, const uint8_t* q, float scale, int32_t zero,      \
                                 float* y);                                                  \
  void kiln_dequantize_s8__##isa(size_t n, const int8_t* q, float scale, int32_t zero,       \
                                 float* y);                                                  \
  void kiln_int8_row_f32__##isa(size_t n, const int32_t* acc, const Int8RowParams& p,        \
                                float* y);                                                   \
  void kiln_int8_row_u8__##isa(size_t n, const int32_t* acc, const Int8RowParams& p,         \
                               uint8_t* y);                                                  \
  void kiln_int8_tile_f32__##isa(size_t rows, size_t n, const int32_t* acc, size_t ld,       \
                                 const Int8RowParams& p, float* y, size_t ys);               \
  void kiln_int8_tile_u8__##isa(size_t rows, size_t n, const int32_t* acc, size_t ld,        \
                                const Int8RowParams& p, uint8_t* y, size_t ys,               \
                                const uint8_t* table);                                       \
  void kiln_dw_u8s8__##isa(size_t C, size_t taps, size_t pixels, size_t step,                \
                           const uint8_t* const* x, const int16_t* w, const int8_t* laid,    \
                           int32_t* acc);                                                    \
  std::vector<int8_t> kiln_dw_layout__##isa(size_t C, size_t taps, bool flat,                \
                                            const int16_t* w);                               \
  void kiln_transpose_u8__##isa(const uint8_t* src, size_t ss, size_t rows, size_t cols,     \
                                uint8_t* dst, size_t ds);
// The kernels themselves are declared from the one list, kernels/ukernels.inc (ukernels.h).

}  // namespace kiln
