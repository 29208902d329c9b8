// A VALID, stride-1 NHWC/HWIO float32 convolution and both its gradients, and the
// gradient of 2x2 max pooling, as XLA FFI handlers for the CPU (AVX-512). Built and loaded by experiments/native_kernels.py; see
// its docstring for why and for the figures.
//
//   forward:         y[n, y, x, o]           = sum_{i,j,c} x[n, y + i, x + j, c] w[i, j, c, o]
//   kernel gradient: dw[i, j, c, o]         += sum_{n,y,x} x[n, y + i, x + j, c] g[n, y, x, o]
//   input gradient:  dx[n, y + i, x + j, c] += sum_o g[n, y, x, o] w[i, j, c, o]
//
// No patch matrix is built. The forward pass and the kernel gradient run their
// vectors along the output channels (o contiguous in NHWC and HWIO): register tiles
// of P output positions (forward) or T kernel taps (kernel gradient) times up to 4
// vectors of channels, each input value broadcast once per tile. The input gradient
// runs its vectors along the KW * C floats that one kernel row touches in a row of
// dx (contiguous in NHWC), tiles of P positions, so each output-gradient value is
// broadcast once and the overlap-add happens in registers.
//
// Work is split over images (forward, input gradient: each image written by one
// task) or fixed chunks of images (kernel gradient: one partial sum per chunk, then
// summed in chunk order), so results do not depend on the number of threads or on
// which thread ran which chunk (bit-reproducible run to run).

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

