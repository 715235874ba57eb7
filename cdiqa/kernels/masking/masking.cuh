// cdiqa masking op: launch constants and the host API that the TensorRT plugin calls.
//
// Maths, I/O table, memory layout, index maths and limits: README.md beside this file.
// The Python loader (cdiqa/kernels/loader.py) and spec.yaml mirror the constants below;
// tests/kernels/test_spec.py checks that they agree.
//
// This header is read by three compilers: nvcc (masking.cu and the plugin), a host C++
// compiler (the plugin's .cpp files) and NVRTC (device code only, passed in as a header by
// cdiqa/kernels/ptx.py). NVRTC defines __CUDACC_RTC__ and has no host headers, so the host
// API is fenced off from it.
#ifndef CDIQA_MASKING_CUH
#define CDIQA_MASKING_CUH

// Threads per block of masking_stats_* (exactly this many: the thread -> pixel mapping
// depends on it) and of masking_reduce.
#define CDIQA_MASKING_THREADS 256
// Resident blocks per SM that __launch_bounds__ asks ptxas for: 5 caps registers at
// 65536 / (256 * 5) = 51 per thread (ptxas uses 48, no spills); without a bound it takes
// ~108 and only 2 blocks fit. Turing (sm_75) holds 1024 threads per SM, so 4 there.
// A tuning knob, not part of the contract: benchmarks/gpu_check.py times other values with
// -DCDIQA_MASKING_MIN_BLOCKS=n (H200: 4 -> 5 was ~5 % faster).
#ifndef CDIQA_MASKING_MIN_BLOCKS
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 750
#define CDIQA_MASKING_MIN_BLOCKS 4
#else
#define CDIQA_MASKING_MIN_BLOCKS 5
#endif
#endif
// Output tile of one block: TILE_H x TILE_W pixels of one (b, c) plane.
#define CDIQA_MASKING_TILE_H 32
#define CDIQA_MASKING_TILE_W 32
// Window radius that fits one shared-memory halo chunk; larger radii loop over chunks.
#define CDIQA_MASKING_CHUNK_RADIUS 8
// Planes reduced by one block of masking_reduce (one warp per plane).
#define CDIQA_MASKING_REDUCE_PLANES 8
// Upper bound on H and W (keeps every in-plane coordinate sum inside int32).
#define CDIQA_MASKING_MAX_SIDE (1 << 30)
// Upper bounds on B*C (grid y * z) and on the 32 x 32 tiles of one plane (grid x).
#define CDIQA_MASKING_MAX_PLANES 4294836225LL
#define CDIQA_MASKING_MAX_TILES 2147483647LL
// Tiles per block of pass 1 (cdiqa_masking_tiles_per_block): one block per plane from this
// many planes on, else about CDIQA_MASKING_TARGET_BLOCKS blocks.
#define CDIQA_MASKING_PLANES_FOR_ONE_BLOCK 1024
#define CDIQA_MASKING_TARGET_BLOCKS 2048

#if !defined(__CUDACC_RTC__)
#include <stddef.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

// Input element type of e and a (gamma, sigma and stats are always float32).
typedef enum {
  CDIQA_MASKING_F32 = 0,
  CDIQA_MASKING_F16 = 1
} cdiqa_masking_dtype;

// Tiles of a plane that one block of pass 1 handles for this shape (0 for an invalid shape).
int cdiqa_masking_tiles_per_block(int B, int C, int H, int W);

// Bytes of device workspace cdiqa_masking_forward needs for this shape (0 when one block
// covers each plane). Returns 0 for invalid shapes too; cdiqa_masking_forward rejects them.
size_t cdiqa_masking_workspace_size(int B, int C, int H, int W);

// Enqueue the op on `stream`: stats (B, 2, C) float32 from e, a (B, C, H, W) of `dtype`,
// gamma, sigma (C,) float32 and the odd window k. All pointers are device pointers;
// `workspace` must hold cdiqa_masking_workspace_size(B, C, H, W) bytes (may be NULL when
// that is 0). Returns cudaSuccess, cudaErrorInvalidValue for bad arguments, or the launch
// error. Deterministic: the same inputs give bitwise-identical stats.
cudaError_t cdiqa_masking_forward(const void* e, const void* a, cdiqa_masking_dtype dtype,
                                  const float* gamma, const float* sigma, float* stats,
                                  int B, int C, int H, int W, int k,
                                  void* workspace, size_t workspace_bytes,
                                  cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif  // !__CUDACC_RTC__

#endif  // CDIQA_MASKING_CUH
