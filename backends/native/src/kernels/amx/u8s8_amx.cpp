// u8 x s8 -> s32 GEMM on AMX tiles (tdpbusd): 32 rows x 32 columns as four 16 x 16 int32
// accumulator tiles, K in steps of 64 bytes. A comes gathered (rows with stride lda, K zero
// padded to a multiple of 64); B is the same packed panel the VNNI kernel reads: quad q's 32
// columns x 4 bytes at panel + q * 128, so a 16-column B tile is 16 quads read with stride
// 128 and the other half starts 64 bytes on. Sums are exact in int32, as with vpdpbusd.
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "cpu.h"
#include "kernels/int8_gemm.h"

namespace kiln {

namespace {

struct TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

constexpr size_t kQuadBytes = kInt8Nr * 4;  // one k quad of a packed panel

}  // namespace

bool amx_int8_ready() {
  static const bool ready = [] {
#if defined(__linux__) && defined(SYS_arch_prctl)
    const CpuFeatures& f = cpu_features();
    if (!f.amx_tile || !f.amx_int8 || !f.os_saves_avx512) return false;
    // Linux hands out the 8 KiB tile state only to processes that ask for it.
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
  }();
  return ready;
}

void kiln_amx_tiles_begin() {
  // In static storage: GCC 12 does not see ldtilecfg read its operand and drops the stores
  // to a local one.
  alignas(64) static const TileConfig cfg = [] {
    TileConfig c;
    for (int t = 0; t < 8; ++t) {  // eight tiles of 16 rows x 64 bytes
      c.colsb[t] = 64;
      c.rows[t] = 16;
    }
    return c;
  }();
  _tile_loadconfig(&cfg);
}

void kiln_amx_tiles_end() { _tile_release(); }

namespace {

// The accumulators are tiles 0-3: rows 0-15 (A tile 4) and 16-31 (A tile 5) times columns
// 0-15 (B tile 6) and 16-31 (B tile 7). One 64-deep step: the lower row half only when
// `lower`, the right column half only when `right`.
inline void dpbusd_step(const uint8_t* a0, size_t lda0, const uint8_t* a1, size_t lda1,
                        const int8_t* b, bool right, bool lower) {
  _tile_loadd(4, a0, lda0);
  _tile_loadd(6, b, kQuadBytes);
  _tile_dpbusd(0, 4, 6);
  if (right) {
    _tile_loadd(7, b + 64, kQuadBytes);
    _tile_dpbusd(1, 4, 7);
  }
  if (lower) {
    _tile_loadd(5, a1, lda1);
    _tile_dpbusd(2, 5, 6);
    if (right) _tile_dpbusd(3, 5, 7);
  }
}

// The accumulators into `out`, 32 x 32 int32 (the halves not computed are left as they were).
inline void store_accumulators(int32_t* out, bool right, bool lower) {
  _tile_stored(0, out, 32 * 4);
  if (right) _tile_stored(1, out + 16, 32 * 4);
  if (lower) {
    _tile_stored(2, out + 16 * 32, 32 * 4);
    if (right) _tile_stored(3, out + 16 * 32 + 16, 32 * 4);
  }
}

}  // namespace

void kiln_u8s8_gemm_panel__amx(size_t rows, size_t Kq, const uint8_t* a, size_t lda,
                               const int8_t* panel, int32_t* c, size_t ldc, size_t cols) {
  const size_t quads = Kq / 4, full = quads / 16 * 16;
  // The last partial step of 16 quads, zero padded (A's padding is zero too).
  alignas(64) int8_t tail[16 * kQuadBytes];
  if (full < quads) {
    std::memset(tail, 0, sizeof tail);
    std::memcpy(tail, panel + full * kQuadBytes, (quads - full) * kQuadBytes);
  }
  alignas(64) int32_t out[32 * 32];
  const bool right = cols > 16;
  for (size_t r0 = 0; r0 < rows; r0 += 32) {
    const bool lower = rows - r0 > 16;
    const uint8_t* a0 = a + r0 * lda;
    const uint8_t* a1 = a0 + 16 * lda;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (size_t q = 0; q < quads; q += 16) {
      const int8_t* b = q < full ? panel + q * kQuadBytes : tail;
      dpbusd_step(a0 + q * 4, lda, a1 + q * 4, lda, b, right, lower);
    }
    store_accumulators(out, right, lower);
    const size_t n = rows - r0 < 32 ? rows - r0 : 32;
    for (size_t r = 0; r < n; ++r)
      std::memcpy(c + (r0 + r) * ldc, out + r * 32, cols * sizeof(int32_t));
  }
}

}  // namespace kiln

namespace kiln {

void kiln_u8s8_gemm_rows__amx(const AmxRows* tiles, size_t ntiles, size_t nseg, size_t seg64,
                              const int8_t* panel, int32_t* c, size_t ldc, size_t cols) {
  alignas(64) int32_t out[32 * 32];
  const bool right = cols > 16, lower = ntiles > 1;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (size_t s = 0; s < nseg; ++s) {
    const uint8_t* a0 = tiles[0].bases[s];
    const uint8_t* a1 = lower ? tiles[1].bases[s] : a0;  // read only when lower
    // quad (s * seg64 + j) / 4 of the panel, kQuadBytes each
    const int8_t* bs = panel + s * seg64 * kInt8Nr;
    for (size_t j = 0; j < seg64; j += 64) {
      const int8_t* b = bs + j * kInt8Nr;
      dpbusd_step(a0 + j, tiles[0].lda, a1 + j, tiles[1].lda, b, right, lower);
    }
  }
  store_accumulators(out, right, lower);
  // rows of a narrow product (a ConvTranspose's 4 columns) are a few values: a masked vector
  // each, not a call
  const __mmask16 lo = cols >= 16 ? __mmask16(0xffff) : __mmask16((1u << cols) - 1);
  const __mmask16 hi = cols >= 32 ? __mmask16(0xffff)
                       : cols > 16 ? __mmask16((1u << (cols - 16)) - 1) : __mmask16(0);
  const auto copy = [&](const int32_t* from, int32_t* to) {
    _mm512_mask_storeu_epi32(to, lo, _mm512_maskz_loadu_epi32(lo, from));
    if (hi) _mm512_mask_storeu_epi32(to + 16, hi, _mm512_maskz_loadu_epi32(hi, from + 16));
  };
  for (size_t r = 0; r < tiles[0].rows; ++r) copy(out + r * 32, c + r * ldc);
  if (lower) {
    c += tiles[0].rows * ldc;
    for (size_t r = 0; r < tiles[1].rows; ++r) copy(out + (16 + r) * 32, c + r * ldc);
  }
}

}  // namespace kiln