// f(std::integral_constant<int, v>) for a run-time v in 1..Max (the register-tile
// templates need v at compile time); false when v is out of range.
template <int Max, typename F>
bool dispatch_upto(int64_t v, F&& f) {
  if constexpr (Max >= 1) {
    if (v == Max) {
      f(std::integral_constant<int, Max>{});
      return true;
    }
    return dispatch_upto<Max - 1>(v, f);
  } else {
    return false;
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
  bool ok = dispatch_upto<8>(V, [&](auto v) {
    parallel_chunks(pool, N, [&](int64_t n) {
      input_grad_image<decltype(v)::value>(gp + n * g_image, wp, dp + n * x_image, OH, OW, O, KH,
                                           kw, C);
    });
  });
  if (!ok) return ffi::Error::InvalidArgument("conv input grad: KW * C above 128");
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------
// Kernels vectorized along the output channels instead: the forward pass and the
// kernel gradient (their vectors stay full where KW * C is short, LeNet-5's conv1: 5
// floats). wp / dwp: (KH * KW * C, OP) with row t = (i * KW + j) * C + c holding
// w[i, j, c, :] zero-padded to OP = 16 * ceil(O / 16) floats. Output channels go in
// blocks of at most 4 vectors (64 channels); the last vector of a block is masked.

// Positions per forward tile (or taps per kernel-gradient tile): P * OV accumulators,
// OV weight vectors and one broadcast in the 32 zmm registers, at most 12.
template <int OV>
constexpr int channel_tile() {
  return (31 - OV) / OV < 12 ? (31 - OV) / OV : 12;
}

// y[pos + p, o0 : o0 + 16 OV] for p < P: one output row's positions x .. x + P - 1.
template <int OV, int P>
inline void forward_tile(const float* x_pos, int64_t row, int64_t KH, int64_t L, int64_t C,
                         const float* wp_o, int64_t OP, float* y_pos, int64_t O,
                         __mmask16 last) {
  __m512 acc[P][OV];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < OV; ++v) acc[p][v] = _mm512_setzero_ps();
  for (int64_t i = 0; i < KH; ++i) {
    const float* xr = x_pos + i * row;
    const float* wr = wp_o + i * L * OP;
    for (int64_t l = 0; l < L; ++l) {
      __m512 wv[OV];
      for (int v = 0; v < OV; ++v) wv[v] = _mm512_loadu_ps(wr + l * OP + v * kLanes);
      for (int p = 0; p < P; ++p) {
        __m512 xb = _mm512_set1_ps(xr[p * C + l]);
        for (int v = 0; v < OV; ++v) acc[p][v] = _mm512_fmadd_ps(xb, wv[v], acc[p][v]);
      }
    }
  }
  for (int p = 0; p < P; ++p) {
    float* yp = y_pos + p * O;
    for (int v = 0; v < OV - 1; ++v) _mm512_storeu_ps(yp + v * kLanes, acc[p][v]);
    _mm512_mask_storeu_ps(yp + (OV - 1) * kLanes, last, acc[p][OV - 1]);
  }
}

template <int OV, int P>
inline void forward_tiles(int64_t np, const float* x_pos, int64_t row, int64_t KH, int64_t L,
                          int64_t C, const float* wp_o, int64_t OP, float* y_pos, int64_t O,
                          __mmask16 last) {
  if constexpr (P >= 1) {
    if (np == P) return forward_tile<OV, P>(x_pos, row, KH, L, C, wp_o, OP, y_pos, O, last);
    forward_tiles<OV, P - 1>(np, x_pos, row, KH, L, C, wp_o, OP, y_pos, O, last);
  }
}

// One image, output channels o0 .. o0 + channels - 1 (at most 16 OV of them).
template <int OV>
void forward_block(const float* x, const float* wp, float* y, int64_t W, int64_t C, int64_t OH,
                   int64_t OW, int64_t O, int64_t KH, int64_t KW, int64_t OP, int64_t o0,
                   int64_t channels) {
  constexpr int P = channel_tile<OV>();
  const int64_t L = KW * C;
  const __mmask16 last = tail_mask(channels);
  for (int64_t yy = 0; yy < OH; ++yy) {
    for (int64_t xx = 0; xx < OW; xx += P) {
      forward_tiles<OV, P>(std::min<int64_t>(P, OW - xx), x + (yy * W + xx) * C, W * C, KH, L,
                           C, wp + o0, OP, y + (yy * OW + xx) * O + o0, O, last);
    }
  }
}

constexpr int64_t kChannelBlock = 4 * kLanes;

// dwp rows t0 .. t0 + T - 1 (taps of kernel row i: l0 .. l0 + T - 1), channels
// o0 .. o0 + 16 OV, summed over images [n0, n1).
template <int OV, int T>
inline void kernel_grad_channel_tile(const float* x, const float* g, int64_t n0, int64_t n1,
                                     int64_t H, int64_t W, int64_t C, int64_t OH, int64_t OW,
                                     int64_t O, int64_t i, int64_t l0, int64_t o0, float* part_t,
                                     int64_t OP, __mmask16 last) {
  __m512 acc[T][OV];
  for (int t = 0; t < T; ++t)
    for (int v = 0; v < OV; ++v) acc[t][v] = _mm512_setzero_ps();
  for (int64_t n = n0; n < n1; ++n) {
    for (int64_t y = 0; y < OH; ++y) {
      const float* xrow = x + ((n * H + y + i) * W) * C + l0;
      const float* grow = g + ((n * OH + y) * OW) * O + o0;
      for (int64_t xx = 0; xx < OW; ++xx) {
        const float* a = xrow + xx * C;
        const float* gp = grow + xx * O;
        __m512 gv[OV];
        for (int v = 0; v < OV - 1; ++v) gv[v] = _mm512_loadu_ps(gp + v * kLanes);
        gv[OV - 1] = _mm512_maskz_loadu_ps(last, gp + (OV - 1) * kLanes);
        for (int t = 0; t < T; ++t) {
          __m512 xb = _mm512_set1_ps(a[t]);
          for (int v = 0; v < OV; ++v) acc[t][v] = _mm512_fmadd_ps(xb, gv[v], acc[t][v]);
        }
      }
    }
  }
  for (int t = 0; t < T; ++t)
    for (int v = 0; v < OV; ++v) _mm512_storeu_ps(part_t + t * OP + o0 + v * kLanes, acc[t][v]);
}

template <int OV, int T>
inline void kernel_grad_channel_tiles(int64_t nt, const float* x, const float* g, int64_t n0,
                                      int64_t n1, int64_t H, int64_t W, int64_t C, int64_t OH,
                                      int64_t OW, int64_t O, int64_t i, int64_t l0, int64_t o0,
                                      float* part_t, int64_t OP, __mmask16 last) {
  if constexpr (T >= 1) {
    if (nt == T)
      return kernel_grad_channel_tile<OV, T>(x, g, n0, n1, H, W, C, OH, OW, O, i, l0, o0, part_t,
                                             OP, last);
    kernel_grad_channel_tiles<OV, T - 1>(nt, x, g, n0, n1, H, W, C, OH, OW, O, i, l0, o0, part_t,
                                         OP, last);
  }
}

template <int OV>
void kernel_grad_channel_block(const float* x, const float* g, int64_t n0, int64_t n1, int64_t H,
                               int64_t W, int64_t C, int64_t OH, int64_t OW, int64_t O, int64_t KH,
                               int64_t KW, int64_t OP, int64_t o0, int64_t channels, float* part) {
  constexpr int T = channel_tile<OV>();
  const int64_t L = KW * C;
  const __mmask16 last = tail_mask(channels);
  for (int64_t i = 0; i < KH; ++i)
    for (int64_t l0 = 0; l0 < L; l0 += T)
      kernel_grad_channel_tiles<OV, T>(std::min<int64_t>(T, L - l0), x, g, n0, n1, H, W, C, OH, OW,
                                       O, i, l0, o0, part + (i * L + l0) * OP, OP, last);
}

// x: (N, H, W, C); wp: (KH * KW * C, OP); y: (N, H - KH + 1, W - KW + 1, O).
ffi::Error ForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> wp,
                       ffi::ResultBuffer<ffi::F32> y, int64_t kh, int64_t kw) {
  auto xd = x.dimensions(), wd = wp.dimensions(), yd = y->dimensions();
  if (xd.size() != 4 || wd.size() != 2 || yd.size() != 4)
    return ffi::Error::InvalidArgument("conv forward: expected x rank 4, wp rank 2, y rank 4");
  const int64_t N = xd[0], H = xd[1], W = xd[2], C = xd[3];
  const int64_t OH = yd[1], OW = yd[2], O = yd[3], OP = wd[1];
  if (yd[0] != N || OH != H - kh + 1 || OW != W - kw + 1 || wd[0] != kh * kw * C ||
      OP != (O + kLanes - 1) / kLanes * kLanes)
    return ffi::Error::InvalidArgument("conv forward: inconsistent shapes");
  const float* xp = x.typed_data();
  const float* w = wp.typed_data();
  float* out = y->typed_data();
  parallel_chunks(pool, N, [&](int64_t n) {
    for (int64_t o0 = 0; o0 < O; o0 += kChannelBlock) {
      const int64_t channels = std::min(kChannelBlock, O - o0);
      dispatch_upto<4>((channels + kLanes - 1) / kLanes, [&](auto ov) {
        forward_block<decltype(ov)::value>(xp + n * H * W * C, w, out + n * OH * OW * O, W, C,
                                           OH, OW, O, kh, kw, OP, o0, channels);
      });
    }
  });
  return ffi::Error::Success();
}

