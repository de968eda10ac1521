// PROTOTYPE, used by benchmarks/bench_fused_sepconv.py only; the package does not load it.
//
// One pass for ReLU -> depthwise KxK (dilation d, stride 1, "same" padding) -> pointwise 1x1 + bias, the
// eval-mode (BatchNorm folded) form of the cells' separable and dilated convolutions, on a channels_last
// fp32 tensor with 16 channels in and out. All 16 pointwise weight vectors stay in AVX-512 registers; the
// depthwise sum of a pixel is formed in one register and never written to memory. Forward only: a version
// the attacks can use needs the input gradient too (pointwise transposed, depthwise with the flipped
// kernel, the ReLU mask) in one pass, and other channel counts.
#include <torch/extension.h>
#include <immintrin.h>

// C = CO = 16: all pointwise weights in 16 registers, interior pixels without bounds checks.
template <int K>
static void fwd16(const float* __restrict x, const float* __restrict wdw, const float* __restrict wpw,
                  const float* __restrict bias, float* __restrict y, int64_t N, int64_t H, int64_t W, int dil, int pad) {
  const __m512 zero = _mm512_setzero_ps();
  __m512 wp[16];
  for (int c = 0; c < 16; ++c) wp[c] = _mm512_loadu_ps(wpw + 16 * c);
  __m512 wd[K * K];
  for (int t = 0; t < K * K; ++t) wd[t] = _mm512_loadu_ps(wdw + 16 * t);
  const __m512 bv = _mm512_loadu_ps(bias);
  alignas(64) float dbuf[16];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oh = 0; oh < H; ++oh) {
      const bool row_in = oh - pad >= 0 && oh - pad + (K - 1) * dil < H;
      for (int64_t ow = 0; ow < W; ++ow) {
        __m512 d = zero;
        if (row_in && ow - pad >= 0 && ow - pad + (K - 1) * dil < W) {
          const float* base = x + ((n * H + oh - pad) * W + ow - pad) * 16;
#pragma GCC unroll 25
          for (int kh = 0; kh < K; ++kh)
#pragma GCC unroll 5
            for (int kw = 0; kw < K; ++kw)
              d = _mm512_fmadd_ps(wd[kh * K + kw], _mm512_max_ps(_mm512_loadu_ps(base + (kh * dil * W + kw * dil) * 16), zero), d);
        } else {
          for (int kh = 0; kh < K; ++kh) {
            const int64_t ih = oh - pad + kh * dil;
            if (ih < 0 || ih >= H) continue;
            for (int kw = 0; kw < K; ++kw) {
              const int64_t iw = ow - pad + kw * dil;
              if (iw < 0 || iw >= W) continue;
              d = _mm512_fmadd_ps(wd[kh * K + kw], _mm512_max_ps(_mm512_loadu_ps(x + ((n * H + ih) * W + iw) * 16), zero), d);
            }
          }
        }
        _mm512_store_ps(dbuf, d);
        __m512 o = bv;
#pragma GCC unroll 16
        for (int c = 0; c < 16; ++c) o = _mm512_fmadd_ps(_mm512_set1_ps(dbuf[c]), wp[c], o);
        _mm512_storeu_ps(y + ((n * H + oh) * W + ow) * 16, o);
      }
    }
}

torch::Tensor fused_fwd(torch::Tensor x, torch::Tensor wdw, torch::Tensor wpw, torch::Tensor bias, int64_t K,
                        int64_t dil, int64_t pad, int64_t stride) {
  const auto N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(C == 16 && wpw.size(1) == 16 && stride == 1);
  auto y = torch::empty({N, 16, H, W}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (K == 3) fwd16<3>(x.data_ptr<float>(), wdw.data_ptr<float>(), wpw.data_ptr<float>(), bias.data_ptr<float>(), y.data_ptr<float>(), N, H, W, dil, pad);
  else fwd16<5>(x.data_ptr<float>(), wdw.data_ptr<float>(), wpw.data_ptr<float>(), bias.data_ptr<float>(), y.data_ptr<float>(), N, H, W, dil, pad);
  return y;
}
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("fused_fwd", &fused_fwd); }
