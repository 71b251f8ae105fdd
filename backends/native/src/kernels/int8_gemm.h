// u8 x s8 -> s32 GEMM for int8 inference: C[M x N] = A[M x K] (u8) * B[K x N] (s8), the
// products summed exactly in int32. B is packed once (constant weights): panels of 32
// columns, K in groups of 4 (the VNNI vpdpbusd layout: four u8 x s8 products per int32
// lane), zero padded; its column sums are kept for the zero-point corrections.
#pragma once
#include <cstddef>
#include <cstdint>
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

// C = A * B for u8 A (M x K, row stride lda) and packed s8 B; C is M x N int32, row stride
// ldc. Dispatches to AVX-512 VNNI when the CPU has it and the ISA cap allows avx512.
void gemm_u8s8s32(size_t M, const uint8_t* A, size_t lda, const PackedInt8B& B, int32_t* C,
                  size_t ldc, ThreadPool* pool);

// The name of the kernel gemm_u8s8s32 uses now ("avx512_vnni" or "generic").
const char* int8_gemm_kernel_name();

// Microkernel contract (one M block of up to kInt8Mr rows x one 32-column panel):
// a: rows x Kq u8 (row stride Kq, zero padded), b: one packed panel, c: rows x cols int32.
constexpr size_t kInt8Mr = 6;
using int8_ukernel_fn = void (*)(size_t rows, size_t Kq, const uint8_t* a, const int8_t* b,
                                 int32_t* c, size_t ldc, size_t cols);
void kiln_u8s8_gemm_ukernel__generic(size_t rows, size_t Kq, const uint8_t* a, const int8_t* b,
                                     int32_t* c, size_t ldc, size_t cols);
void kiln_u8s8_gemm_ukernel__avx512vnni(size_t rows, size_t Kq, const uint8_t* a,
                                        const int8_t* b, int32_t* c, size_t ldc, size_t cols);

}  // namespace kiln
