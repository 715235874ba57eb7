// Entry points of the masking op for TensorRT's Quickly Deployable Plugin AOT path
// (cdiqa/kernels/plugin_qdp.py). The maths, layout and launch are masking.cu's; see
// ../README.md. Only the parameter order and the launch configuration differ:
//
//   * an AOT plugin kernel is launched by TensorRT with its tensor inputs first, then the
//     scalar "extra args" (32-bit SymInt32 values), then its tensor outputs:
//         (e, a, gamma, sigma, B, C, H, W, k, stats)
//     masking_stats_f32/_f16 take (e, a, gamma, sigma, partials, stats, B, ..., tiles_per_block)
//     and cannot be called that way;
//   * the AOT path gets one kernel launch per plugin and no workspace, so there is no pass 2:
//     one block covers each (b, c) plane (tiles_per_block = every tile, segments = 1), the
//     configuration masking.cu's own launcher picks from CDIQA_MASKING_PLANES_FOR_ONE_BLOCK
//     planes on. Grid (1, min(B*C, 65535), ceil(B*C / 65535)), block 256, no dynamic smem.
//
// NVRTC and nvcc both compile this file (masking.cu is included as source, masking.cuh as
// its header), so the PTX holds these entries and masking.cu's.
#include "masking.cu"

extern "C" __global__ void __launch_bounds__(CDIQA_MASKING_THREADS, CDIQA_MASKING_MIN_BLOCKS)
masking_qdp_f32(const float* __restrict__ e, const float* __restrict__ a,
                const float* __restrict__ gamma, const float* __restrict__ sigma, int B, int C,
                int H, int W, int k, float* __restrict__ stats) {
  const int tiles = (int)cdiqa_masking::tiles_per_plane(H, W);
  cdiqa_masking::masking_stats_impl<float>(e, a, gamma, sigma, nullptr, stats, B, C, H, W, k,
                                           tiles < 1 ? 1 : tiles);
}

extern "C" __global__ void __launch_bounds__(CDIQA_MASKING_THREADS, CDIQA_MASKING_MIN_BLOCKS)
masking_qdp_f16(const unsigned short* __restrict__ e, const unsigned short* __restrict__ a,
                const float* __restrict__ gamma, const float* __restrict__ sigma, int B, int C,
                int H, int W, int k, float* __restrict__ stats) {
  const int tiles = (int)cdiqa_masking::tiles_per_plane(H, W);
  cdiqa_masking::masking_stats_impl<unsigned short>(e, a, gamma, sigma, nullptr, stats, B, C, H,
                                                    W, k, tiles < 1 ? 1 : tiles);
}
