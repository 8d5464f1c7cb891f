// Direct CPU kernels for a stride-1 grouped 2-D convolution with few channels per group.
//
// oneDNN (PyTorch's CPU convolution backend) runs depth-wise convolutions fast, but a
// grouped KxK convolution with 2..8 input channels per group (the first convolution of
// an osep plan) falls on a slow path, above all in its backward pass.  Here each
// (image, group) pair belongs to one thread: its few input planes are copied once into a
// zero-bordered buffer that stays in the L1/L2 cache, and every output plane is then one
// long loop over the "wide" plane (rows of the padded width, the extra columns dropped
// afterwards), so a KxK tap is a constant offset and the loop vectorises with no bounds
// checks.  Sums over taps stay in registers per block of outputs.
// The output may be written directly in channel-shuffled order (the shuffle that follows
// the first convolution of an osep plan), which saves that copy forward and backward.
// Layout: NCHW contiguous tensors, weight (C_out, C_in / groups, KH, KW).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

namespace {


struct Geometry {
  int64_t batch, c_in, h, w, c_out, ho, wo, n_in, n_out, groups, kh, kw, ph, pw, dh, dw;
  int64_t shuffle;  // > 1: output channel oc lives at its ShuffleNet-shuffled position
  int64_t out_pos(int64_t oc) const {
    if (shuffle <= 1) return oc;
    const int64_t per = c_out / shuffle;
    return (oc % per) * shuffle + oc / per;
  }
};

#if defined(__GNUC__)
// One vector register (GCC/Clang vector extension); the width follows the build target:
// 512-bit with AVX-512, else 256-bit (AVX2; elsewhere the compiler splits it into the
// registers it has).
#if defined(__AVX512F__)
#define OSEP_VEC_BYTES 64
#else
#define OSEP_VEC_BYTES 32
#endif
#define OSEP_VECTORS 1
#endif

#if defined(OSEP_VECTORS)
// dst[o][t .. t + NV vectors) = sum_k wts[o * nk + k] * srcs[k][..]: NO x NV accumulators in registers
template <typename T, int NO, int NV>
inline void sums_block(T* const* dst, int64_t t, const T* const* srcs, int64_t nk, const T* wts) {
  typedef T Vec __attribute__((vector_size(OSEP_VEC_BYTES)));
  constexpr int64_t L = OSEP_VEC_BYTES / sizeof(T);
  Vec acc[NO][NV] = {};
  for (int64_t k = 0; k < nk; ++k) {
    const T* s = srcs[k] + t;
    Vec xv[NV];
#pragma GCC unroll 8
    for (int u = 0; u < NV; ++u) std::memcpy(&xv[u], s + u * L, sizeof(Vec));
#pragma GCC unroll 8
    for (int o = 0; o < NO; ++o) {
      const Vec wv = Vec{} + wts[o * nk + k];
#pragma GCC unroll 8
      for (int u = 0; u < NV; ++u) acc[o][u] += wv * xv[u];
    }
  }
#pragma GCC unroll 8
  for (int o = 0; o < NO; ++o) std::memcpy(dst[o] + t, acc[o], sizeof(acc[o]));
}
#endif

// dst[o][t] = sum_k wts[o * nk + k] * srcs[k][t]  for o in [0, NO), t in [0, len):
// NO outputs at once, so each source vector loaded feeds NO multiply-adds; blocks of NV
// vectors, then single vectors, then (only for a len that is not a whole number of vectors) scalars.
template <typename T, int NO>
void weighted_sums(T* const* dst, int64_t len, const T* const* srcs, int64_t nk, const T* wts) {
  int64_t t = 0;
#if defined(OSEP_VECTORS)
  constexpr int64_t L = OSEP_VEC_BYTES / sizeof(T);
  constexpr int NV = NO >= 3 ? 2 : 4;  // <= 8 accumulators (AVX2 has 16 registers)
  for (; t + NV * L <= len; t += NV * L) sums_block<T, NO, NV>(dst, t, srcs, nk, wts);
  for (; t + L <= len; t += L) sums_block<T, NO, 1>(dst, t, srcs, nk, wts);
#endif
  for (; t < len; ++t) {
    for (int o = 0; o < NO; ++o) {
      T acc = 0;
      for (int64_t k = 0; k < nk; ++k) acc += wts[o * nk + k] * srcs[k][t];
      dst[o][t] = acc;
    }
  }
}

// the lanes of one vector: runs rounded up to a multiple have no scalar tail (the extra columns
// land in the dropped part of the wide plane), and the dot products keep this many partial sums
template <typename T>
constexpr int64_t lanes() {
#if defined(OSEP_VECTORS)
  return OSEP_VEC_BYTES / static_cast<int64_t>(sizeof(T));
#else
  return 1;
#endif
}

// the dot products' total: the partial sums of one vector's lanes plus the scalar tail
template <typename T>
double lane_total(const T* acc, double tail) {
  for (int64_t j = 0; j < lanes<T>(); ++j) tail += acc[j];
  return tail;
}

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// all n outputs (dst[o], weights wts[o * nk ..]) in blocks of 4, then one block of the 1-3 left
template <typename T>
void weighted_sums_all(T* const* dst, int64_t n, int64_t len, const T* const* srcs, int64_t nk, const T* wts) {
  int64_t o = 0;
  for (; o + 4 <= n; o += 4) weighted_sums<T, 4>(dst + o, len, srcs, nk, wts + o * nk);
  if (n - o == 3) weighted_sums<T, 3>(dst + o, len, srcs, nk, wts + o * nk);
  if (n - o == 2) weighted_sums<T, 2>(dst + o, len, srcs, nk, wts + o * nk);
  if (n - o == 1) weighted_sums<T, 1>(dst + o, len, srcs, nk, wts + o * nk);
}

#if defined(OSEP_VECTORS)
// acc[o][k] += g[o][t] * srcs[k][t] for NO outputs x NB sums at once (t < whole): each source
// vector loaded feeds NO multiply-adds, each gradient vector NB; output o's sums start at
// acc + o * acc_stride
template <typename T, int NO, int NB>
void dots_tile(const T* const* g, const T* const* srcs, int64_t whole, T* acc, int64_t acc_stride) {
  typedef T Vec __attribute__((vector_size(OSEP_VEC_BYTES)));
  constexpr int64_t L = OSEP_VEC_BYTES / sizeof(T);
  Vec a[NO][NB];
  const T* s[NB];
  const T* gp[NO];
#pragma GCC unroll 8
  for (int o = 0; o < NO; ++o) {
    gp[o] = g[o];
    std::memcpy(a[o], acc + o * acc_stride, sizeof(a[o]));
  }
#pragma GCC unroll 8
  for (int k = 0; k < NB; ++k) s[k] = srcs[k];
  for (int64_t t = 0; t < whole; t += L) {
    Vec gv[NO];
#pragma GCC unroll 8
    for (int o = 0; o < NO; ++o) std::memcpy(&gv[o], gp[o] + t, sizeof(Vec));
#pragma GCC unroll 8
    for (int k = 0; k < NB; ++k) {
      Vec xv;
      std::memcpy(&xv, s[k] + t, sizeof(Vec));
#pragma GCC unroll 8
      for (int o = 0; o < NO; ++o) a[o][k] += gv[o] * xv;
    }
  }
#pragma GCC unroll 8
  for (int o = 0; o < NO; ++o) std::memcpy(acc + o * acc_stride, a[o], sizeof(a[o]));
}

// NO outputs over all nk sums, KB sums at a time: NO x KB accumulators stay in registers
template <typename T, int NO>
void dots_tiles(const T* const* g, const T* const* srcs, int64_t nk, int64_t whole, T* acc, int64_t acc_stride) {
  constexpr int64_t L = OSEP_VEC_BYTES / sizeof(T);
  constexpr int KB = (OSEP_VEC_BYTES == 64 ? 16 : 8) / NO >= 8 ? 8 : 4;  // 16 (AVX-512) or 8 (AVX2) accumulators
  for (int64_t k0 = 0; k0 < nk; k0 += KB) {
    const T* const* s = srcs + k0;
    T* a = acc + k0 * L;
    switch (std::min<int64_t>(KB, nk - k0)) {
      case 8: dots_tile<T, NO, KB == 8 ? 8 : 1>(g, s, whole, a, acc_stride); break;
      case 7: dots_tile<T, NO, KB == 8 ? 7 : 1>(g, s, whole, a, acc_stride); break;
      case 6: dots_tile<T, NO, KB == 8 ? 6 : 1>(g, s, whole, a, acc_stride); break;
      case 5: dots_tile<T, NO, KB == 8 ? 5 : 1>(g, s, whole, a, acc_stride); break;
      case 4: dots_tile<T, NO, 4>(g, s, whole, a, acc_stride); break;
      case 3: dots_tile<T, NO, 3>(g, s, whole, a, acc_stride); break;
      case 2: dots_tile<T, NO, 2>(g, s, whole, a, acc_stride); break;
      default: dots_tile<T, NO, 1>(g, s, whole, a, acc_stride); break;
    }
  }
}
#endif

// acc[o][k] += g[o][t] * srcs[k][t] lane by lane, for n outputs g[0..n) that share the sources
// (k in [0, nk), t in [0, len)): output o's nk partial sums of one vector each at
// acc + o * nk * lanes, reduced across lanes only once at the end (lane_total; a per-call
// reduction costs more than the dot products of a small plane); elements past the last whole
// vector go to the scalar tails at tail + o * nk. Outputs go in tiles (4 with 32 vector
// registers, 2 with 16) so that each source vector loaded serves several outputs.
template <typename T>
void dots_accumulate_outputs(const T* const* g, int64_t n, const T* const* srcs, int64_t nk, int64_t len, T* acc,
                             double* tail) {
  int64_t whole = 0;
#if defined(OSEP_VECTORS)
  constexpr int64_t L = OSEP_VEC_BYTES / sizeof(T);
  constexpr int TILE = OSEP_VEC_BYTES == 64 ? 4 : 2;
  whole = len / L * L;
  const int64_t stride = nk * L;
  int64_t o = 0;
  for (; o + TILE <= n; o += TILE) dots_tiles<T, TILE>(g + o, srcs, nk, whole, acc + o * stride, stride);
  switch (n - o) {
    case 3: dots_tiles<T, 3>(g + o, srcs, nk, whole, acc + o * stride, stride); break;
    case 2: dots_tiles<T, 2>(g + o, srcs, nk, whole, acc + o * stride, stride); break;
    case 1: dots_tiles<T, 1>(g + o, srcs, nk, whole, acc + o * stride, stride); break;
    default: break;
  }
#endif
  for (int64_t o = 0; o < n; ++o)
    for (int64_t k = 0; k < nk; ++k) {
      double sum = 0;
      for (int64_t t = whole; t < len; ++t) sum += g[o][t] * srcs[k][t];
      tail[o * nk + k] += sum;
    }
}

// copy an h x w plane into a zeroed (h + top + bottom) x (w + left + right) buffer
template <typename T>
void pad_plane(const T* src, int64_t h, int64_t w, T* dst, int64_t top, int64_t left, int64_t width) {
  for (int64_t r = 0; r < h; ++r) std::copy(src + r * w, src + (r + 1) * w, dst + (r + top) * width + left);
}

// pad_plane of max(src, 0): a ReLU folded into the copy that a convolution makes anyway
template <typename T>
void pad_plane_relu(const T* src, int64_t h, int64_t w, T* dst, int64_t top, int64_t left, int64_t width) {
  for (int64_t r = 0; r < h; ++r) {
    T* d = dst + (r + top) * width + left;
    const T* s = src + r * w;
    for (int64_t c = 0; c < w; ++c) d[c] = s[c] < T(0) ? T(0) : s[c];  // NaN stays NaN, as in F.relu
  }
}

// copy rows x cols of a plane whose rows are src_stride apart into a zeroed buffer of row
// width `width`, at (top, left)
template <typename T>
void pad_rows(const T* src, int64_t rows, int64_t cols, int64_t src_stride, T* dst, int64_t top, int64_t left,
              int64_t width) {
  for (int64_t r = 0; r < rows; ++r) std::copy(src + r * src_stride, src + r * src_stride + cols, dst + (r + top) * width + left);
}

template <typename T>
void forward_impl(const T* x, const T* weight, T* y, const Geometry& g) {
  const int64_t hs = g.h + 2 * g.ph, ws = g.w + 2 * g.pw;
  const int64_t plane = hs * ws + (g.kw - 1) * g.dw, wide = g.ho * ws, taps = g.kh * g.kw;
  const int64_t run = round_up(wide, lanes<T>());  // the sources stay inside buf: it has run - wide more
  at::parallel_for(0, g.batch * g.groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(g.n_in * plane + run - wide, T(0)), out(g.n_out * run);
    std::vector<const T*> srcs(g.n_in * taps);
    std::vector<T*> dst(g.n_out);
    for (int64_t o = 0; o < g.n_out; ++o) dst[o] = out.data() + o * run;
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b = p / g.groups, grp = p % g.groups;
      for (int64_t i = 0; i < g.n_in; ++i) {
        pad_plane(x + ((b * g.c_in) + grp * g.n_in + i) * g.h * g.w, g.h, g.w, buf.data() + i * plane, g.ph, g.pw, ws);
        for (int64_t a = 0; a < g.kh; ++a)
          for (int64_t c = 0; c < g.kw; ++c)
            srcs[i * taps + a * g.kw + c] = buf.data() + i * plane + a * g.dh * ws + c * g.dw;
      }
      // the group's weights are (n_out, n_in * taps) rows: one row of weights per output
      weighted_sums_all(dst.data(), g.n_out, run, srcs.data(), g.n_in * taps, weight + grp * g.n_out * g.n_in * taps);
      for (int64_t o = 0; o < g.n_out; ++o) {
        T* yp = y + (b * g.c_out + g.out_pos(grp * g.n_out + o)) * g.ho * g.wo;
        for (int64_t r = 0; r < g.ho; ++r) std::copy(dst[o] + r * ws, dst[o] + r * ws + g.wo, yp + r * g.wo);
      }
    }
  });
}

