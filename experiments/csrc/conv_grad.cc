// Gradients of a VALID, stride-1 NHWC/HWIO float32 convolution, as XLA FFI handlers
// for the CPU (AVX-512). Built and loaded by experiments/native_conv.py; see its
// docstring for why and for the figures.
//
// Both gradients are written as sums of rank-1 updates whose long side is one
// contiguous "row segment" of KW * C floats (L): for kernel row i and output
// position (n, y, x), the input's x[n, y + i, x : x + KW, :] and the input
// gradient's dx[n, y + i, x : x + KW, :] are L consecutive floats in NHWC. Vectors
// run along that segment (V = ceil(L / 16) zmm registers, the last one masked), so
// no patch matrix is ever built:
//
//   input gradient:  dx[n, y + i, x + j, c] += sum_o g[n, y, x, o] w[i, j, c, o]
//   kernel gradient: dw[i, j, c, o]        += sum_{n,y,x} x[n, y + i, x + j, c] g[n, y, x, o]
//
// Register tiles are P output positions x V vectors (input gradient) and Q output
// channels x V vectors (kernel gradient), at most 28 accumulators.
//
// Work is split over images in fixed chunks. The input gradient of an image only
// touches that image, and the kernel gradient is summed per chunk, then over chunks
// in chunk order: results do not depend on the number of threads or on which thread
// ran which chunk (bit-reproducible run to run).

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kLanes = 16;
constexpr int kMaxVectors = 8;  // segments up to 128 floats

