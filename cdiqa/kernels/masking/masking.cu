// cdiqa masking op, forward: fused box mean, masking and per-(b, c) sum / sum of squares.
//
//   n[b,c,y,x] = |e|^g_c / (s_c^g_c + P_k(a)[b,c,y,x])      (P_k: k x k box mean, zero
//   stats[b,0,c] = sum_yx n      stats[b,1,c] = sum_yx n^2      padding, count_include_pad=0)
//
// The numpy reference is cdiqa/masking.py. The index maths, memory layout, launch
// configuration, passes and limits are documented once, in README.md beside this file
// (cdiqa/kernels/masking/README.md); the comments here only say why.
//
// Entry points (extern "C", stable names; see spec.yaml):
//   masking_stats_f32 / masking_stats_f16   pass 1: a block walks tiles_per_block 32 x 32
//                                           tiles of one (b, c) plane and writes one pair
//                                           of sums (the stats themselves when it covers
//                                           the whole plane)
//   masking_reduce                          pass 2, only when a plane has several blocks:
//                                           one warp per plane sums their pairs
// and, for nvcc builds only, the host launcher cdiqa_masking_forward (masking.cuh).
//
// This file compiles with nvcc and with NVRTC (no system headers in device code; FP16 is
// read as raw bits and converted with one PTX instruction, so cuda_fp16.h is not needed).
#include "masking.cuh"

namespace cdiqa_masking {

constexpr int kThreads = CDIQA_MASKING_THREADS;
constexpr int kWarps = kThreads / 32;
constexpr int kTileH = CDIQA_MASKING_TILE_H;
constexpr int kTileW = CDIQA_MASKING_TILE_W;
constexpr int kChunkR = CDIQA_MASKING_CHUNK_RADIUS;
constexpr int kChunkH = kTileH + 2 * kChunkR;  // rows of one shared-memory chunk of a
constexpr int kChunkW = kTileW + 2 * kChunkR;  // columns of one chunk of a
// Vertical pass: a thread sums kRowsPerItem consecutive output rows of one halo column, so
// each value read from shared memory feeds up to kRowsPerItem windows.
constexpr int kRowsPerItem = 8;
constexpr int kGroups = kTileH / kRowsPerItem;
constexpr int kColumnSlots = kThreads / kGroups;  // halo columns one vertical pass covers
// The chunked (large-k) path runs the vertical pass with fewer rows per item: its windows
// are tested at run time, and 4 accumulators keep it under the register cap without spills.
constexpr int kChunkedRows = 4;
constexpr int kChunkedGroups = kTileH / kChunkedRows;
// Horizontal pass: lane = output row, warp = a segment of kColsPerThread output columns.
constexpr int kColsPerThread = kTileW * kTileH / kThreads;
// Pitches: odd where a warp reads one column across 32 rows, so the rows fall in 32
// different banks; kHaloPitch is only read along rows, so it needs no padding.
constexpr int kHaloPitch = kChunkW;
constexpr int kVsumPitch = kChunkW + 1;
constexpr int kEPitch = kTileW + 1;
// Radii with a fully unrolled, zero-padded single-chunk path (k = 1, 3, 5, 7).
constexpr int kFastRadiusMax = 3;

static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps, at most 1024 threads");
static_assert(kTileH == 32, "the horizontal pass maps lane -> output row");
static_assert(kTileW % 32 == 0, "tile rows are loaded by whole warps");
static_assert(kTileH % kRowsPerItem == 0, "row groups tile the output rows");
static_assert(kColsPerThread * kThreads == kTileH * kTileW, "one thread per output segment");
static_assert(kTileW % kColsPerThread == 0, "segments tile the output columns");
static_assert(kColumnSlots >= kChunkW, "one vertical pass covers every chunk column");
static_assert(kFastRadiusMax <= kChunkR, "the fast path fits one chunk");
static_assert(kVsumPitch % 2 == 1 && kEPitch % 2 == 1, "odd pitches avoid bank conflicts");

// Loads are split in two: load_raw issues the load, widen converts it. Loaders issue all
// their load_raw first (at clamped, always valid addresses, so no branch guards them) and
// only then widen and select: the loads of a thread are in flight together instead of one
// memory latency each.
__device__ __forceinline__ float load_raw(const float* __restrict__ p, long long i) {
  return __ldg(p + i);
}

__device__ __forceinline__ unsigned short load_raw(const unsigned short* __restrict__ p,
                                                   long long i) {
  return __ldg(p + i);
}

__device__ __forceinline__ float widen(float v) { return v; }

// FP16 read as its 16 raw bits (no cuda_fp16.h needed, NVRTC-friendly), widened exactly.
__device__ __forceinline__ float widen(unsigned short bits) {
#if defined(CDIQA_MASKING_CPU_EMULATION)
  return cdiqa_emulated_half_to_float(bits);  // host-thread emulation of the kernels in tests
#else
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(bits));
  return f;
#endif
}