template <typename T>
void input_grad_impl(const T* gy, const T* weight, T* gx, const Geometry& g) {
  // gx[h, w] = sum_{a, c} W[a, c] * gy_pad[h + (KH-1-a) dh, w + (KW-1-c) dw]
  const int64_t top = (g.kh - 1) * g.dh - g.ph, left = (g.kw - 1) * g.dw - g.pw;
  const int64_t hs = g.h + (g.kh - 1) * g.dh, ws = g.w + (g.kw - 1) * g.dw;
  const int64_t plane = hs * ws + (g.kw - 1) * g.dw, wide = g.h * ws, taps = g.kh * g.kw;
  const int64_t run = round_up(wide, lanes<T>());
  at::parallel_for(0, g.batch * g.groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(g.n_out * plane + run - wide, T(0)), out(g.n_in * run);
    std::vector<const T*> srcs(g.n_out * taps);
    std::vector<T> wts(g.n_in * g.n_out * taps);  // (n_in, n_out * taps): one row per input channel
    std::vector<T*> dst(g.n_in);
    for (int64_t i = 0; i < g.n_in; ++i) dst[i] = out.data() + i * run;
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b = p / g.groups, grp = p % g.groups;
      for (int64_t o = 0; o < g.n_out; ++o) {
        pad_plane(gy + (b * g.c_out + g.out_pos(grp * g.n_out + o)) * g.ho * g.wo, g.ho, g.wo, buf.data() + o * plane, top,
                  left, ws);
        for (int64_t a = 0; a < g.kh; ++a)
          for (int64_t c = 0; c < g.kw; ++c)
            srcs[o * taps + a * g.kw + c] = buf.data() + o * plane + (g.kh - 1 - a) * g.dh * ws + (g.kw - 1 - c) * g.dw;
      }
      for (int64_t i = 0; i < g.n_in; ++i)
        for (int64_t o = 0; o < g.n_out; ++o) {
          const T* wp = weight + ((grp * g.n_out + o) * g.n_in + i) * taps;
          std::copy(wp, wp + taps, wts.begin() + (i * g.n_out + o) * taps);
        }
      weighted_sums_all(dst.data(), g.n_in, run, srcs.data(), g.n_out * taps, wts.data());
      for (int64_t i = 0; i < g.n_in; ++i) {
        T* xp = gx + (b * g.c_in + grp * g.n_in + i) * g.h * g.w;
        for (int64_t r = 0; r < g.h; ++r) std::copy(dst[i] + r * ws, dst[i] + r * ws + g.w, xp + r * g.w);
      }
    }
  });
}