// Runs body(chunk) for chunk in [0, chunks) on the calling thread and on the
// XLA intra-op pool. The caller claims chunks too and only waits for chunks that a
// helper has already started, so it cannot deadlock when the pool is busy.
template <typename Body>
void parallel_chunks(ffi::ThreadPool& pool, int64_t chunks, const Body& body) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto state = std::make_shared<State>();
  auto work = [state, chunks, &body]() {
    for (int64_t c; (c = state->next.fetch_add(1)) < chunks;) {
      body(c);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  int64_t helpers = std::min<int64_t>(pool.num_threads(), chunks) - 1;
  // A helper that starts after all chunks are claimed does nothing; `body` is only
  // touched by claimed chunks, all finished before this function returns.
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([work]() { work(); });
  work();
  while (state->done.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
}

inline __mmask16 tail_mask(int64_t length) {
  int64_t rest = length - (length - 1) / kLanes * kLanes;  // 1..16
  return static_cast<__mmask16>((1u << rest) - 1u);
}

// dx tile: positions x .. x + P - 1 of row y, kernel row i.
// wt: (O, KH, VP) with wt[o, i, j * C + c] = w[i, j, c, o], zero beyond L.
template <int V, int P>
inline void input_grad_tile(const float* g_pos, int64_t O, const float* wt_i, int64_t wt_o_stride,
                            float* dx_row, int64_t C, __mmask16 last) {
  __m512 acc[P][V];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) acc[p][v] = _mm512_setzero_ps();
  for (int64_t o = 0; o < O; ++o) {
    const float* wo = wt_i + o * wt_o_stride;
    __m512 wv[V];
    for (int v = 0; v < V; ++v) wv[v] = _mm512_loadu_ps(wo + v * kLanes);
    for (int p = 0; p < P; ++p) {
      __m512 gb = _mm512_set1_ps(g_pos[p * O + o]);
      for (int v = 0; v < V; ++v) acc[p][v] = _mm512_fmadd_ps(gb, wv[v], acc[p][v]);
    }
  }
  // Consecutive positions overlap in dx (offset C): add them one after another.
  for (int p = 0; p < P; ++p) {
    float* d = dx_row + p * C;
    for (int v = 0; v < V - 1; ++v)
      _mm512_storeu_ps(d + v * kLanes, _mm512_add_ps(_mm512_loadu_ps(d + v * kLanes), acc[p][v]));
    float* dl = d + (V - 1) * kLanes;
    _mm512_mask_storeu_ps(dl, last, _mm512_add_ps(_mm512_maskz_loadu_ps(last, dl), acc[p][V - 1]));
  }
}

// Positions (or output channels) per register tile: P * V accumulators, V loaded
// vectors and one broadcast must fit the 32 zmm registers.
template <int V>
constexpr int tile_width() {
  return (31 - V) / V < 8 ? (31 - V) / V : 8;
}

// input_grad_tile<V, np> for a run-time np <= P (a row's last, partial tile).
template <int V, int P>
inline void input_grad_tiles(int64_t np, const float* g_pos, int64_t O, const float* wt_i,
                             int64_t wt_o_stride, float* dx_row, int64_t C, __mmask16 last) {
  if constexpr (P >= 1) {
    if (np == P) return input_grad_tile<V, P>(g_pos, O, wt_i, wt_o_stride, dx_row, C, last);
    input_grad_tiles<V, P - 1>(np, g_pos, O, wt_i, wt_o_stride, dx_row, C, last);
  }
}

template <int V>
void input_grad_image(const float* g, const float* wt, float* dx, int64_t OH, int64_t OW,
                      int64_t O, int64_t KH, int64_t KW, int64_t C) {
  constexpr int P = tile_width<V>();
  const int64_t W = OW + KW - 1, L = KW * C, VP = V * kLanes;
  const __mmask16 last = tail_mask(L);
  std::memset(dx, 0, sizeof(float) * (OH + KH - 1) * W * C);
  for (int64_t y = 0; y < OH; ++y) {
    for (int64_t x = 0; x < OW; x += P) {
      const int64_t np = std::min<int64_t>(P, OW - x);
      const float* g_pos = g + (y * OW + x) * O;
      for (int64_t i = 0; i < KH; ++i) {
        const float* wt_i = wt + i * VP;
        float* dx_row = dx + ((y + i) * W + x) * C;
        input_grad_tiles<V, P>(np, g_pos, O, wt_i, KH * VP, dx_row, C, last);
      }
    }
  }
}

// dw tile: output channels o .. o + Q - 1 of kernel row i, summed over the images
// [n0, n1). Accumulates into part (KH, O, VP).
template <int V, int Q>
inline void kernel_grad_tile(const float* x, const float* g, int64_t n0, int64_t n1, int64_t H,
                             int64_t W, int64_t C, int64_t OH, int64_t OW, int64_t O, int64_t i,
                             int64_t o, float* part_io, int64_t VP, __mmask16 last) {
  __m512 acc[Q][V];
  for (int q = 0; q < Q; ++q)
    for (int v = 0; v < V; ++v) acc[q][v] = _mm512_setzero_ps();
  for (int64_t n = n0; n < n1; ++n) {
    for (int64_t y = 0; y < OH; ++y) {
      const float* xrow = x + ((n * H + y + i) * W) * C;
      const float* grow = g + ((n * OH + y) * OW) * O + o;
      for (int64_t xx = 0; xx < OW; ++xx) {
        const float* a = xrow + xx * C;
        __m512 av[V];
        for (int v = 0; v < V - 1; ++v) av[v] = _mm512_loadu_ps(a + v * kLanes);
        av[V - 1] = _mm512_maskz_loadu_ps(last, a + (V - 1) * kLanes);
        const float* gp = grow + xx * O;
        for (int q = 0; q < Q; ++q) {
          __m512 gb = _mm512_set1_ps(gp[q]);
          for (int v = 0; v < V; ++v) acc[q][v] = _mm512_fmadd_ps(gb, av[v], acc[q][v]);
        }
      }
    }
  }
  for (int q = 0; q < Q; ++q)
    for (int v = 0; v < V; ++v) _mm512_storeu_ps(part_io + q * VP + v * kLanes, acc[q][v]);
}

template <int V, int Q>
inline void kernel_grad_tiles(int64_t nq, const float* x, const float* g, int64_t n0, int64_t n1,
                              int64_t H, int64_t W, int64_t C, int64_t OH, int64_t OW, int64_t O,
                              int64_t i, int64_t o, float* part_io, int64_t VP, __mmask16 last) {
  if constexpr (Q >= 1) {
    if (nq == Q)
      return kernel_grad_tile<V, Q>(x, g, n0, n1, H, W, C, OH, OW, O, i, o, part_io, VP, last);
    kernel_grad_tiles<V, Q - 1>(nq, x, g, n0, n1, H, W, C, OH, OW, O, i, o, part_io, VP, last);
  }
}

template <int V>
void kernel_grad_chunk(const float* x, const float* g, int64_t n0, int64_t n1, int64_t H,
                       int64_t W, int64_t C, int64_t OH, int64_t OW, int64_t O, int64_t KH,
                       int64_t KW, float* part) {
  constexpr int Q = tile_width<V>();
  const int64_t VP = V * kLanes;
  const __mmask16 last = tail_mask(KW * C);
  for (int64_t i = 0; i < KH; ++i) {
    for (int64_t o = 0; o < O; o += Q) {
      float* p = part + (i * O + o) * VP;
      const int64_t nq = std::min<int64_t>(Q, O - o);
      kernel_grad_tiles<V, Q>(nq, x, g, n0, n1, H, W, C, OH, OW, O, i, o, p, VP, last);
    }
  }
}

template <typename F>
bool dispatch_vectors(int64_t v, F&& f) {
  switch (v) {
    case 1: f(std::integral_constant<int, 1>{}); return true;
    case 2: f(std::integral_constant<int, 2>{}); return true;
    case 3: f(std::integral_constant<int, 3>{}); return true;
    case 4: f(std::integral_constant<int, 4>{}); return true;
    case 5: f(std::integral_constant<int, 5>{}); return true;
    case 6: f(std::integral_constant<int, 6>{}); return true;
    case 7: f(std::integral_constant<int, 7>{}); return true;
    case 8: f(std::integral_constant<int, 8>{}); return true;
    default: return false;
  }
}

// g: (N, OH, OW, O); wt: (O, KH, VP), see input_grad_tile; dx: (N, OH+KH-1, OW+KW-1, C).
ffi::Error InputGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> wt,
                         ffi::ResultBuffer<ffi::F32> dx, int64_t kw) {
  auto gd = g.dimensions(), wd = wt.dimensions(), xd = dx->dimensions();
  if (gd.size() != 4 || wd.size() != 3 || xd.size() != 4)
    return ffi::Error::InvalidArgument("conv input grad: expected g rank 4, wt rank 3, dx rank 4");
  const int64_t N = gd[0], OH = gd[1], OW = gd[2], O = gd[3];
  const int64_t KH = wd[1], VP = wd[2], C = xd[3];
  const int64_t V = VP / kLanes;
  if (wd[0] != O || VP % kLanes || kw * C > VP || kw * C <= VP - kLanes || xd[0] != N ||
      xd[1] != OH + KH - 1 || xd[2] != OW + kw - 1)
    return ffi::Error::InvalidArgument("conv input grad: inconsistent shapes");
  const float* gp = g.typed_data();
  const float* wp = wt.typed_data();
  float* dp = dx->typed_data();
  const int64_t g_image = OH * OW * O, x_image = xd[1] * xd[2] * C;
  bool ok = dispatch_vectors(V, [&](auto v) {
    parallel_chunks(pool, N, [&](int64_t n) {
      input_grad_image<decltype(v)::value>(gp + n * g_image, wp, dp + n * x_image, OH, OW, O, KH,
                                           kw, C);
    });
  });
  if (!ok) return ffi::Error::InvalidArgument("conv input grad: KW * C above 128");
  return ffi::Error::Success();
}

