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

// dst[o][t] = sum_k wts[o * nk + k] * srcs[k][t]  for o in [0, NO), t in [0, len):
// NO outputs at once, so each source vector loaded feeds NO multiply-adds; the NO x NV
// accumulators stay in registers over all taps.
template <typename T, int NO>
void weighted_sums(T* const* dst, int64_t len, const T* const* srcs, int64_t nk, const T* wts) {
  int64_t t = 0;
#if defined(OSEP_VECTORS)
  typedef T Vec __attribute__((vector_size(OSEP_VEC_BYTES)));
  constexpr int64_t L = OSEP_VEC_BYTES / sizeof(T), NV = NO >= 3 ? 2 : 4;  // <= 8 accumulators (AVX2 has 16 registers)
  for (; t + NV * L <= len; t += NV * L) {
    Vec acc[NO][NV] = {};
    for (int64_t k = 0; k < nk; ++k) {
      const T* s = srcs[k] + t;
      Vec xv[NV];
#pragma GCC unroll 8
      for (int64_t u = 0; u < NV; ++u) std::memcpy(&xv[u], s + u * L, sizeof(Vec));
#pragma GCC unroll 8
      for (int o = 0; o < NO; ++o) {
        const Vec wv = Vec{} + wts[o * nk + k];
#pragma GCC unroll 8
        for (int64_t u = 0; u < NV; ++u) acc[o][u] += wv * xv[u];
      }
    }
#pragma GCC unroll 8
    for (int o = 0; o < NO; ++o) std::memcpy(dst[o] + t, acc[o], sizeof(acc[o]));
  }
#endif
  for (; t < len; ++t) {
    for (int o = 0; o < NO; ++o) {
      T acc = 0;
      for (int64_t k = 0; k < nk; ++k) acc += wts[o * nk + k] * srcs[k][t];
      dst[o][t] = acc;
    }
  }
}