template <typename T>
void weight_grad_impl(const T* gy, const T* x, T* gw, const Geometry& g) {
  // gw[oc, i, a, c] = sum_{b, r, q} gy[b, oc, r, q] * x_pad[b, i, r + a dh, q + c dw]
  const int64_t hs = g.h + 2 * g.ph, ws = g.w + 2 * g.pw;
  const int64_t plane = hs * ws + (g.kw - 1) * g.dw, wide = g.ho * ws, taps = g.kh * g.kw;
  at::parallel_for(0, g.groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(g.n_in * plane, T(0)), gwide(g.n_out * wide, T(0));  // columns >= wo stay 0
    const int64_t nw = g.n_out * g.n_in * taps;
    std::vector<T> acc(nw * lanes<T>());
    std::vector<double> tail(nw);
    std::vector<const T*> srcs(g.n_in * taps), outs(g.n_out);
    for (int64_t o = 0; o < g.n_out; ++o) outs[o] = gwide.data() + o * wide;
    for (int64_t i = 0; i < g.n_in; ++i)
      for (int64_t a = 0; a < g.kh; ++a)
        for (int64_t c = 0; c < g.kw; ++c) srcs[i * taps + a * g.kw + c] = buf.data() + i * plane + a * g.dh * ws + c * g.dw;
    for (int64_t grp = begin; grp < end; ++grp) {
      std::fill(acc.begin(), acc.end(), T(0));
      std::fill(tail.begin(), tail.end(), 0.0);
      for (int64_t b = 0; b < g.batch; ++b) {
        for (int64_t i = 0; i < g.n_in; ++i)
          pad_plane(x + (b * g.c_in + grp * g.n_in + i) * g.h * g.w, g.h, g.w, buf.data() + i * plane, g.ph, g.pw, ws);
        for (int64_t o = 0; o < g.n_out; ++o)
          pad_plane(gy + (b * g.c_out + g.out_pos(grp * g.n_out + o)) * g.ho * g.wo, g.ho, g.wo, gwide.data() + o * wide,
                    0, 0, ws);
        dots_accumulate_outputs(outs.data(), g.n_out, srcs.data(), g.n_in * taps, wide, acc.data(), tail.data());
      }
      T* out = gw + grp * g.n_out * g.n_in * taps;
      for (int64_t k = 0; k < nw; ++k) out[k] = static_cast<T>(lane_total(acc.data() + k * lanes<T>(), tail[k]));
    }
  });
}


