// columns.cu: ePIE's modulus step fused with the column half of the 2-D transform
// (see common.cuh for the shared conventions). cuFFT transforms the rows of the exit waves (1-D, batched); one
// launch here then does, for every column: the forward column DFT, the modulus projection (with the error sums)
// and the inverse column DFT; cuFFT's inverse row transforms finish: four launches a position on the sequential
// chain instead of six. (Tried for DM's batched chunks too: slower than cuFFT's 2-D transforms there, not kept.)
//
// The column transform of length n = N1 * N2 is a four-step FFT inside one block: t = t1 + N1 t2,
// f = f2 + N2 f1; X[f] = sum_t1 w_n^(f2 t1) w_N1^(f1 t1) sum_t2 x[t] w_N2^(f2 t2). Each of C columns of a block has
// N1 threads; a thread's N2 (then N1) points are transformed in registers (radix-2, fully unrolled), the exchange
// goes through shared memory. tw[k] = exp(-2 pi i k / n), computed in float64 on the host.

#define COLS_PER_BLOCK 4

template <int R>
__device__ __forceinline__ void fft_reg(float2 (&v)[R], const float2* __restrict__ tw, int n, bool inverse) {
    // bit-reversal permutation (compile-time indices once unrolled)
#pragma unroll
    for (int i = 0; i < R; ++i) {
        int r = 0;
#pragma unroll
        for (int b = 1, x = i; b < R; b <<= 1, x >>= 1) r = (r << 1) | (x & 1);
        if (r > i) { float2 t = v[i]; v[i] = v[r]; v[r] = t; }
    }
#pragma unroll
    for (int len = 2; len <= R; len <<= 1) {
        int half = len >> 1, step = n / len;
#pragma unroll
        for (int i = 0; i < R; i += len) {
#pragma unroll
            for (int j = 0; j < half; ++j) {
                float2 w = tw[j * step];
                if (inverse) w.y = -w.y;
                float2 u = v[i + j], t = cmul(w, v[i + j + half]);
                v[i + j] = make_float2(u.x + t.x, u.y + t.y);
                v[i + j + half] = make_float2(u.x - t.x, u.y - t.y);
            }
        }
    }
}

__device__ __forceinline__ float2 tw_pow(const float2* __restrict__ tw, int e, int n, bool inverse) {
    float2 w = tw[e % n];
    if (inverse) w.y = -w.y;
    return w;
}

// The modulus step of one pattern fused with its column transforms, for the C columns of this block
// (blockDim.x = C * N1, C = COLS_PER_BLOCK): far holds the M modes' row-transformed waves (M, n, n), arow_amp the
// pattern's measured amplitudes (n, n), mrow its mask row (or null). mode 0: forward columns, exact modulus
// projection (scaled by inv_n2 for the unnormalised inverses), inverse columns, in place; the error terms are
// added to e_sq, e_a2. mode 1: forward columns only (tests).
template <int N1, int N2>
__device__ void cols_modulus(float2* __restrict__ far, const float* __restrict__ arow_amp,
                             const unsigned char* __restrict__ mrow, int M, float inv_n, float inv_n2,
                             const float2* __restrict__ tw, int mode, float& e_sq, float& e_a2) {
    constexpr int n = N1 * N2;
    constexpr int C = COLS_PER_BLOCK;
    extern __shared__ float2 sh[];  // [M][N1][N2][C]: Y (t1, f2), then X (f1, f2), then Z (t1, f2)
    int cl = threadIdx.x % C, q = threadIdx.x / C;
    int c = blockIdx.x * C + cl;
    long long n2 = (long long)n * n;
    // the measured amplitudes this thread's frequencies need (step 3), loaded early to hide their latency
    float a_f[N1];
    if (mode == 0 && q < N2) {
#pragma unroll
        for (int f1 = 0; f1 < N1; ++f1) a_f[f1] = arow_amp[(long long)(q + N2 * f1) * n + c];
    }
    // 1. inner DFTs over t2 (thread t1 = q < N1), twiddled, into shared
    for (int k = 0; k < M; ++k) {
        float2 v[N2];
#pragma unroll
        for (int t2 = 0; t2 < N2; ++t2) v[t2] = far[k * n2 + (long long)(q + N1 * t2) * n + c];
        fft_reg<N2>(v, tw, n, false);
#pragma unroll
        for (int f2 = 0; f2 < N2; ++f2)
            sh[((k * N1 + q) * N2 + f2) * C + cl] = cmul(tw_pow(tw, f2 * q, n, false), v[f2]);
    }
    __syncthreads();
    // 2. outer DFTs over t1 (thread f2 = q < N2): X_k[f2 + N2 f1] back into shared, modal intensity in s
    if (q < N2) {
        float s[N1];
#pragma unroll
        for (int f1 = 0; f1 < N1; ++f1) s[f1] = 0.f;
        for (int k = 0; k < M; ++k) {
            float2 v[N1];
#pragma unroll
            for (int t1 = 0; t1 < N1; ++t1) v[t1] = sh[((k * N1 + t1) * N2 + q) * C + cl];
            fft_reg<N1>(v, tw, n, false);
#pragma unroll
            for (int f1 = 0; f1 < N1; ++f1) {
                s[f1] += abs2(v[f1]);
                if (mode == 1) far[k * n2 + (long long)(q + N2 * f1) * n + c] = v[f1];
                else sh[((k * N1 + f1) * N2 + q) * C + cl] = v[f1];
            }
        }
        if (mode == 0) {
            // 3. modulus factor per frequency f = q + N2 f1, then the inverse outer DFTs (over f1)
#pragma unroll
            for (int f1 = 0; f1 < N1; ++f1) {
                bool valid = mrow == nullptr || mrow[(long long)(q + N2 * f1) * n + c];
                s[f1] = modulus_factor(sqrtf(s[f1]) * inv_n, a_f[f1], valid, e_sq, e_a2) * inv_n2;
            }
            for (int k = 0; k < M; ++k) {
                float2 v[N1];
#pragma unroll
                for (int f1 = 0; f1 < N1; ++f1) {
                    float2 x = sh[((k * N1 + f1) * N2 + q) * C + cl];
                    v[f1] = make_float2(x.x * s[f1], x.y * s[f1]);
                }
                fft_reg<N1>(v, tw, n, true);
#pragma unroll
                for (int t1 = 0; t1 < N1; ++t1)
                    sh[((k * N1 + t1) * N2 + q) * C + cl] = cmul(tw_pow(tw, q * t1, n, true), v[t1]);
            }
        }
    }
    if (mode == 0) {
        __syncthreads();
        // 4. inverse inner DFTs over f2 (thread t1 = q), back to the rows' spectra in place
        for (int k = 0; k < M; ++k) {
            float2 v[N2];
#pragma unroll
            for (int f2 = 0; f2 < N2; ++f2) v[f2] = sh[((k * N1 + q) * N2 + f2) * C + cl];
            fft_reg<N2>(v, tw, n, true);
#pragma unroll
            for (int t2 = 0; t2 < N2; ++t2) far[k * n2 + (long long)(q + N1 * t2) * n + c] = v[t2];
        }
    }
    __syncthreads();  // the caller may run again on the same shared memory (the next position)
}