template <typename T>
__device__ __forceinline__ float load_value(const T* __restrict__ p, long long i) {
  return widen(load_raw(p, i));
}

// |x|^g = 2^(g * log2 |x|) with the hardware approximations, subnormals flushed (MUFU.LG2 /
// MUFU.EX2 with no fix-up code around them): log2 has an absolute error <= 2^-22 near 1 and
// 2 ulp elsewhere, exp2 2 ulp, so the power is within ~1e-6 (relative) for |x| in
// [1e-4, 1e4]. x = 0 (or subnormal) gives 2^-inf = 0 exactly, as the reference requires.
// The accurate log2f is a 30-instruction polynomial, once the largest cost of the kernel.
__device__ __forceinline__ float pow_abs(float x, float g) {
#if defined(CDIQA_MASKING_CPU_EMULATION)
  return exp2f(g * log2f(fabsf(x)));
#else
  float l;
  float r;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(l) : "f"(fabsf(x)));
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(g * l));
  return r;
#endif
}

__host__ __device__ __forceinline__ long long tiles_per_plane(int H, int W) {
  return (long long)((H + kTileH - 1) / kTileH) * ((W + kTileW - 1) / kTileW);
}

// Fast path, compile-time radius R <= kFastRadiusMax: the whole (32+2R)^2 halo of a, zero
// padded outside the map, sits in one chunk, so no loop needs a bounds test and both passes
// unroll completely. Zero padding gives the same sums as clipping the window.
template <typename T, int R>
__device__ __forceinline__ void box_sums_fast(const T* __restrict__ ap, int H, int W, int y0,
                                              int x0, float* s_a, float* s_v,
                                              float (&box)[kColsPerThread]) {
  constexpr int kHaloH = kTileH + 2 * R;
  constexpr int kHaloW = kTileW + 2 * R;
  constexpr int kSpan = kRowsPerItem + 2 * R;
  constexpr int kRowSpan = kColsPerThread + 2 * R;
  const int tid = threadIdx.x;
  {  // warp w loads halo rows w, w+8, ...; lane l columns l and l+32 (kHaloW <= 64). All
     // loads first, at addresses clamped into the map; zero padding is applied on the store.
    static_assert(kHaloW <= 64, "two columns per lane");
    constexpr int kIters = (kHaloH + kWarps - 1) / kWarps;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int xa = x0 - R + lane;
    const int xb = xa + 32;
    const bool has_b = lane + 32 < kHaloW;
    const bool in_a = xa >= 0 && xa < W;
    const bool in_b = has_b && xb < W;  // xb >= 32 - R > 0
    const int xa_c = min(max(xa, 0), W - 1);
    const int xb_c = min(xb, W - 1);
    T ra[kIters];
    T rb[kIters];
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int y = min(max(y0 - R + warp + it * kWarps, 0), H - 1);
      const long long row = (long long)y * W;
      ra[it] = load_raw(ap, row + xa_c);
      rb[it] = load_raw(ap, row + xb_c);
    }
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int i = warp + it * kWarps;
      const int y = y0 - R + i;
      const bool in_y = y >= 0 && y < H;
      if (i < kHaloH) {
        s_a[i * kHaloPitch + lane] = in_y && in_a ? widen(ra[it]) : 0.f;
        if (has_b) s_a[i * kHaloPitch + lane + 32] = in_y && in_b ? widen(rb[it]) : 0.f;
      }
    }
  }
  __syncthreads();
  {  // vertical: column j of the halo, output rows g*8 .. g*8+7
    const int g = tid / kColumnSlots;
    const int j = tid - g * kColumnSlots;
    if (j < kHaloW) {
      float v[kSpan];
#pragma unroll
      for (int t = 0; t < kSpan; ++t) v[t] = s_a[(g * kRowsPerItem + t) * kHaloPitch + j];
#pragma unroll
      for (int q = 0; q < kRowsPerItem; ++q) {
        float acc = v[q];
#pragma unroll
        for (int t = 1; t <= 2 * R; ++t) acc += v[q + t];
        s_v[(g * kRowsPerItem + q) * kVsumPitch + j] = acc;
      }
    }
  }
  __syncthreads();
  {  // horizontal: output row i, columns j0 .. j0+3 (halo column j0+q+t, t = 0..2R)
    const int i = tid % kTileH;
    const int j0 = (tid / kTileH) * kColsPerThread;
    float v[kRowSpan];
#pragma unroll
    for (int t = 0; t < kRowSpan; ++t) v[t] = s_v[i * kVsumPitch + j0 + t];
#pragma unroll
    for (int q = 0; q < kColsPerThread; ++q) {
      float acc = v[q];
#pragma unroll
      for (int t = 1; t <= 2 * R; ++t) acc += v[q + t];
      box[q] = acc;
    }
  }
}