// ---------------------------------------------------------------------------------------
// A whole two-step osep layer in one pass per image: the grouped KxK convolution above
// (output in shuffled order), then the grouped 1x1 convolution that follows the shuffle.
// The intermediate (the KxK output) lives only in a per-thread buffer of one image's
// "wide" planes, never in memory: forward reads x and writes y, backward reads dy and x
// and writes dx (the intermediate is recomputed per image), where the two-call form also
// writes and reads the intermediate and its gradient.  Threads take images; the weight
// gradients are summed per thread and added up in a fixed order.
struct Pointwise {
  int64_t groups, n_in, n_out, c_out;  // the 1x1: c_mid = groups * n_in inputs
};

Pointwise make_pointwise(const at::Tensor& w1, const Geometry& g, int64_t groups1) {
  TORCH_CHECK(w1.dim() == 4 && w1.size(2) == 1 && w1.size(3) == 1, "osep_fused: the second weight must be 1x1");
  TORCH_CHECK(groups1 > 0 && w1.size(1) * groups1 == g.c_out && w1.size(0) % groups1 == 0,
              "osep_fused: the 1x1 weight does not match the first convolution's output channels");
  return Pointwise{groups1, w1.size(1), w1.size(0) / groups1, w1.size(0)};
}

// the layout both passes share: padded input planes of a group and wide intermediate planes
struct FusedLayout {
  int64_t ws, plane, wide, taps;
  explicit FusedLayout(const Geometry& g) {
    ws = g.w + 2 * g.pw;
    plane = (g.h + 2 * g.ph) * ws + (g.kw - 1) * g.dw;
    wide = g.ho * ws;
    taps = g.kh * g.kw;
  }
};