// ePIE: one position (order[step]); per-block error partials and the fmax slot reset of epie_modulus.
template <int N1, int N2>
__device__ void epie_cols_impl(float2* __restrict__ far, const float* __restrict__ amp,
                               const unsigned char* __restrict__ mask, int has_mask, int mask_stride,
                               const int* __restrict__ order, int step, int M, float inv_n, float inv_n2,
                               double* errp, unsigned int* fmax, int reset_slot, int amp_from,
                               const float2* __restrict__ tw, int mode) {
    constexpr int n = N1 * N2;
    long long n2 = (long long)n * n;
    int j = order[step];
    long long arow = amp_from < 0 ? j : step - amp_from;
    if (reset_slot >= 0 && blockIdx.x == 0 && threadIdx.x < 2) fmax[2 * reset_slot + threadIdx.x] = 0u;
    float e_sq = 0.f, e_a2 = 0.f;
    cols_modulus<N1, N2>(far, amp + arow * n2, has_mask ? mask + (long long)j * mask_stride : nullptr, M, inv_n,
                         inv_n2, tw, mode, e_sq, e_a2);
    if (mode == 0) block_add2_partial(e_sq, e_a2, errp);
}

// One entry point for n = 64, 128, 256, 512 (N1 x N2 = 8x8, 16x8, 16x16, 32x16); grid n / C blocks of C * N1 threads,
// dynamic shared memory M * n * C float2.
extern "C" __global__ void epie_cols(float2* __restrict__ far, const float* __restrict__ amp,
                                     const unsigned char* __restrict__ mask, int has_mask, int mask_stride,
                                     const int* __restrict__ order, int step, int n, int M, float inv_n, float inv_n2,
                                     double* errp, unsigned int* fmax, int reset_slot, int amp_from,
                                     const float2* __restrict__ tw, int mode) {
    switch (n) {
        case 64: epie_cols_impl<8, 8>(far, amp, mask, has_mask, mask_stride, order, step, M, inv_n, inv_n2, errp,
                                      fmax, reset_slot, amp_from, tw, mode); break;
        case 128: epie_cols_impl<16, 8>(far, amp, mask, has_mask, mask_stride, order, step, M, inv_n, inv_n2, errp,
                                        fmax, reset_slot, amp_from, tw, mode); break;
        case 256: epie_cols_impl<16, 16>(far, amp, mask, has_mask, mask_stride, order, step, M, inv_n, inv_n2,
                                         errp, fmax, reset_slot, amp_from, tw, mode); break;
        case 512: epie_cols_impl<32, 16>(far, amp, mask, has_mask, mask_stride, order, step, M, inv_n, inv_n2,
                                         errp, fmax, reset_slot, amp_from, tw, mode); break;
        default: break;
    }
}