// General path, any radius (already clipped to the map: ry <= H-1, rx <= W-1). The halo,
// clipped to the map, is walked in kChunkH x kChunkW chunks; each chunk adds its part of
// every window: sum over the chunk's columns of (sum over the chunk's rows). Shared memory
// does not grow with k, and a window never reads outside the map.
template <typename T>
__device__ __forceinline__ void box_sums_chunked(const T* __restrict__ ap, int H, int W,
                                                 int y0, int x0, int ry, int rx, float* s_a,
                                                 float* s_v, float (&box)[kColsPerThread]) {
  const int tid = threadIdx.x;
  const int ye = min(y0 + kTileH, H);
  const int xe = min(x0 + kTileW, W);
  const int hy0 = max(y0 - ry, 0);
  const int hy1 = min(ye - 1 + ry, H - 1) + 1;
  const int hx0 = max(x0 - rx, 0);
  const int hx1 = min(xe - 1 + rx, W - 1) + 1;
  const int ih = tid % kTileH;
  const int xa = x0 + (tid / kTileH) * kColsPerThread;
#pragma unroll
  for (int q = 0; q < kColsPerThread; ++q) box[q] = 0.f;

  for (int cy0 = hy0; cy0 < hy1; cy0 += kChunkH) {
    const int ch = min(kChunkH, hy1 - cy0);
    for (int cx0 = hx0; cx0 < hx1; cx0 += kChunkW) {
      const int cw = min(kChunkW, hx1 - cx0);
      __syncthreads();  // the previous chunk's s_a / s_v readers are done
      for (int idx = tid; idx < kChunkH * kChunkW; idx += kThreads) {
        const int i = idx / kChunkW;
        const int j = idx - i * kChunkW;
        if (i < ch && j < cw) s_a[i * kHaloPitch + j] = load_value(ap, (long long)(cy0 + i) * W + (cx0 + j));
      }
      __syncthreads();
      for (int item = tid; item < kChunkedGroups * kChunkW; item += kThreads) {
        const int g = item / kChunkW;
        const int jv = item - g * kChunkW;
        if (jv >= cw) continue;
        const int ya = y0 + g * kChunkedRows;
        float acc[kChunkedRows];
#pragma unroll
        for (int q = 0; q < kChunkedRows; ++q) acc[q] = 0.f;
        const int lo = max(ya - ry, cy0);
        const int hi = min(ya + kChunkedRows - 1 + ry, cy0 + ch - 1);
        for (int yy = lo; yy <= hi; ++yy) {
          const float v = s_a[(yy - cy0) * kHaloPitch + jv];
#pragma unroll
          for (int q = 0; q < kChunkedRows; ++q) {
            // ya+q-ry <= yy <= ya+q+ry, as one unsigned compare
            if ((unsigned)(yy - ya - q + ry) <= (unsigned)(2 * ry)) acc[q] += v;
          }
        }
#pragma unroll
        for (int q = 0; q < kChunkedRows; ++q) s_v[(g * kChunkedRows + q) * kVsumPitch + jv] = acc[q];
      }
      __syncthreads();
      const int lo = max(xa - rx, cx0);
      const int hi = min(xa + kColsPerThread - 1 + rx, cx0 + cw - 1);
      for (int xx = lo; xx <= hi; ++xx) {
        const float v = s_v[ih * kVsumPitch + (xx - cx0)];
#pragma unroll
        for (int q = 0; q < kColsPerThread; ++q) {
          if ((unsigned)(xx - xa - q + rx) <= (unsigned)(2 * rx)) box[q] += v;
        }
      }
    }
  }
}

