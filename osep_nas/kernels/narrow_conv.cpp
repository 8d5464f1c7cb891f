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

// dst[t] = sum_k wts[k] * srcs[k][t]  for t in [0, len)
template <typename T>
void weighted_sum(T* __restrict dst, int64_t len, const std::vector<const T*>& srcs, const std::vector<T>& wts) {
  const int64_t nk = static_cast<int64_t>(srcs.size());
  int64_t t = 0;
#if defined(__GNUC__)
  // NV accumulators of one vector register each stay in registers over all taps (GCC/Clang
  // vector extension); the width follows the build target: 512-bit with AVX-512, else 256-bit
  // (AVX2; elsewhere the compiler splits it into the registers it has)
#if defined(__AVX512F__)
#define OSEP_VEC_BYTES 64
#else
#define OSEP_VEC_BYTES 32
#endif
  typedef T Vec __attribute__((vector_size(OSEP_VEC_BYTES)));
  constexpr int64_t L = OSEP_VEC_BYTES / sizeof(T), NV = 4;
  for (; t + NV * L <= len; t += NV * L) {
    Vec acc[NV] = {};
    for (int64_t k = 0; k < nk; ++k) {
      const T* s = srcs[k] + t;
      Vec wv;
      for (int64_t j = 0; j < L; ++j) wv[j] = wts[k];
      for (int64_t u = 0; u < NV; ++u) {
        Vec xv;
        std::memcpy(&xv, s + u * L, sizeof(Vec));
        acc[u] += wv * xv;
      }
    }
    std::memcpy(dst + t, acc, sizeof(acc));
  }
#endif
  for (; t < len; ++t) {
    T acc = 0;
    for (int64_t k = 0; k < nk; ++k) acc += wts[k] * srcs[k][t];
    dst[t] = acc;
  }
}

template <typename T>
T dot(const T* a, const T* b, int64_t len) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t t = 0; t < len; ++t) s += a[t] * b[t];
  return s;
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
  at::parallel_for(0, g.batch * g.groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(g.n_in * plane, T(0)), out(wide);
    std::vector<const T*> srcs(g.n_in * taps);
    std::vector<T> wts(g.n_in * taps);
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b = p / g.groups, grp = p % g.groups;
      for (int64_t i = 0; i < g.n_in; ++i) {
        pad_plane(x + ((b * g.c_in) + grp * g.n_in + i) * g.h * g.w, g.h, g.w, buf.data() + i * plane, g.ph, g.pw, ws);
        for (int64_t a = 0; a < g.kh; ++a)
          for (int64_t c = 0; c < g.kw; ++c)
            srcs[i * taps + a * g.kw + c] = buf.data() + i * plane + a * g.dh * ws + c * g.dw;
      }
      for (int64_t o = 0; o < g.n_out; ++o) {
        const int64_t oc = grp * g.n_out + o;
        std::copy(weight + oc * g.n_in * taps, weight + (oc + 1) * g.n_in * taps, wts.begin());
        weighted_sum(out.data(), wide, srcs, wts);
        T* yp = y + (b * g.c_out + g.out_pos(oc)) * g.ho * g.wo;
        for (int64_t r = 0; r < g.ho; ++r) std::copy(out.data() + r * ws, out.data() + r * ws + g.wo, yp + r * g.wo);
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
  at::parallel_for(0, g.batch * g.groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(g.n_out * plane, T(0)), out(wide);
    std::vector<const T*> srcs(g.n_out * taps);
    std::vector<T> wts(g.n_out * taps);
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b = p / g.groups, grp = p % g.groups;
      for (int64_t o = 0; o < g.n_out; ++o) {
        pad_plane(gy + (b * g.c_out + g.out_pos(grp * g.n_out + o)) * g.ho * g.wo, g.ho, g.wo, buf.data() + o * plane, top,
                  left, ws);
        for (int64_t a = 0; a < g.kh; ++a)
          for (int64_t c = 0; c < g.kw; ++c)
            srcs[o * taps + a * g.kw + c] = buf.data() + o * plane + (g.kh - 1 - a) * g.dh * ws + (g.kw - 1 - c) * g.dw;
      }
      for (int64_t i = 0; i < g.n_in; ++i) {
        for (int64_t o = 0; o < g.n_out; ++o) {
          const T* wp = weight + ((grp * g.n_out + o) * g.n_in + i) * taps;
          std::copy(wp, wp + taps, wts.begin() + o * taps);
        }
        weighted_sum(out.data(), wide, srcs, wts);
        T* xp = gx + (b * g.c_in + grp * g.n_in + i) * g.h * g.w;
        for (int64_t r = 0; r < g.h; ++r) std::copy(out.data() + r * ws, out.data() + r * ws + g.w, xp + r * g.w);
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
    std::vector<double> acc(g.n_out * g.n_in * taps);
    for (int64_t grp = begin; grp < end; ++grp) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t b = 0; b < g.batch; ++b) {
        for (int64_t i = 0; i < g.n_in; ++i)
          pad_plane(x + (b * g.c_in + grp * g.n_in + i) * g.h * g.w, g.h, g.w, buf.data() + i * plane, g.ph, g.pw, ws);
        for (int64_t o = 0; o < g.n_out; ++o) {
          pad_plane(gy + (b * g.c_out + g.out_pos(grp * g.n_out + o)) * g.ho * g.wo, g.ho, g.wo, gwide.data(), 0, 0, ws);
          for (int64_t i = 0; i < g.n_in; ++i)
            for (int64_t a = 0; a < g.kh; ++a)
              for (int64_t c = 0; c < g.kw; ++c)
                acc[(o * g.n_in + i) * taps + a * g.kw + c] +=
                    dot(gwide.data(), buf.data() + i * plane + a * g.dh * ws + c * g.dw, wide);
        }
      }
      T* out = gw + grp * g.n_out * g.n_in * taps;
      for (int64_t k = 0; k < g.n_out * g.n_in * taps; ++k) out[k] = static_cast<T>(acc[k]);
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