// x: (N, H, W, C); g: (N, OH, OW, O); dwt: (KH, O, VP) with dwt[i, o, j * C + c] = dw[i, j, c, o].
ffi::Error KernelGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> g,
                          ffi::ResultBuffer<ffi::F32> dwt, int64_t kw, int64_t chunk) {
  auto xd = x.dimensions(), gd = g.dimensions(), wd = dwt->dimensions();
  if (xd.size() != 4 || gd.size() != 4 || wd.size() != 3)
    return ffi::Error::InvalidArgument("conv kernel grad: expected x rank 4, g rank 4, dwt rank 3");
  const int64_t N = xd[0], H = xd[1], W = xd[2], C = xd[3];
  const int64_t OH = gd[1], OW = gd[2], O = gd[3];
  const int64_t KH = wd[0], VP = wd[2];
  const int64_t V = VP / kLanes;
  if (gd[0] != N || wd[1] != O || VP % kLanes || kw * C > VP || kw * C <= VP - kLanes ||
      H != OH + KH - 1 || W != OW + kw - 1 || chunk < 1)
    return ffi::Error::InvalidArgument("conv kernel grad: inconsistent shapes");
  const int64_t chunks = (N + chunk - 1) / chunk, part_size = KH * O * VP;
  std::vector<float> parts(static_cast<size_t>(chunks * part_size));
  const float* xp = x.typed_data();
  const float* gp = g.typed_data();
  bool ok = dispatch_vectors(V, [&](auto v) {
    parallel_chunks(pool, chunks, [&](int64_t c) {
      kernel_grad_chunk<decltype(v)::value>(xp, gp, c * chunk, std::min(N, (c + 1) * chunk), H, W,
                                            C, OH, OW, O, KH, kw, parts.data() + c * part_size);
    });
  });
  if (!ok) return ffi::Error::InvalidArgument("conv kernel grad: KW * C above 128");
  // Chunk order, whatever thread computed which chunk.
  float* out = dwt->typed_data();
  std::memcpy(out, parts.data(), sizeof(float) * part_size);
  for (int64_t c = 1; c < chunks; ++c) {
    const float* p = parts.data() + c * part_size;
    for (int64_t k = 0; k < part_size; ++k) out[k] += p[k];
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AdmmjaxConvInputGrad, InputGradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("kw"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AdmmjaxConvKernelGrad, KernelGradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("kw")
                                  .Attr<int64_t>("chunk"));