// Warp sum by a fixed shuffle tree: the order never depends on scheduling.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

// Segments of a plane: pass 1 gives each block tiles_per_block consecutive tiles (row-major)
// of one plane; a plane with one segment needs no pass 2.
__host__ __device__ __forceinline__ long long segments_per_plane(int H, int W,
                                                                 int tiles_per_block) {
  return (tiles_per_plane(H, W) + tiles_per_block - 1) / tiles_per_block;
}

__host__ __device__ __forceinline__ bool args_ok(int B, int C, int H, int W,
                                                 int tiles_per_block) {
  return B >= 1 && C >= 1 && H >= 1 && W >= 1 && H <= CDIQA_MASKING_MAX_SIDE &&
         W <= CDIQA_MASKING_MAX_SIDE && tiles_per_block >= 1 &&
         (long long)B * C <= CDIQA_MASKING_MAX_PLANES &&
         tiles_per_plane(H, W) <= CDIQA_MASKING_MAX_TILES;
}

template <typename T>
__device__ __forceinline__ void masking_stats_impl(const T* __restrict__ e,
                                                   const T* __restrict__ a,
                                                   const float* __restrict__ gamma,
                                                   const float* __restrict__ sigma,
                                                   float* __restrict__ partials,
                                                   float* __restrict__ stats, int B, int C,
                                                   int H, int W, int k, int tiles_per_block) {
  __shared__ float s_a[kChunkH * kHaloPitch];
  __shared__ float s_v[kTileH * kVsumPitch];
  __shared__ float s_e[kTileH * kEPitch];
  __shared__ float s_red[2 * kWarps];
  if (!args_ok(B, C, H, W, tiles_per_block) || k < 1 || (k & 1) == 0) {
    return;  // the launcher rejects these; never index with them
  }
  // Block (x, y, z) = (segment, plane mod 65535, plane / 65535): no 64-bit division, and the
  // plane (hence c, gamma, sigma) is fixed for the whole block. Exits are block-uniform.
  const unsigned int planes = (unsigned int)B * (unsigned int)C;  // <= 65535^2 < 2^32
  const unsigned int plane = blockIdx.y + gridDim.y * blockIdx.z;
  const int ntiles = (int)tiles_per_plane(H, W);
  // 32-bit: a 64-bit division is a ~100-instruction call that every thread would run
  const int segments = ntiles / tiles_per_block + (ntiles % tiles_per_block != 0 ? 1 : 0);
  const int segment = (int)blockIdx.x;
  if (plane >= planes || segment >= segments) return;  // the tail of the grid
  const int tid = threadIdx.x;
  const int r = (k - 1) / 2;
  const int ry = min(r, H - 1);  // a window wider than the map covers all of it
  const int rx = min(r, W - 1);
  const int tiles_x = (W + kTileW - 1) / kTileW;
  const int c = (int)(plane % (unsigned int)C);
  const long long plane_offset = (long long)plane * ((long long)H * W);
  const T* __restrict__ ep = e + plane_offset;
  const T* __restrict__ ap = a + plane_offset;
  const float g = __ldg(gamma + c);
  const float sg = exp2f(g * log2f(__ldg(sigma + c)));
  const int ih = tid % kTileH;                     // output row of this thread in a tile
  const int jh = (tid / kTileH) * kColsPerThread;  // its first output column
  const int lane = tid & 31;
  const int warp = tid >> 5;

  const int t_begin = segment * tiles_per_block;  // < ntiles, so no overflow
  const int t_end = t_begin + min(tiles_per_block, ntiles - t_begin);
  int ty = t_begin / tiles_x;
  int tx = t_begin - ty * tiles_x;
  float s1 = 0.f;  // this thread's sums over its pixels of every tile, in a fixed order
  float s2 = 0.f;
  for (int t = t_begin; t < t_end; ++t) {
    const int y0 = ty * kTileH;
    const int x0 = tx * kTileW;
    if (++tx == tiles_x) {
      tx = 0;
      ++ty;
    }
    if (t != t_begin) __syncthreads();  // the previous tile's readers of shared memory are done
    {  // e tile -> s_e: warp w rows w, w+8, ...; lane l column l. Loads first (clamped
       // addresses), then widen and select, as in box_sums_fast.
      static_assert(kTileW == 32, "one column per lane");
      constexpr int kIters = kTileH / kWarps;
      const int x = x0 + lane;
      const int x_c = min(x, W - 1);
      T raw[kIters];
#pragma unroll
      for (int it = 0; it < kIters; ++it) {
        const int y_c = min(y0 + warp + it * kWarps, H - 1);
        raw[it] = load_raw(ep, (long long)y_c * W + x_c);
      }
#pragma unroll
      for (int it = 0; it < kIters; ++it) {
        const int i = warp + it * kWarps;
        s_e[i * kEPitch + lane] = y0 + i < H && x < W ? widen(raw[it]) : 0.f;
      }
    }

    float box[kColsPerThread];  // box sums of a at (y0 + ih, x0 + jh + q)
    switch (r) {  // block-uniform: every __syncthreads inside is reached by all threads
      case 0: box_sums_fast<T, 0>(ap, H, W, y0, x0, s_a, s_v, box); break;
      case 1: box_sums_fast<T, 1>(ap, H, W, y0, x0, s_a, s_v, box); break;
      case 2: box_sums_fast<T, 2>(ap, H, W, y0, x0, s_a, s_v, box); break;
      case 3: box_sums_fast<T, 3>(ap, H, W, y0, x0, s_a, s_v, box); break;
      default: box_sums_chunked<T>(ap, H, W, y0, x0, ry, rx, s_a, s_v, box); break;
    }

    // n = |e|^g / (s^g + box/count) = |e|^g * count / (s^g * count + box), with the fast
    // division (2 ulp; denominators above 2^126 would give 0, far outside any real input).
    // Pixels outside the map are computed from clamped values and dropped by a select, so
    // no branch splits the warp.
    const int y = y0 + ih;
    const bool in_y = y < H;
    const float cy = (float)(min(y + ry, H - 1) - max(y - ry, 0) + 1);
#pragma unroll
    for (int q = 0; q < kColsPerThread; ++q) {
      const int x = x0 + jh + q;
      const float cnt = cy * (float)max(min(x + rx, W - 1) - max(x - rx, 0) + 1, 1);
      const float p = pow_abs(s_e[ih * kEPitch + jh + q], g);
      const float n = in_y && x < W ? __fdividef(p * cnt, fmaf(sg, cnt, box[q])) : 0.f;
      s1 += n;
      s2 = fmaf(n, n, s2);
    }
  }

  s1 = warp_sum(s1);
  s2 = warp_sum(s2);
  if (lane == 0) {
    s_red[warp] = s1;
    s_red[kWarps + warp] = s2;
  }
  __syncthreads();
  if (tid == 0) {
    float t1 = 0.f;
    float t2 = 0.f;
    for (int w = 0; w < kWarps; ++w) {  // fixed order: deterministic
      t1 += s_red[w];
      t2 += s_red[kWarps + w];
    }
    if (segments == 1) {  // the block saw the whole plane: write the stats, no pass 2
      const long long b = plane / (unsigned int)C;
      stats[b * 2 * C + c] = t1;
      stats[b * 2 * C + C + c] = t2;
    } else {
      float* out = partials + ((long long)plane * segments + segment) * 2;
      out[0] = t1;
      out[1] = t2;
    }
  }
}

}  // namespace cdiqa_masking