// x: (N, H, W, C); g: (N, OH, OW, O); dwp: (KH * KW * C, OP), see above.
ffi::Error KernelGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                                  ffi::Buffer<ffi::F32> g, ffi::ResultBuffer<ffi::F32> dwp,
                                  int64_t kh, int64_t kw, int64_t chunk) {
  auto xd = x.dimensions(), gd = g.dimensions(), wd = dwp->dimensions();
  if (xd.size() != 4 || gd.size() != 4 || wd.size() != 2)
    return ffi::Error::InvalidArgument("conv kernel grad: expected x rank 4, g rank 4, dwp rank 2");
  const int64_t N = xd[0], H = xd[1], W = xd[2], C = xd[3];
  const int64_t OH = gd[1], OW = gd[2], O = gd[3], OP = wd[1];
  if (gd[0] != N || OH != H - kh + 1 || OW != W - kw + 1 || wd[0] != kh * kw * C ||
      OP != (O + kLanes - 1) / kLanes * kLanes || chunk < 1)
    return ffi::Error::InvalidArgument("conv kernel grad: inconsistent shapes");
  const int64_t chunks = (N + chunk - 1) / chunk, part_size = wd[0] * OP;
  std::vector<float> parts(static_cast<size_t>(chunks * part_size));
  const float* xp = x.typed_data();
  const float* gp = g.typed_data();
  parallel_chunks(pool, chunks, [&](int64_t c) {
    for (int64_t o0 = 0; o0 < O; o0 += kChannelBlock) {
      const int64_t channels = std::min(kChannelBlock, O - o0);
      dispatch_upto<4>((channels + kLanes - 1) / kLanes, [&](auto ov) {
        kernel_grad_channel_block<decltype(ov)::value>(
            xp, gp, c * chunk, std::min(N, (c + 1) * chunk), H, W, C, OH, OW, O, kh, kw, OP, o0,
            channels, parts.data() + c * part_size);
      });
    }
  });
  float* out = dwp->typed_data();
  std::memcpy(out, parts.data(), sizeof(float) * part_size);
  for (int64_t c = 1; c < chunks; ++c) {
    const float* p = parts.data() + c * part_size;
    for (int64_t k = 0; k < part_size; ++k) out[k] += p[k];
  }
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------
// Gradient of 2x2 stride-2 max pooling (NHWC, even H and W) in one pass, the same
// arithmetic as experiments.models._max_pool_2x2_bwd: each input equal to its
// window's maximum gets g / (number of such inputs), the others 0. Vectors run along
// the channels, the last one masked.
void max_pool_grad_image(const float* x, const float* g, float* dx, int64_t H, int64_t W,
                         int64_t C) {
  const int64_t OH = H / 2, OW = W / 2, row = W * C, vectors = (C + kLanes - 1) / kLanes;
  const __mmask16 last = tail_mask(C);
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t yo = 0; yo < OH; ++yo) {
    for (int64_t xo = 0; xo < OW; ++xo) {
      const int64_t at = (2 * yo * W + 2 * xo) * C;
      const float* gp = g + (yo * OW + xo) * C;
      for (int64_t v = 0; v < vectors; ++v) {
        const __mmask16 m = v == vectors - 1 ? last : static_cast<__mmask16>(0xFFFF);
        const int64_t o = at + v * kLanes;
        const int64_t offsets[4] = {o, o + C, o + row, o + row + C};
        __m512 in[4];
        for (int k = 0; k < 4; ++k) in[k] = _mm512_maskz_loadu_ps(m, x + offsets[k]);
        const __m512 top = _mm512_max_ps(_mm512_max_ps(in[0], in[1]), _mm512_max_ps(in[2], in[3]));
        __mmask16 hit[4];
        __m512 ties = _mm512_setzero_ps();
        for (int k = 0; k < 4; ++k) {
          hit[k] = _mm512_cmp_ps_mask(in[k], top, _CMP_EQ_OQ);
          ties = _mm512_mask_add_ps(ties, hit[k], ties, one);
        }
        const __m512 share = _mm512_div_ps(_mm512_maskz_loadu_ps(m, gp + v * kLanes), ties);
        for (int k = 0; k < 4; ++k)
          _mm512_mask_storeu_ps(dx + offsets[k], m, _mm512_maskz_mov_ps(hit[k], share));
      }
    }
  }
}