// the KxK convolution of one image into wide planes mid[c_mid][run] (shuffled order); the
// group's padded input planes are left in xbuf + grp * (n_in * plane + slack)
template <typename T>
void fused_first_step(const T* xb, const T* weight, const Geometry& g, const FusedLayout& f, int64_t run,
                      T* xbuf, int64_t group_stride, T* mid, std::vector<const T*>& srcs, std::vector<T*>& dst,
                      bool relu) {
  for (int64_t grp = 0; grp < g.groups; ++grp) {
    T* gb = xbuf + grp * group_stride;
    for (int64_t i = 0; i < g.n_in; ++i) {
      const T* xp = xb + (grp * g.n_in + i) * g.h * g.w;
      if (relu)
        pad_plane_relu(xp, g.h, g.w, gb + i * f.plane, g.ph, g.pw, f.ws);
      else
        pad_plane(xp, g.h, g.w, gb + i * f.plane, g.ph, g.pw, f.ws);
      for (int64_t a = 0; a < g.kh; ++a)
        for (int64_t c = 0; c < g.kw; ++c) srcs[i * f.taps + a * g.kw + c] = gb + i * f.plane + a * g.dh * f.ws + c * g.dw;
    }
    for (int64_t o = 0; o < g.n_out; ++o) dst[o] = mid + g.out_pos(grp * g.n_out + o) * run;
    weighted_sums_all(dst.data(), g.n_out, run, srcs.data(), g.n_in * f.taps, weight + grp * g.n_out * g.n_in * f.taps);
  }
}

// the valid ho x wo part of each of n wide planes (row width ws, planes `run` apart) as
// contiguous planes `run_c` apart: the 1x1 step then runs over no dropped columns
template <typename T>
void compact_planes(const T* wide, int64_t n, int64_t run, int64_t ws, int64_t ho, int64_t wo, T* dst, int64_t run_c) {
  for (int64_t c = 0; c < n; ++c)
    for (int64_t r = 0; r < ho; ++r) std::copy(wide + c * run + r * ws, wide + c * run + r * ws + wo, dst + c * run_c + r * wo);
}

// where the 1x1 step runs: on the KxK step's wide planes, or on compact ho x wo copies where
// the dropped columns would be more than 1/8 of the work (small planes)
struct PointwisePlanes {
  bool compact;
  int64_t run, stride, len;  // plane spacing, row width, elements up to the last valid one
};

template <typename T>
PointwisePlanes pointwise_planes(const Geometry& g, const FusedLayout& f, int64_t run_wide) {
  const int64_t run_c = round_up(g.ho * g.wo, lanes<T>());
  if (run_c * 8 < run_wide * 7) return {true, run_c, g.wo, g.ho * g.wo};
  return {false, run_wide, f.ws, f.wide};
}

template <typename T>
void fused_forward_impl(const T* x, const T* w3, const T* w1, T* y, const Geometry& g, const Pointwise& pw,
                        bool relu) {
  const FusedLayout f(g);
  const int64_t run = round_up(f.wide, lanes<T>()), pix = g.ho * g.wo;
  const PointwisePlanes pp = pointwise_planes<T>(g, f, run);
  const int64_t group_stride = g.n_in * f.plane + run - f.wide;
  at::parallel_for(0, g.batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> xbuf(g.groups * group_stride, T(0)), mid(g.c_out * run), midc(pp.compact ? g.c_out * pp.run : 0, T(0));
    std::vector<T> out(pw.n_out * pp.run);
    std::vector<const T*> srcs(std::max(g.n_in * f.taps, pw.n_in));
    std::vector<T*> dst(std::max(g.n_out, pw.n_out));
    const T* mid_p = pp.compact ? midc.data() : mid.data();
    for (int64_t b = begin; b < end; ++b) {
      fused_first_step(x + b * g.c_in * g.h * g.w, w3, g, f, run, xbuf.data(), group_stride, mid.data(), srcs, dst,
                       relu);
      if (pp.compact) compact_planes(mid.data(), g.c_out, run, f.ws, g.ho, g.wo, midc.data(), pp.run);
      for (int64_t grp = 0; grp < pw.groups; ++grp) {
        for (int64_t k = 0; k < pw.n_in; ++k) srcs[k] = mid_p + (grp * pw.n_in + k) * pp.run;
        for (int64_t o = 0; o < pw.n_out; ++o) dst[o] = out.data() + o * pp.run;
        weighted_sums_all(dst.data(), pw.n_out, pp.run, srcs.data(), pw.n_in, w1 + grp * pw.n_out * pw.n_in);
        for (int64_t o = 0; o < pw.n_out; ++o)
          compact_planes(dst[o], 1, pp.run, pp.stride, g.ho, g.wo, y + (b * pw.c_out + grp * pw.n_out + o) * pix, pix);
      }
    }
  });
}