extern "C" __global__ void __launch_bounds__(CDIQA_MASKING_THREADS, CDIQA_MASKING_MIN_BLOCKS)
masking_stats_f32(const float* __restrict__ e, const float* __restrict__ a,
                  const float* __restrict__ gamma, const float* __restrict__ sigma,
                  float* __restrict__ partials, float* __restrict__ stats, int B, int C, int H,
                  int W, int k, int tiles_per_block) {
  cdiqa_masking::masking_stats_impl<float>(e, a, gamma, sigma, partials, stats, B, C, H, W, k,
                                           tiles_per_block);
}

extern "C" __global__ void __launch_bounds__(CDIQA_MASKING_THREADS, CDIQA_MASKING_MIN_BLOCKS)
masking_stats_f16(const unsigned short* __restrict__ e, const unsigned short* __restrict__ a,
                  const float* __restrict__ gamma, const float* __restrict__ sigma,
                  float* __restrict__ partials, float* __restrict__ stats, int B, int C, int H,
                  int W, int k, int tiles_per_block) {
  cdiqa_masking::masking_stats_impl<unsigned short>(e, a, gamma, sigma, partials, stats, B, C,
                                                    H, W, k, tiles_per_block);
}

// Pass 2: warp w of the grid sums the segment partials of plane w (lane-strided, then a
// fixed shuffle tree) and writes stats[b, 0, c], stats[b, 1, c]. A no-op when a plane is one
// segment (pass 1 already wrote the stats).
extern "C" __global__ void __launch_bounds__(CDIQA_MASKING_THREADS)
masking_reduce(const float* __restrict__ partials, float* __restrict__ stats, int B, int C,
               int H, int W, int tiles_per_block) {
  if (!cdiqa_masking::args_ok(B, C, H, W, tiles_per_block)) return;
  const long long segments = cdiqa_masking::segments_per_plane(H, W, tiles_per_block);
  if (segments == 1) return;
  const long long planes = (long long)B * C;
  const int lane = threadIdx.x & 31;
  const long long first = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const long long step = ((long long)gridDim.x * blockDim.x) >> 5;
  for (long long p = first; p < planes; p += step) {  // warp-uniform loop
    const float* src = partials + p * segments * 2;
    float s1 = 0.f;
    float s2 = 0.f;
    for (long long t = lane; t < segments; t += 32) {
      s1 += src[2 * t];
      s2 += src[2 * t + 1];
    }
    s1 = cdiqa_masking::warp_sum(s1);
    s2 = cdiqa_masking::warp_sum(s2);
    if (lane == 0) {
      const long long b = p / C;
      const long long c = p - b * C;
      stats[b * 2 * C + c] = s1;
      stats[b * 2 * C + C + c] = s2;
    }
  }
}