// x: (N, H, W, C); g: (N, H / 2, W / 2, C); dx: (N, H, W, C).
ffi::Error MaxPoolGradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> g,
                           ffi::ResultBuffer<ffi::F32> dx) {
  auto xd = x.dimensions(), gd = g.dimensions(), dd = dx->dimensions();
  if (xd.size() != 4 || gd.size() != 4 || dd.size() != 4)
    return ffi::Error::InvalidArgument("max pool grad: expected x, g, dx of rank 4");
  const int64_t N = xd[0], H = xd[1], W = xd[2], C = xd[3];
  if (H % 2 || W % 2 || gd[0] != N || gd[1] != H / 2 || gd[2] != W / 2 || gd[3] != C ||
      dd[0] != N || dd[1] != H || dd[2] != W || dd[3] != C)
    return ffi::Error::InvalidArgument("max pool grad: inconsistent shapes");
  const float* xp = x.typed_data();
  const float* gp = g.typed_data();
  float* out = dx->typed_data();
  parallel_chunks(pool, N, [&](int64_t n) {
    max_pool_grad_image(xp + n * H * W * C, gp + n * (H / 2) * (W / 2) * C, out + n * H * W * C, H,
                        W, C);
  });
  return ffi::Error::Success();
}

// Every handler takes the intra-op pool and two float32 arrays and returns one.
auto bind_two_to_one() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AdmmjaxConvForward, ForwardImpl,
                              bind_two_to_one().Attr<int64_t>("kh").Attr<int64_t>("kw"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AdmmjaxConvKernelGrad, KernelGradImpl,
                              bind_two_to_one()
                                  .Attr<int64_t>("kh")
                                  .Attr<int64_t>("kw")
                                  .Attr<int64_t>("chunk"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AdmmjaxConvInputGrad, InputGradImpl,
                              bind_two_to_one().Attr<int64_t>("kw"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(AdmmjaxMaxPoolGrad, MaxPoolGradImpl, bind_two_to_one());