template <typename T>
void fused_backward_impl(const T* gy, const T* x, const T* w3, const T* w1, T* gx, T* gw3, T* gw1, const Geometry& g,
                         const Pointwise& pw, bool relu) {
  const FusedLayout f(g);
  const int64_t run = round_up(f.wide, lanes<T>()), pix = g.ho * g.wo;
  const PointwisePlanes pp = pointwise_planes<T>(g, f, run);
  const int64_t group_stride = g.n_in * f.plane + run - f.wide;
  // the input gradient's padded planes: dmid rows at (top, left), row width wsi
  const int64_t top = (g.kh - 1) * g.dh - g.ph, left = (g.kw - 1) * g.dw - g.pw;
  const int64_t wsi = g.w + (g.kw - 1) * g.dw, hsi = g.h + (g.kh - 1) * g.dh;
  const int64_t plane_i = hsi * wsi + (g.kw - 1) * g.dw, wide_i = g.h * wsi;
  const int64_t run_i = round_up(wide_i, lanes<T>());
  const int64_t n3 = g.c_out * g.n_in * f.taps, n1 = pw.c_out * pw.n_in, L = lanes<T>();
  // the weights as the input-gradient sums read them: one row per input channel
  std::vector<T> w1t(pw.groups * pw.n_in * pw.n_out), w3t(g.groups * g.n_in * g.n_out * f.taps);
  for (int64_t grp = 0; grp < pw.groups; ++grp)
    for (int64_t o = 0; o < pw.n_out; ++o)
      for (int64_t k = 0; k < pw.n_in; ++k)
        w1t[(grp * pw.n_in + k) * pw.n_out + o] = w1[(grp * pw.n_out + o) * pw.n_in + k];
  for (int64_t grp = 0; grp < g.groups; ++grp)
    for (int64_t i = 0; i < g.n_in; ++i)
      for (int64_t o = 0; o < g.n_out; ++o)
        for (int64_t t = 0; t < f.taps; ++t)
          w3t[((grp * g.n_in + i) * g.n_out + o) * f.taps + t] = w3[((grp * g.n_out + o) * g.n_in + i) * f.taps + t];
  std::mutex merge;
  std::vector<std::pair<int64_t, std::vector<double>>> partial;  // (first image, the chunk's weight gradients)
  at::parallel_for(0, g.batch, 1, [&](int64_t begin, int64_t end) {
    // dy and dmid in the 1x1 step's planes (dropped columns 0), mid in them, dmid in wide planes
    std::vector<T> xbuf(g.groups * group_stride, T(0)), mid(g.c_out * run), midc(pp.compact ? g.c_out * pp.run : 0, T(0));
    std::vector<T> dyc(pw.c_out * pp.run, T(0)), dmidc(g.c_out * pp.run);
    std::vector<T> dmidw(gw3 && pp.compact ? g.c_out * run : 0, T(0));
    const T* mid_p = pp.compact ? midc.data() : mid.data();
    const T* dmid_w = pp.compact ? dmidw.data() : dmidc.data();
    std::vector<T> dpad(g.n_out * plane_i + run_i - wide_i, T(0)), dxw(g.n_in * run_i);
    std::vector<T> acc3(gw3 ? n3 * L : 0, T(0)), acc1(gw1 ? n1 * L : 0, T(0));
    std::vector<double> tail3(gw3 ? n3 : 0, 0.0), tail1(gw1 ? n1 : 0, 0.0);
    std::vector<const T*> srcs(std::max({g.n_in * f.taps, g.n_out * f.taps, pw.n_in, pw.n_out}));
    std::vector<T*> dst(std::max({g.n_out, g.n_in, pw.n_in, pw.n_out}));
    std::vector<const T*> outs(std::max(g.n_out, pw.n_out));  // the gradient planes of a group's outputs
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t c = 0; c < pw.c_out; ++c)
        pad_plane(gy + (b * pw.c_out + c) * pix, g.ho, g.wo, dyc.data() + c * pp.run, 0, 0, pp.stride);
      // the intermediate's gradient (0 in the dropped columns, as dy is)
      for (int64_t grp = 0; grp < pw.groups; ++grp) {
        for (int64_t o = 0; o < pw.n_out; ++o) srcs[o] = dyc.data() + (grp * pw.n_out + o) * pp.run;
        for (int64_t k = 0; k < pw.n_in; ++k) dst[k] = dmidc.data() + (grp * pw.n_in + k) * pp.run;
        weighted_sums_all(dst.data(), pw.n_in, pp.run, srcs.data(), pw.n_out, w1t.data() + grp * pw.n_in * pw.n_out);
      }
      fused_first_step(x + b * g.c_in * g.h * g.w, w3, g, f, run, xbuf.data(), group_stride, mid.data(), srcs, dst,
                       relu);
      if (gw1) {
        if (pp.compact) compact_planes(mid.data(), g.c_out, run, f.ws, g.ho, g.wo, midc.data(), pp.run);
        for (int64_t grp = 0; grp < pw.groups; ++grp) {
          for (int64_t k = 0; k < pw.n_in; ++k) srcs[k] = mid_p + (grp * pw.n_in + k) * pp.run;
          for (int64_t o = 0; o < pw.n_out; ++o) outs[o] = dyc.data() + (grp * pw.n_out + o) * pp.run;
          dots_accumulate_outputs(outs.data(), pw.n_out, srcs.data(), pw.n_in, pp.len,
                                  acc1.data() + grp * pw.n_out * pw.n_in * L, tail1.data() + grp * pw.n_out * pw.n_in);
        }
      }
      if (gw3 && pp.compact)
        for (int64_t c = 0; c < g.c_out; ++c)
          pad_plane(dmidc.data() + c * pp.run, g.ho, g.wo, dmidw.data() + c * run, 0, 0, f.ws);
      for (int64_t grp = 0; grp < g.groups; ++grp) {
        const T* gb = xbuf.data() + grp * group_stride;
        if (gw3) {
          for (int64_t i = 0; i < g.n_in; ++i)
            for (int64_t a = 0; a < g.kh; ++a)
              for (int64_t c = 0; c < g.kw; ++c) srcs[i * f.taps + a * g.kw + c] = gb + i * f.plane + a * g.dh * f.ws + c * g.dw;
          for (int64_t o = 0; o < g.n_out; ++o) outs[o] = dmid_w + g.out_pos(grp * g.n_out + o) * run;
          dots_accumulate_outputs(outs.data(), g.n_out, srcs.data(), g.n_in * f.taps, f.wide,
                                  acc3.data() + grp * g.n_out * g.n_in * f.taps * L,
                                  tail3.data() + grp * g.n_out * g.n_in * f.taps);
        }
        if (gx) {
          for (int64_t o = 0; o < g.n_out; ++o) {
            pad_rows(dmidc.data() + g.out_pos(grp * g.n_out + o) * pp.run, g.ho, g.wo, pp.stride, dpad.data() + o * plane_i, top,
                     left, wsi);
            for (int64_t a = 0; a < g.kh; ++a)
              for (int64_t c = 0; c < g.kw; ++c)
                srcs[o * f.taps + a * g.kw + c] = dpad.data() + o * plane_i + (g.kh - 1 - a) * g.dh * wsi + (g.kw - 1 - c) * g.dw;
          }
          for (int64_t i = 0; i < g.n_in; ++i) dst[i] = dxw.data() + i * run_i;
          weighted_sums_all(dst.data(), g.n_in, run_i, srcs.data(), g.n_out * f.taps,
                            w3t.data() + grp * g.n_in * g.n_out * f.taps);
          for (int64_t i = 0; i < g.n_in; ++i) {
            T* xp = gx + (b * g.c_in + grp * g.n_in + i) * g.h * g.w;
            if (!relu) {
              for (int64_t r = 0; r < g.h; ++r) std::copy(dst[i] + r * wsi, dst[i] + r * wsi + g.w, xp + r * g.w);
              continue;
            }
            // through the folded ReLU: the gradient passes where the input was > 0 (its padded
            // plane holds max(x, 0), so > 0 there is the same test)
            for (int64_t r = 0; r < g.h; ++r) {
              const T* in = gb + i * f.plane + (r + g.ph) * f.ws + g.pw;
              const T* grad = dst[i] + r * wsi;
              T* out = xp + r * g.w;
              for (int64_t c = 0; c < g.w; ++c) out[c] = in[c] > T(0) ? grad[c] : T(0);
            }
          }
        }
      }
    }
    std::vector<double> sums;
    for (int64_t k = 0; gw3 && k < n3; ++k) sums.push_back(lane_total(acc3.data() + k * L, tail3[k]));
    for (int64_t k = 0; gw1 && k < n1; ++k) sums.push_back(lane_total(acc1.data() + k * L, tail1[k]));
    std::lock_guard<std::mutex> hold(merge);
    partial.emplace_back(begin, std::move(sums));
  });
  std::sort(partial.begin(), partial.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  const int64_t total = n3 * (gw3 != nullptr) + n1 * (gw1 != nullptr);
  std::vector<double> sum(total, 0.0);
  for (const auto& part : partial)
    for (int64_t k = 0; k < total; ++k) sum[k] += part.second[k];
  int64_t at = 0;
  for (int64_t k = 0; gw3 && k < n3; ++k) gw3[k] = static_cast<T>(sum[at++]);
  for (int64_t k = 0; gw1 && k < n1; ++k) gw1[k] = static_cast<T>(sum[at++]);
}