#if !defined(__CUDACC_RTC__)
// Host launcher for the TensorRT plugin (declared in masking.cuh). Grids: README.md "Launch".
namespace cdiqa_masking {

constexpr long long kMaxGridX = 2147483647LL;  // gridDim.x limit (compute capability >= 3.0)
constexpr long long kMaxGridYZ = 65535LL;

// Tiles per block of pass 1, a function of the shape alone (the workspace size depends on
// it). With >= CDIQA_MASKING_PLANES_FOR_ONE_BLOCK planes there are enough blocks to fill any
// GPU with one block per plane, which needs no pass 2; fewer planes are cut into segments
// so that about CDIQA_MASKING_TARGET_BLOCKS blocks run.
inline int tiles_per_block_for(int B, int C, int H, int W) {
  const long long ntiles = tiles_per_plane(H, W);
  const long long planes = (long long)B * C;
  if (planes >= CDIQA_MASKING_PLANES_FOR_ONE_BLOCK) return (int)ntiles;
  long long t = planes * ntiles / CDIQA_MASKING_TARGET_BLOCKS;
  if (t < 1) t = 1;
  if (t > ntiles) t = ntiles;
  return (int)t;
}

// Pass 2 grid: the kernel loops (grid stride), so any capped 1-D grid is correct.
inline unsigned int reduce_grid(long long planes) {
  const long long blocks =
      (planes + CDIQA_MASKING_REDUCE_PLANES - 1) / CDIQA_MASKING_REDUCE_PLANES;
  return (unsigned int)(blocks < kMaxGridX ? blocks : kMaxGridX);
}

}  // namespace cdiqa_masking