// the longest vector block weighted_sums takes at once: a loop run over a multiple of it has
// no scalar tail (the extra columns land in the dropped part of the wide plane)
template <typename T>
constexpr int64_t sum_block() {
#if defined(OSEP_VECTORS)
  return 4 * (OSEP_VEC_BYTES / static_cast<int64_t>(sizeof(T)));
#else
  return 1;
#endif
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
// a[k] += g[t] * srcs[k][t] for NB sums at once over whole vectors (t < whole): NB is a
// compile-time constant so the NB accumulators live in registers (a run-time count kept them
// in memory, a store and a load per multiply-add)
template <typename T, int NB>
void dots_block(const T* g, const T* const* srcs, int64_t whole, T* acc) {
  typedef T Vec __attribute__((vector_size(OSEP_VEC_BYTES)));
  constexpr int64_t L = OSEP_VEC_BYTES / sizeof(T);
  Vec a[NB];
  const T* s[NB];
  std::memcpy(a, acc, sizeof(a));
#pragma GCC unroll 8
  for (int k = 0; k < NB; ++k) s[k] = srcs[k];
  for (int64_t t = 0; t < whole; t += L) {
    Vec gv;
    std::memcpy(&gv, g + t, sizeof(Vec));
#pragma GCC unroll 8
    for (int k = 0; k < NB; ++k) {
      Vec xv;
      std::memcpy(&xv, s[k] + t, sizeof(Vec));
      a[k] += gv * xv;
    }
  }
  std::memcpy(acc, a, sizeof(a));
}
#endif

// acc[k] += g[t] * srcs[k][t] lane by lane (k in [0, nk), t in [0, len)): acc holds nk vectors,
// summed across lanes only once at the end (a per-call reduction costs more than the dot
// products of a small plane); up to 8 sums at once, each in its own register (independent
// chains). Elements past the last whole vector go to tail[k] (a scalar sum).
template <typename T>
void dots_accumulate(const T* g, const T* const* srcs, int64_t nk, int64_t len, T* acc, double* tail) {
  int64_t whole = 0;
#if defined(OSEP_VECTORS)
  constexpr int64_t L = OSEP_VEC_BYTES / sizeof(T);
  whole = len / L * L;
  for (int64_t k0 = 0; k0 < nk; k0 += 8) {
    const T* const* s = srcs + k0;
    T* a = acc + k0 * L;
    switch (std::min<int64_t>(8, nk - k0)) {
      case 8: dots_block<T, 8>(g, s, whole, a); break;
      case 7: dots_block<T, 7>(g, s, whole, a); break;
      case 6: dots_block<T, 6>(g, s, whole, a); break;
      case 5: dots_block<T, 5>(g, s, whole, a); break;
      case 4: dots_block<T, 4>(g, s, whole, a); break;
      case 3: dots_block<T, 3>(g, s, whole, a); break;
      case 2: dots_block<T, 2>(g, s, whole, a); break;
      default: dots_block<T, 1>(g, s, whole, a); break;
    }
  }
#endif
  for (int64_t k = 0; k < nk; ++k) {
    double s = 0;
    for (int64_t t = whole; t < len; ++t) s += g[t] * srcs[k][t];
    tail[k] += s;
  }
}

// the number of lanes dots_accumulate keeps per sum
template <typename T>
constexpr int64_t lanes() {
#if defined(OSEP_VECTORS)
  return OSEP_VEC_BYTES / static_cast<int64_t>(sizeof(T));
#else
  return 1;
#endif
}

// copy an h x w plane into a zeroed (h + top + bottom) x (w + left + right) buffer
template <typename T>
void pad_plane(const T* src, int64_t h, int64_t w, T* dst, int64_t top, int64_t left, int64_t width) {
  for (int64_t r = 0; r < h; ++r) std::copy(src + r * w, src + (r + 1) * w, dst + (r + top) * width + left);
}

template <typename T>
void forward_impl(const T* x, const T* weight, T* y, const Geometry& g) {
  const int64_t hs = g.h + 2 * g.ph, ws = g.w + 2 * g.pw;
  const int64_t plane = hs * ws + (g.kw - 1) * g.dw, wide = g.ho * ws, taps = g.kh * g.kw;
  const int64_t run = round_up(wide, sum_block<T>());  // the sources stay inside buf: it has run - wide more
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
  const int64_t run = round_up(wide, sum_block<T>());
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
    std::vector<T> buf(g.n_in * plane, T(0)), gwide(wide, T(0));  // columns >= wo stay 0
    const int64_t nw = g.n_out * g.n_in * taps;
    std::vector<T> acc(nw * lanes<T>());
    std::vector<double> tail(nw);
    std::vector<const T*> srcs(g.n_in * taps);
    for (int64_t i = 0; i < g.n_in; ++i)
      for (int64_t a = 0; a < g.kh; ++a)
        for (int64_t c = 0; c < g.kw; ++c) srcs[i * taps + a * g.kw + c] = buf.data() + i * plane + a * g.dh * ws + c * g.dw;
    for (int64_t grp = begin; grp < end; ++grp) {
      std::fill(acc.begin(), acc.end(), T(0));
      std::fill(tail.begin(), tail.end(), 0.0);
      for (int64_t b = 0; b < g.batch; ++b) {
        for (int64_t i = 0; i < g.n_in; ++i)
          pad_plane(x + (b * g.c_in + grp * g.n_in + i) * g.h * g.w, g.h, g.w, buf.data() + i * plane, g.ph, g.pw, ws);
        for (int64_t o = 0; o < g.n_out; ++o) {
          pad_plane(gy + (b * g.c_out + g.out_pos(grp * g.n_out + o)) * g.ho * g.wo, g.ho, g.wo, gwide.data(), 0, 0, ws);
          dots_accumulate(gwide.data(), srcs.data(), g.n_in * taps, wide, acc.data() + o * g.n_in * taps * lanes<T>(),
                          tail.data() + o * g.n_in * taps);
        }
      }
      T* out = gw + grp * g.n_out * g.n_in * taps;
      for (int64_t k = 0; k < nw; ++k) {
        double sum = tail[k];
        for (int64_t j = 0; j < lanes<T>(); ++j) sum += acc[k * lanes<T>() + j];
        out[k] = static_cast<T>(sum);
      }
    }
  });
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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &narrow_conv_forward, "stride-1 grouped conv2d, few channels per group (CPU)");
  m.def("backward", &narrow_conv_backward, "its gradients with respect to the input and/or the weight");
}