Geometry make_geometry(const at::Tensor& x, const at::Tensor& weight, at::IntArrayRef padding,
                       at::IntArrayRef dilation, int64_t groups, int64_t shuffle) {
  TORCH_CHECK(x.dim() == 4 && weight.dim() == 4, "narrow_conv: 4-D input and weight expected");
  TORCH_CHECK(padding.size() == 2 && dilation.size() == 2, "narrow_conv: padding and dilation need 2 entries");
  Geometry g;
  g.batch = x.size(0);
  g.c_in = x.size(1);
  g.h = x.size(2);
  g.w = x.size(3);
  g.c_out = weight.size(0);
  g.n_in = weight.size(1);
  g.kh = weight.size(2);
  g.kw = weight.size(3);
  g.ph = padding[0];
  g.pw = padding[1];
  g.dh = dilation[0];
  g.dw = dilation[1];
  g.groups = groups;
  g.shuffle = shuffle;
  TORCH_CHECK(shuffle >= 1 && g.c_out % shuffle == 0, "narrow_conv: shuffle groups must divide the output channels");
  TORCH_CHECK(groups > 0 && g.c_in == groups * g.n_in && g.c_out % groups == 0,
              "narrow_conv: channels do not match groups");
  TORCH_CHECK(g.dh > 0 && g.dw > 0 && g.ph >= 0 && g.pw >= 0 && g.ph <= (g.kh - 1) * g.dh &&
                  g.pw <= (g.kw - 1) * g.dw, "narrow_conv: unsupported padding or dilation");
  g.n_out = g.c_out / groups;
  g.ho = g.h + 2 * g.ph - g.dh * (g.kh - 1);
  g.wo = g.w + 2 * g.pw - g.dw * (g.kw - 1);
  TORCH_CHECK(g.ho > 0 && g.wo > 0, "narrow_conv: output would be empty");
  return g;
}

void check_tensor(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), "narrow_conv: ", name, " must be a contiguous CPU tensor");
}

void check_grad(const at::Tensor& gy, const Geometry& g) {
  check_tensor(gy, "grad_output");
  TORCH_CHECK(gy.dim() == 4 && gy.size(0) == g.batch && gy.size(1) == g.c_out && gy.size(2) == g.ho &&
                  gy.size(3) == g.wo, "narrow_conv: grad_output has the wrong shape");
}

}  // namespace