extern "C" int cdiqa_masking_tiles_per_block(int B, int C, int H, int W) {
  if (!cdiqa_masking::args_ok(B, C, H, W, 1)) return 0;
  return cdiqa_masking::tiles_per_block_for(B, C, H, W);
}

extern "C" size_t cdiqa_masking_workspace_size(int B, int C, int H, int W) {
  const int tpb = cdiqa_masking_tiles_per_block(B, C, H, W);
  if (tpb < 1) return 0;
  const long long segments = cdiqa_masking::segments_per_plane(H, W, tpb);
  if (segments == 1) return 0;
  return (size_t)B * (size_t)C * (size_t)segments * 2 * sizeof(float);
}

extern "C" cudaError_t cdiqa_masking_forward(const void* e, const void* a,
                                             cdiqa_masking_dtype dtype, const float* gamma,
                                             const float* sigma, float* stats, int B, int C,
                                             int H, int W, int k, void* workspace,
                                             size_t workspace_bytes, cudaStream_t stream) {
  using namespace cdiqa_masking;
  const int tpb = cdiqa_masking_tiles_per_block(B, C, H, W);
  if (tpb < 1 || k < 1 || (k & 1) == 0) return cudaErrorInvalidValue;
  if (e == nullptr || a == nullptr || gamma == nullptr || sigma == nullptr || stats == nullptr)
    return cudaErrorInvalidValue;
  const size_t need = cdiqa_masking_workspace_size(B, C, H, W);
  if (need > 0 && (workspace == nullptr || workspace_bytes < need)) return cudaErrorInvalidValue;
  const long long planes = (long long)B * C;
  const long long segments = segments_per_plane(H, W, tpb);
  float* partials = need > 0 ? static_cast<float*>(workspace) : nullptr;
  // grid (segments, planes mod 65535, planes / 65535): see masking_stats_impl
  const long long gy = planes < kMaxGridYZ ? planes : kMaxGridYZ;
  const dim3 grid((unsigned int)segments, (unsigned int)gy, (unsigned int)((planes + gy - 1) / gy));
  if (dtype == CDIQA_MASKING_F32) {
    masking_stats_f32<<<grid, kThreads, 0, stream>>>(
        static_cast<const float*>(e), static_cast<const float*>(a), gamma, sigma, partials,
        stats, B, C, H, W, k, tpb);
  } else if (dtype == CDIQA_MASKING_F16) {
    masking_stats_f16<<<grid, kThreads, 0, stream>>>(
        static_cast<const unsigned short*>(e), static_cast<const unsigned short*>(a), gamma,
        sigma, partials, stats, B, C, H, W, k, tpb);
  } else {
    return cudaErrorInvalidValue;
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || segments == 1) return err;
  masking_reduce<<<reduce_grid(planes), kThreads, 0, stream>>>(partials, stats, B, C, H, W, tpb);
  return cudaGetLastError();
}
#endif  // !__CUDACC_RTC__