at::Tensor narrow_conv_forward(const at::Tensor& x, const at::Tensor& weight, std::vector<int64_t> padding,
                               std::vector<int64_t> dilation, int64_t groups, int64_t shuffle) {
  check_tensor(x, "input");
  check_tensor(weight, "weight");
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(), "narrow_conv: input and weight dtypes differ");
  const Geometry g = make_geometry(x, weight, padding, dilation, groups, shuffle);
  auto y = at::empty({g.batch, g.c_out, g.ho, g.wo}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "narrow_conv_forward", [&] {
    forward_impl<scalar_t>(x.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), g);
  });
  return y;
}

// The requested gradients (an undefined tensor, None in Python, for the others).
std::vector<at::Tensor> narrow_conv_backward(const at::Tensor& gy, const at::Tensor& x, const at::Tensor& weight,
                                             std::vector<int64_t> padding, std::vector<int64_t> dilation,
                                             int64_t groups, int64_t shuffle, bool input_grad, bool weight_grad) {
  check_tensor(x, "input");
  check_tensor(weight, "weight");
  const Geometry g = make_geometry(x, weight, padding, dilation, groups, shuffle);
  check_grad(gy, g);
  TORCH_CHECK(gy.scalar_type() == x.scalar_type() && x.scalar_type() == weight.scalar_type(),
              "narrow_conv: grad_output, input and weight dtypes differ");
  at::Tensor gx, gw;
  AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "narrow_conv_backward", [&] {
    if (input_grad) {
      gx = at::empty({g.batch, g.c_in, g.h, g.w}, gy.options());
      input_grad_impl<scalar_t>(gy.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(), g);
    }
    if (weight_grad) {
      gw = at::empty(weight.sizes(), gy.options());
      weight_grad_impl<scalar_t>(gy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), gw.data_ptr<scalar_t>(), g);
    }
  });
  return {gx, gw};
}

// A two-step osep layer (grouped KxK, shuffle, grouped 1x1) in one call: y = conv1x1(shuffle(convKxK(x))),
// of max(x, 0) with relu_input (the ReLU before each osep convolution of a DARTS cell, folded in).
at::Tensor osep_fused_forward(const at::Tensor& x, const at::Tensor& w3, const at::Tensor& w1,
                              std::vector<int64_t> padding, std::vector<int64_t> dilation, int64_t groups,
                              int64_t groups1, bool relu_input) {
  check_tensor(x, "input");
  check_tensor(w3, "weight");
  check_tensor(w1, "1x1 weight");
  TORCH_CHECK(x.scalar_type() == w3.scalar_type() && x.scalar_type() == w1.scalar_type(), "osep_fused: dtypes differ");
  const Geometry g = make_geometry(x, w3, padding, dilation, groups, groups);
  const Pointwise pw = make_pointwise(w1, g, groups1);
  auto y = at::empty({g.batch, pw.c_out, g.ho, g.wo}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "osep_fused_forward", [&] {
    fused_forward_impl<scalar_t>(x.data_ptr<scalar_t>(), w3.data_ptr<scalar_t>(), w1.data_ptr<scalar_t>(),
                                 y.data_ptr<scalar_t>(), g, pw, relu_input);
  });
  return y;
}

// Its gradients with respect to the input, the KxK weight and the 1x1 weight (undefined where not asked).
std::vector<at::Tensor> osep_fused_backward(const at::Tensor& gy, const at::Tensor& x, const at::Tensor& w3,
                                            const at::Tensor& w1, std::vector<int64_t> padding,
                                            std::vector<int64_t> dilation, int64_t groups, int64_t groups1,
                                            bool relu_input, bool input_grad, bool weight_grad, bool weight1_grad) {
  check_tensor(x, "input");
  check_tensor(w3, "weight");
  check_tensor(w1, "1x1 weight");
  check_tensor(gy, "grad_output");
  const Geometry g = make_geometry(x, w3, padding, dilation, groups, groups);
  const Pointwise pw = make_pointwise(w1, g, groups1);
  TORCH_CHECK(gy.dim() == 4 && gy.size(0) == g.batch && gy.size(1) == pw.c_out && gy.size(2) == g.ho &&
                  gy.size(3) == g.wo, "osep_fused: grad_output has the wrong shape");
  TORCH_CHECK(gy.scalar_type() == x.scalar_type() && x.scalar_type() == w3.scalar_type() &&
                  x.scalar_type() == w1.scalar_type(), "osep_fused: dtypes differ");
  at::Tensor gx, gw3, gw1;
  if (input_grad) gx = at::empty(x.sizes(), x.options());
  if (weight_grad) gw3 = at::empty(w3.sizes(), x.options());
  if (weight1_grad) gw1 = at::empty(w1.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "osep_fused_backward", [&] {
    fused_backward_impl<scalar_t>(gy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), w3.data_ptr<scalar_t>(),
                                  w1.data_ptr<scalar_t>(), input_grad ? gx.data_ptr<scalar_t>() : nullptr,
                                  weight_grad ? gw3.data_ptr<scalar_t>() : nullptr,
                                  weight1_grad ? gw1.data_ptr<scalar_t>() : nullptr, g, pw, relu_input);
  });
  return {gx, gw3, gw1};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &narrow_conv_forward, "stride-1 grouped conv2d, few channels per group (CPU)");
  m.def("backward", &narrow_conv_backward, "its gradients with respect to the input and/or the weight");
  m.def("osep_forward", &osep_fused_forward, "grouped KxK, channel shuffle, grouped 1x1 in one pass (CPU)");
  m.def("osep_backward", &osep_fused_backward, "its gradients: input, KxK weight, 1x1 weight");
}
