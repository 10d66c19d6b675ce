// lsqml_fits.cu: the fast LSQML's per-position options (see common.cuh for the shared conventions):
// sub-pixel windows (the probe moved by each position's fraction through a Fourier phase ramp), position
// refinement (a damped Gauss-Newton step per position), the per-position flux fit and the Poisson noise model.
// Mirrors engines/lsqml.py step for step; the plain whole-pixel run keeps the kernels of lsqml.cu.
//
// The probe as it lights window jj, mode k, pixel p is  c_j * pr[jj * pstride + k * n2 + p]:  pr is the probe
// itself (pstride 0: whole-pixel windows) or the moved probes of the batch (pstride M n2), and c_j the
// position's amplitude factor (scale[j], or 1 when scale is null).
// Per-position double sums of a batch, LF_SLOTS a position (acc[jj * LF_SLOTS + q]):
//   0-4 the step dots of ls_dots; 5, 6 Re<dpsi/dr, chi>, Re<dpsi/dc, chi>; 7, 8 the position steps'
//   denominators (what the moduli see of a move, per axis); 9 Re<psi, chi>; 10 ||psi||^2;
//   11-16 the Poisson step's Newton sums (d1, d2) of its three steps.

#define LF_SLOTS 17
#define LF_NEWTON 3

// Adds the block's sums of v[0 .. K) to out[0 .. K) (one double atomic each, by thread 0's warp). K <= 8.
template <int K>
__device__ void lf_block_add(float (&v)[K], double* out) {
    __shared__ float sh[8][32];
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
#pragma unroll
    for (int q = 0; q < K; ++q) {
        float s = warp_sum(v[q]);
        if (lane == 0) sh[q][wid] = s;
    }
    __syncthreads();
    if (wid == 0) {
        int nw = (blockDim.x + 31) >> 5;
#pragma unroll
        for (int q = 0; q < K; ++q) {
            float s = lane < nw ? sh[q][lane] : 0.f;
            s = warp_sum(s);
            if (lane == 0) atomicAdd(out + q, (double)s);
        }
    }
    __syncthreads();
}

extern "C" {

__device__ __forceinline__ float lf_c(const float* scale, int j) { return scale ? scale[j] : 1.f; }

// numpy.fft.fftfreq(n)[i] * n: i for i <= (n - 1) / 2, else i - n.
__device__ __forceinline__ int lf_freq(int i, int n) { return i <= (n - 1) / 2 ? i : i - n; }

// exp(-2 pi i f k_i), k_i = fftfreq(n)[i]: one axis' factor of the ramp below (the batch's ramp table holds these).
__device__ __forceinline__ float2 lf_ramp_1d(float f, int i, int n) {
    float s, c;
    sincospif(-2.f * (f * ((float)lf_freq(i, n) / (float)n)), &s, &c);
    return make_float2(c, s);
}

// exp(-2 pi i (f_r k_r + f_c k_c)) for pixel (y, x): the ramp that moves an n x n array by (f_r, f_c) pixels
// when multiplied into its spectrum (physics/subpixel.shift_ramps: two 1-D ramps, one product).
__device__ __forceinline__ float2 lf_ramp(float fr, float fc, int y, int x, int n) {
    return cmul(lf_ramp_1d(fr, y, n), lf_ramp_1d(fc, x, n));
}

// The ramp of window jj at pixel (y, x) from the batch's ramp table tab (cnt, 2, n): row factors, column factors
// (written by lf_shift from the fractions at the batch's start): the same product as lf_ramp, no sincos.
__device__ __forceinline__ float2 lf_ramp_tab(const float2* __restrict__ tab, int jj, int y, int x, int n) {
    return cmul(tab[(long long)(2 * jj) * n + y], tab[(long long)(2 * jj + 1) * n + x]);
}

// The fraction (row, col) of position j: its sub-pixel position less its window corner.
__device__ __forceinline__ void lf_fraction(const double* pos, const int* rows, const int* cols, int j, float& fr,
                                            float& fc) {
    fr = (float)(pos[2 * j] - (double)rows[j]);
    fc = (float)(pos[2 * j + 1] - (double)cols[j]);
}

// d/d(row), d/d(col) of the window at object pixel w = (r + y) W + (c + x), o = obj[w] (numpy.gradient of the
// window: central differences, one-sided at its edges).
__device__ __forceinline__ void lf_gradients(const float2* __restrict__ obj, long long w, int W, int y, int x, int n,
                                             float2 o, float2& gr, float2& gc) {
    float2 lo, hi;
    float h;
    if (y == 0) { lo = o; hi = obj[w + W]; h = 1.f; }
    else if (y == n - 1) { lo = obj[w - W]; hi = o; h = 1.f; }
    else { lo = obj[w - W]; hi = obj[w + W]; h = 0.5f; }
    gr = make_float2((hi.x - lo.x) * h, (hi.y - lo.y) * h);
    if (x == 0) { lo = o; hi = obj[w + 1]; h = 1.f; }
    else if (x == n - 1) { lo = obj[w - 1]; hi = o; h = 1.f; }
    else { lo = obj[w - 1]; hi = obj[w + 1]; h = 0.5f; }
    gc = make_float2((hi.x - lo.x) * h, (hi.y - lo.y) * h);
}

// The position step's object gradients gr, gc at object pixel w weighed by the share of the light there that the
// other windows bring, 1 - own / illum[w] clipped to [0, 1] (physics/position_update.others_light_share), with
// own = sum_k |P_jk|^2 of the window there (without its flux factor) and illum (H, W) the summed probe intensity of
// every window (engines/base.object_illumination; lf_illumination). The fast ePIE and LSQML (wf_epie_gather,
// lf_gather).
__device__ __forceinline__ void lf_weigh_gradients(const float* __restrict__ illum, long long w, float own,
                                                   float2& gr, float2& gc) {
    float share = fminf(fmaxf(1.f - own / (illum[w] + 1e-30f), 0.f), 1.f);
    gr.x *= share; gr.y *= share; gc.x *= share; gc.y *= share;
}

// The light map's fixed point: a window pixel's intensity s (<= smax) adds round(s 2^40 / smax) to a 64-bit integer,
// so the sum over at most 2^23 windows cannot overflow and, integer addition being associative, the map is the same
// whatever order the atomics land in (float32 atomics made it differ in its last bits from run to run, which the
// position steps amplify: a run was no longer equal to itself streamed or with the other schedule). The rounding is
// at most N 2^-41 smax, about 4e-10 smax for 900 windows: far under float32's.
#define LF_ILLUM_ONE 1099511627776.0

// smax[0] = the largest sum_k |probe_k|^2 over the probe's n2 pixels (all Mt modes, not moved): the scale of
// lf_illumination's fixed point. One block of a power-of-two blockDim.x <= 1024.
__global__ void lf_probe_intensity_max(const float2* __restrict__ probe, int n2, int Mt, float* __restrict__ smax) {
    __shared__ float best[1024];
    float m = 0.f;
    for (int p = threadIdx.x; p < n2; p += blockDim.x) {
        float s = 0.f;
        for (int k = 0; k < Mt; ++k) s += abs2(probe[(long long)k * n2 + p]);
        m = fmaxf(m, s);
    }
    best[threadIdx.x] = m;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if (threadIdx.x < h) best[threadIdx.x] = fmaxf(best[threadIdx.x], best[threadIdx.x + h]);
        __syncthreads();
    }
    if (threadIdx.x == 0) smax[0] = best[0];
}

// acc (H, W) += sum_k |probe_k|^2 (all Mt modes of the probe, not moved) over the window of every position j at its
// corner (rows[j], cols[j]), j < N, in lf_probe_intensity_max's fixed point (LF_ILLUM_ONE; acc is zero before:
// lf_illumination_map leaves it so): engines/base.object_illumination at the refining epoch's start, the map lf_gather
// weighs the position steps' gradients by.
__global__ void lf_illumination(const float2* __restrict__ probe, const int* __restrict__ rows,
                                const int* __restrict__ cols, int N, int n, int W, int Mt,
                                const float* __restrict__ smax, unsigned long long* __restrict__ acc) {
    int n2 = n * n;
    double q = smax[0] > 0.f ? LF_ILLUM_ONE / (double)smax[0] : 0.0;
    for (int j = blockIdx.y; j < N; j += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        float s = 0.f;
        for (int k = 0; k < Mt; ++k) s += abs2(probe[k * n2 + p]);
        int y = row_of(p, n), x = p - y * n;
        atomicAdd(acc + (long long)(rows[j] + y) * W + (cols[j] + x), (unsigned long long)__double2ll_rn(s * q));
    }
}

// illum[w] = acc[w] smax / 2^40 (float32) over the ``size`` object pixels, and acc[w] = 0 for the next epoch's map.
__global__ void lf_illumination_map(unsigned long long* __restrict__ acc, const float* __restrict__ smax,
                                    long long size, float* __restrict__ illum) {
    double unit = (double)smax[0] / LF_ILLUM_ONE;
    for (long long w = (long long)blockIdx.x * blockDim.x + threadIdx.x; w < size;
         w += (long long)gridDim.x * blockDim.x) {
        illum[w] = (float)((double)acc[w] * unit);
        acc[w] = 0ull;
    }
}

// pj[jj, k, p] = pspec[k, p] ramp_j(p) / n2: the spectra of the batch's moved probes (an unnormalised inverse
// transform then gives the moved probes themselves). With ``tab`` (lf_shift_tab, the fused schedule) also the
// batch's ramp table (cnt, 2, n): the row factors of window jj at tab[2 jj], its column factors at tab[2 jj + 1].
__device__ __forceinline__ void lf_shift_impl(const float2* __restrict__ pspec, const double* __restrict__ pos,
                                              const int* __restrict__ rows, const int* __restrict__ cols,
                                              const int* __restrict__ order, int b0, int cnt, int n, int M,
                                              float inv_n2, float2* __restrict__ pj, float2* __restrict__ tab) {
    int n2 = n * n;
    for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y) {
        int j = order[b0 + jj];
        float fr, fc;
        lf_fraction(pos, rows, cols, j, fr, fc);
        for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
            int y = row_of(p, n), x = p - y * n;
            float2 rr = lf_ramp_1d(fr, y, n), rc = lf_ramp_1d(fc, x, n);
            if (tab && x == 0) tab[(long long)(2 * jj) * n + y] = rr;
            if (tab && y == 0) tab[(long long)(2 * jj + 1) * n + x] = rc;
            float2 r = cmul(rr, rc);
            r.x *= inv_n2; r.y *= inv_n2;
            for (int k = 0; k < M; ++k) pj[((long long)jj * M + k) * n2 + p] = cmul(pspec[k * n2 + p], r);
        }
    }
}

__global__ void lf_shift(const float2* __restrict__ pspec, const double* __restrict__ pos,
                         const int* __restrict__ rows, const int* __restrict__ cols, const int* __restrict__ order,
                         int b0, int cnt, int n, int M, float inv_n2, float2* __restrict__ pj) {
    lf_shift_impl(pspec, pos, rows, cols, order, b0, cnt, n, M, inv_n2, pj, nullptr);
}

__global__ void lf_shift_tab(const float2* __restrict__ pspec, const double* __restrict__ pos,
                             const int* __restrict__ rows, const int* __restrict__ cols,
                             const int* __restrict__ order, int b0, int cnt, int n, int M, float inv_n2,
                             float2* __restrict__ pj, float2* __restrict__ tab) {
    lf_shift_impl(pspec, pos, rows, cols, order, b0, cnt, n, M, inv_n2, pj, tab);
}

// psi[jj, k] = c_j P_jk O_j; with ``refine`` also c_j P_jk dO_j/drow and c_j P_jk dO_j/dcol (numpy.gradient of the
// window: central differences, one-sided at its edges) at psi + plane and psi + 2 plane (plane = cnt M n2), the
// gradients weighed by lf_weigh_gradients where ``illum`` (H, W) is given (lf_illumination's map; null: not
// weighed). Resets the batch's sums (as ls_gather): num_o, den_o on its windows, acc[0 .. LF_SLOTS cnt),
// slots[0 .. 3].
__global__ void lf_gather(const float2* __restrict__ obj, const float2* __restrict__ pr, long long pstride,
                          const float* __restrict__ scale, const int* __restrict__ rows,
                          const int* __restrict__ cols, const int* __restrict__ order, int b0, int cnt, int n, int W,
                          int M, int refine, long long plane, float2* __restrict__ psi, float2* __restrict__ num_o,
                          float* __restrict__ den_o, double* __restrict__ acc, unsigned int* __restrict__ slots,
                          const float* __restrict__ illum) {
    int n2 = n * n;
    int tid = (blockIdx.y * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x;
    int threads = gridDim.x * gridDim.y * blockDim.x;
    for (int i = tid; i < LF_SLOTS * cnt; i += threads) acc[i] = 0.0;
    if (tid < 4) slots[tid] = 0u;
    for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int j = order[b0 + jj];
        int y = row_of(p, n), x = p - y * n;
        long long w = (long long)(rows[j] + y) * W + (cols[j] + x);
        float2 o = obj[w];
        num_o[w] = make_float2(0.f, 0.f);
        den_o[w] = 0.f;
        float c = lf_c(scale, j);
        float2 gr = make_float2(0.f, 0.f), gc = gr;
        if (refine) {
            lf_gradients(obj, w, W, y, x, n, o, gr, gc);
            if (illum) {
                float own = 0.f;  // the window's own light, without its flux factor
                for (int k = 0; k < M; ++k) own += abs2(pr[(long long)jj * pstride + (long long)k * n2 + p]);
                lf_weigh_gradients(illum, w, own, gr, gc);
            }
        }
        for (int k = 0; k < M; ++k) {
            float2 pk = pr[(long long)jj * pstride + (long long)k * n2 + p];
            pk.x *= c; pk.y *= c;
            long long i = ((long long)jj * M + k) * n2 + p;
            psi[i] = cmul(pk, o);
            if (refine) {
                psi[plane + i] = cmul(pk, gr);
                psi[2 * plane + i] = cmul(pk, gc);
            }
        }
    }
}

// The far-field step of the batch, one block row per position (blockIdx.y = jj), X = the unnormalised spectra:
//   error sums into err; ||psi||^2 into slot 10; with ``refine`` the denominators of the position steps (7, 8):
//   sum (Re sum_k conj(Psi_k) D_k / |Psi|)^2 per axis, D the orthonormal spectra of the moves at far + plane, 2 plane.
// noise 0 (Gaussian): g = A / |Psi| - 1 (0 where invalid); writes X g / n2 (for the unnormalised inverse) and adds
//   Re<psi, chi> = sum |Psi|^2 g (slot 9) and Re<dpsi, chi> = Re sum conj(D) Psi g (slots 5, 6).
// noise 1 (Poisson): writes the model intensities |Psi|^2 to mi (cnt, n2) for lf_poisson_newton / lf_poisson_apply.
__global__ void lf_modulus(float2* __restrict__ far, const float* __restrict__ amp,
                           const unsigned char* __restrict__ mask, int has_mask, int mask_stride,
                           const int* __restrict__ order, int b0, int n2, int M, float inv_n, float inv_n2,
                           double* err, int amp_from, int refine, long long plane, int noise,
                           float* __restrict__ mi, double* __restrict__ acc) {
    int jj = blockIdx.y;
    int j = order[b0 + jj];
    float e_sq = 0.f, e_a2 = 0.f, psi2 = 0.f, rpc = 0.f, num_r = 0.f, num_c = 0.f, den_r = 0.f, den_c = 0.f;
    long long arow = amp_from < 0 ? j : b0 + jj - amp_from;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        long long base = (long long)jj * M * n2 + p;
        float s = 0.f;
        for (int k = 0; k < M; ++k) s += abs2(far[base + (long long)k * n2]);
        float model = sqrtf(s) * inv_n;
        float a = amp[arow * n2 + p];
        bool valid = !has_mask || mask[(long long)j * mask_stride + p];
        float g = modulus_factor(model, a, valid, e_sq, e_a2) - 1.f;
        psi2 += s;
        float cr = 0.f, cc = 0.f, nr = 0.f, nc = 0.f;
        if (refine) {
            for (int k = 0; k < M; ++k) {
                float2 v = far[base + (long long)k * n2];
                float2 dr = far[plane + base + (long long)k * n2];
                float2 dc = far[2 * plane + base + (long long)k * n2];
                cr += cmulc(v, dr).x;
                cc += cmulc(v, dc).x;
            }
            nr = cr; nc = cc;  // Re sum conj(D) X = Re sum conj(X) D
            float inv_amp = model > 0.f ? inv_n2 / model : 0.f;
            cr *= inv_amp; cc *= inv_amp;
            den_r += cr * cr;
            den_c += cc * cc;
        }
        if (noise == 0) {
            rpc += s * g;
            num_r += nr * g;
            num_c += nc * g;
            float f = g * inv_n2;
            for (int k = 0; k < M; ++k) {
                float2 v = far[base + (long long)k * n2];
                far[base + (long long)k * n2] = make_float2(v.x * f, v.y * f);
            }
        } else {
            mi[(long long)jj * n2 + p] = model * model;
        }
    }
    block_add2(e_sq, e_a2, err);
    float v[6] = {num_r * inv_n2, num_c * inv_n2, den_r, den_c, rpc * inv_n2, psi2 * inv_n2};
    lf_block_add<6>(v, acc + (long long)jj * LF_SLOTS + 5);
}

// The Poisson step alpha_j after ``steps`` Newton steps from 1 (engines/lsqml._poisson_step), from the sums in
// acc (slots 11 + 2 t, 12 + 2 t of step t).
__device__ __forceinline__ float lf_alpha(const double* a, int steps) {
    float alpha = 1.f;
    for (int t = 0; t < steps; ++t) {
        float d1 = (float)a[11 + 2 * t], d2 = (float)a[12 + 2 * t];
        alpha = fminf(fmaxf(alpha - d1 / fmaxf(d2, 1e-12f), 0.f), 1.f);
    }
    return alpha;
}

// g = I / (|Psi|^2 + 1e-12) - 1 (0 where invalid): the Poisson direction.
__device__ __forceinline__ float lf_poisson_g(float model_int, float a, bool valid) {
    return valid ? (a * a) / (model_int + 1e-12f) - 1.f : 0.f;
}

// Newton step ``t`` of the Poisson step: d1, d2 of sum |Psi|^2 (1 + a g)^2 - I log(|Psi|^2 (1 + a g)^2) at the
// current alpha into slots 11 + 2 t, 12 + 2 t (one block row per position).
__global__ void lf_poisson_newton(const float* __restrict__ mi, const float* __restrict__ amp,
                                  const unsigned char* __restrict__ mask, int has_mask, int mask_stride,
                                  const int* __restrict__ order, int b0, int n2, int amp_from, int t,
                                  double* __restrict__ acc) {
    int jj = blockIdx.y;
    int j = order[b0 + jj];
    double* a_j = acc + (long long)jj * LF_SLOTS;
    float alpha = lf_alpha(a_j, t);
    long long arow = amp_from < 0 ? j : b0 + jj - amp_from;
    float d1 = 0.f, d2 = 0.f;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        float m = mi[(long long)jj * n2 + p];
        float a = amp[arow * n2 + p];
        float inten = a * a;
        bool valid = !has_mask || mask[(long long)j * mask_stride + p];
        float g = lf_poisson_g(m, a, valid);
        float s = fmaxf(1.f + alpha * g, 1e-3f);
        d1 += 2.f * m * s * g - 2.f * inten * g / s;
        d2 += 2.f * m * g * g + 2.f * inten * g * g / (s * s);
    }
    float v[2] = {d1, d2};
    lf_block_add<2>(v, a_j + 11 + 2 * t);
}

// The Poisson far-field step: X alpha g / n2 written in place, Re<psi, chi> (slot 9) and Re<dpsi, chi> (5, 6).
__global__ void lf_poisson_apply(float2* __restrict__ far, const float* __restrict__ mi,
                                 const float* __restrict__ amp, const unsigned char* __restrict__ mask,
                                 int has_mask, int mask_stride, const int* __restrict__ order, int b0, int n2, int M,
                                 float inv_n2, int amp_from, int refine, long long plane, double* __restrict__ acc) {
    int jj = blockIdx.y;
    int j = order[b0 + jj];
    double* a_j = acc + (long long)jj * LF_SLOTS;
    float alpha = lf_alpha(a_j, LF_NEWTON);
    long long arow = amp_from < 0 ? j : b0 + jj - amp_from;
    float rpc = 0.f, num_r = 0.f, num_c = 0.f;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        long long base = (long long)jj * M * n2 + p;
        float a = amp[arow * n2 + p];
        bool valid = !has_mask || mask[(long long)j * mask_stride + p];
        float g = alpha * lf_poisson_g(mi[(long long)jj * n2 + p], a, valid);
        float s = 0.f;
        for (int k = 0; k < M; ++k) {
            long long i = base + (long long)k * n2;
            float2 v = far[i];
            s += abs2(v);
            if (refine) {
                num_r += g * cmulc(far[plane + i], v).x;
                num_c += g * cmulc(far[2 * plane + i], v).x;
            }
            far[i] = make_float2(v.x * g * inv_n2, v.y * g * inv_n2);
        }
        rpc += s * g;
    }
    float v[2] = {num_r * inv_n2, num_c * inv_n2};
    lf_block_add<2>(v, a_j + 5);
    float r[1] = {rpc * inv_n2};
    lf_block_add<1>(r, a_j + 9);
}

// num_o[w] += sum_k conj(c P_jk) chi_jk, den_o[w] += sum_k |c P_jk|^2; with ``write_g`` also the probe gradient of
// each window g[jj, k] = conj(c_j O_j) chi_jk (its spectrum is moved back into the probe's frame later).
__global__ void lf_scatter(const float2* __restrict__ chi, const float2* __restrict__ pr, long long pstride,
                           const float* __restrict__ scale, const float2* __restrict__ obj,
                           const int* __restrict__ rows, const int* __restrict__ cols, const int* __restrict__ order,
                           int b0, int cnt, int n, int W, int M, int write_g, float2* __restrict__ g,
                           float* __restrict__ num, float* __restrict__ den) {
    int n2 = n * n;
    for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int j = order[b0 + jj];
        int y = row_of(p, n), x = p - y * n;
        long long w = (long long)(rows[j] + y) * W + (cols[j] + x);
        float c = lf_c(scale, j);
        float2 lit = make_float2(0.f, 0.f);
        if (write_g) { float2 o = obj[w]; lit = make_float2(c * o.x, c * o.y); }
        float2 acc = make_float2(0.f, 0.f);
        float pi = 0.f;
        for (int k = 0; k < M; ++k) {
            float2 pk = pr[(long long)jj * pstride + (long long)k * n2 + p];
            pk.x *= c; pk.y *= c;
            long long i = ((long long)jj * M + k) * n2 + p;
            float2 ch = chi[i];
            float2 t = cmulc(pk, ch);
            acc.x += t.x; acc.y += t.y;
            pi += abs2(pk);
            if (write_g) g[i] = cmulc(lit, ch);
        }
        atomic_add2(num + 2 * w, acc.x, acc.y);
        atomicAdd(den + w, pi);
    }
}

// Optimal step of position jj from its sums (lsqml.cu's ls_step_of, with LF_SLOTS sums a position).
__device__ __forceinline__ float lf_step(const double* __restrict__ acc, int jj, int update_probe, int which) {
    return ls_step_of(acc + (long long)jj * LF_SLOTS, update_probe, which);
}

// sum_jj w_jj g[jj, k, p] conj(ramp_j(p)) / n2 at pixel p = (y, x), w = the probe step of position jj (``weighted``)
// or 1: the spectra of the windows' probe gradients moved back into the probe's frame and summed. The ramps come
// from the batch's table ``tab`` (lf_shift), or, where it is null, from the positions.
__device__ __forceinline__ float2 lf_moved_back(const float2* __restrict__ g, const double* __restrict__ pos,
                                                const int* __restrict__ rows, const int* __restrict__ cols,
                                                const int* __restrict__ order, int b0, int cnt, int n, int M, int k,
                                                int p, int y, int x, float inv_n2, const double* __restrict__ acc,
                                                int weighted, const float2* __restrict__ tab) {
    long long n2 = (long long)n * n;
    float2 a = make_float2(0.f, 0.f);
#pragma unroll 4
    for (int jj = 0; jj < cnt; ++jj) {
        float2 r;
        if (tab) {
            r = lf_ramp_tab(tab, jj, y, x, n);
        } else {
            float fr, fc;
            lf_fraction(pos, rows, cols, order[b0 + jj], fr, fc);
            r = lf_ramp(fr, fc, y, x, n);
        }
        float2 t = cmulc(r, g[((long long)jj * M + k) * n2 + p]);
        float wgt = weighted ? lf_step(acc, jj, 1, 1) : 1.f;
        a.x += wgt * t.x; a.y += wgt * t.y;
    }
    return make_float2(a.x * inv_n2, a.y * inv_n2);
}

// dp[p] = sum_jj |c_j O_j|^2; with ``write_gp`` also gp[k, p] = sum_jj conj(c_j O_j) chi_jk (whole-pixel windows);
// with ``gspec`` (sub-pixel windows, the fused schedule) gp[k, p] = the unweighted lf_moved_back of the gradients'
// spectra gspec (cnt, M, n2) with the ramp table tab (lf_gp_sum's first pass, in this launch);
// max dp into slots[1], the max of den_o over the batch's windows into slots[0].
__global__ void lf_probe_reduce(const float2* __restrict__ chi, const float2* __restrict__ obj,
                                const float* __restrict__ scale, const float* __restrict__ den_o,
                                const int* __restrict__ rows, const int* __restrict__ cols,
                                const int* __restrict__ order, int b0, int cnt, int n, int W, int M, int write_gp,
                                float2* __restrict__ gp, float* __restrict__ dp, unsigned int* slots,
                                const float2* __restrict__ gspec, const float2* __restrict__ tab, float inv_n2) {
    int n2 = n * n;
    float m = 0.f, m_den = 0.f;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        float d = 0.f;
        for (int jj = 0; jj < cnt; ++jj) {
            int j = order[b0 + jj];
            long long w = (long long)(rows[j] + y) * W + (cols[j] + x);
            float c = lf_c(scale, j);
            d += c * c * abs2(obj[w]);
            m_den = fmaxf(m_den, den_o[w]);
        }
        dp[p] = d;
        m = fmaxf(m, d);
        if (write_gp) {
            for (int k = 0; k < M; ++k) {
                float2 a = make_float2(0.f, 0.f);
                for (int jj = 0; jj < cnt; ++jj) {
                    int j = order[b0 + jj];
                    float c = lf_c(scale, j);
                    float2 o = obj[(long long)(rows[j] + y) * W + (cols[j] + x)];
                    float2 t = cmulc(make_float2(c * o.x, c * o.y), chi[((long long)jj * M + k) * n2 + p]);
                    a.x += t.x; a.y += t.y;
                }
                gp[k * n2 + p] = a;
            }
        } else if (gspec) {
            for (int k = 0; k < M; ++k)
                gp[k * n2 + p] = lf_moved_back(gspec, nullptr, rows, cols, order, b0, cnt, n, M, k, p, y, x, inv_n2,
                                               nullptr, 0, tab);
        }
    }
    block_max(m, slots + 1);
    block_max(m_den, slots);
}

// out[k, p] = lf_moved_back(g) for every pixel and mode (an unnormalised inverse transform of out then gives the
// orthonormal result): the search direction's probe part (unweighted) or the step-weighted update; lf_gp_sum_tab
// reads the ramps from the batch's table (the fused schedule).
__device__ __forceinline__ void lf_gp_sum_impl(const float2* __restrict__ g, const double* __restrict__ pos,
                                               const int* __restrict__ rows, const int* __restrict__ cols,
                                               const int* __restrict__ order, int b0, int cnt, int n, int M,
                                               float inv_n2, const double* __restrict__ acc, int weighted,
                                               float2* __restrict__ out, const float2* __restrict__ tab) {
    int n2 = n * n;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        for (int k = 0; k < M; ++k)
            out[k * n2 + p] = lf_moved_back(g, pos, rows, cols, order, b0, cnt, n, M, k, p, y, x, inv_n2, acc,
                                            weighted, tab);
    }
}

__global__ void lf_gp_sum(const float2* __restrict__ g, const double* __restrict__ pos, const int* __restrict__ rows,
                          const int* __restrict__ cols, const int* __restrict__ order, int b0, int cnt, int n, int M,
                          float inv_n2, const double* __restrict__ acc, int weighted, float2* __restrict__ out) {
    lf_gp_sum_impl(g, pos, rows, cols, order, b0, cnt, n, M, inv_n2, acc, weighted, out, nullptr);
}

__global__ void lf_gp_sum_tab(const float2* __restrict__ g, const float2* __restrict__ tab, int cnt, int n, int M,
                              float inv_n2, const double* __restrict__ acc, int weighted, float2* __restrict__ out) {
    lf_gp_sum_impl(g, nullptr, nullptr, nullptr, nullptr, 0, cnt, n, M, inv_n2, acc, weighted, out, tab);
}

// Per position jj (blockIdx.y): the five step sums of lsqml.cu's ls_dot_sums into acc[jj * LF_SLOTS ..], with the
// moved probes (pstride) and the position's amplitude factor.
__global__ void lf_dots(const float2* __restrict__ chi, const float2* __restrict__ obj,
                        const float2* __restrict__ pr, long long pstride, const float* __restrict__ scale,
                        const float2* __restrict__ num_o, const float* __restrict__ den_o,
                        const float2* __restrict__ gp, const float* __restrict__ dp, const int* __restrict__ rows,
                        const int* __restrict__ cols, const int* __restrict__ order, int b0, int n, int W, int M,
                        float delta, const unsigned int* slots, int update_probe, double* acc) {
    int jj = blockIdx.y;
    int j = order[b0 + jj];
    float v[5];
    ls_dot_sums<true>(chi, obj, pr, pstride, lf_c(scale, j), num_o, den_o, gp, dp, rows, cols, j, jj, n, W, M,
                      delta * slot_value(slots), delta * slot_value(slots + 1), update_probe, v);
    lf_block_add<5>(v, acc + (long long)jj * LF_SLOTS);
}

// Whole-pixel windows: new_probe_k = P_k + beta sum_jj step_p conj(c_j O_j) chi_jk / (dp + delta max dp).
__global__ void lf_probe_update(const float2* __restrict__ chi, const float2* __restrict__ obj,
                                const float* __restrict__ scale, const float2* __restrict__ probe,
                                const float* __restrict__ dp, const int* __restrict__ rows,
                                const int* __restrict__ cols, const int* __restrict__ order, int b0, int cnt, int n,
                                int W, int M, float beta, float delta, const unsigned int* slots,
                                const double* __restrict__ acc, float2* __restrict__ new_probe) {
    int n2 = n * n;
    float add_p = delta * slot_value(slots + 1);
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        float sc = beta / (dp[p] + add_p);
        for (int k = 0; k < M; ++k) {
            float2 a = make_float2(0.f, 0.f);
            for (int jj = 0; jj < cnt; ++jj) {
                int j = order[b0 + jj];
                float c = lf_c(scale, j) * lf_step(acc, jj, 1, 1);
                float2 o = obj[(long long)(rows[j] + y) * W + (cols[j] + x)];
                float2 t = cmulc(o, chi[((long long)jj * M + k) * n2 + p]);
                a.x += c * t.x; a.y += c * t.y;
            }
            float2 pk = probe[k * n2 + p];
            new_probe[k * n2 + p] = make_float2(pk.x + sc * a.x, pk.y + sc * a.y);
        }
    }
}

// Sub-pixel windows: new_probe_k = P_k + beta step_sum_k / (dp + delta max dp), step_sum the inverse transform of
// lf_gp_sum(weighted).
__global__ void lf_probe_add(const float2* __restrict__ probe, const float2* __restrict__ step_sum,
                             const float* __restrict__ dp, int n2, int M, float beta, float delta,
                             const unsigned int* slots, float2* __restrict__ new_probe) {
    float add_p = delta * slot_value(slots + 1);
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        float sc = beta / (dp[p] + add_p);
        for (int k = 0; k < M; ++k) {
            float2 pk = probe[k * n2 + p], s = step_sum[k * n2 + p];
            new_probe[k * n2 + p] = make_float2(pk.x + sc * s.x, pk.y + sc * s.y);
        }
    }
}

// O[w] += beta step_o sum_k conj(c P_jk) chi_jk / (den_o[w] + delta max den_o)   (atomics)
__global__ void lf_obj_update(const float2* __restrict__ chi, const float2* __restrict__ pr, long long pstride,
                              const float* __restrict__ scale, const float* __restrict__ den_o,
                              const int* __restrict__ rows, const int* __restrict__ cols,
                              const int* __restrict__ order, int b0, int cnt, int n, int W, int M, float beta,
                              float delta, const unsigned int* slots, const double* __restrict__ acc,
                              int update_probe, float* __restrict__ obj) {
    int n2 = n * n;
    float add_o = delta * slot_value(slots);
    for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int j = order[b0 + jj];
        int y = row_of(p, n), x = p - y * n;
        float c = lf_c(scale, j);
        float2 a = make_float2(0.f, 0.f);
        for (int k = 0; k < M; ++k) {
            float2 t = cmulc(pr[(long long)jj * pstride + (long long)k * n2 + p], chi[((long long)jj * M + k) * n2 + p]);
            a.x += t.x; a.y += t.y;
        }
        long long w = (long long)(rows[j] + y) * W + (cols[j] + x);
        float s = c * beta * lf_step(acc, jj, update_probe, 0) / (den_o[w] + add_o);
        atomic_add2(obj + 2 * w, s * a.x, s * a.y);
    }
}

// Stores position j at (r, c), clipped to [0, hi], and its window corner floor(p + 0.5) (int32 and int64 copies).
__device__ __forceinline__ void lf_set_position(double* pos, int j, double r, double c, double hi_r, double hi_c,
                                                int* rows, int* cols, long long* rows64, long long* cols64) {
    r = fmin(fmax(r, 0.0), hi_r);
    c = fmin(fmax(c, 0.0), hi_c);
    pos[2 * j] = r;
    pos[2 * j + 1] = c;
    long long cr = (long long)floor(r + 0.5), cc = (long long)floor(c + 0.5);
    rows[j] = (int)cr; cols[j] = (int)cc;
    rows64[j] = cr; cols64[j] = cc;
}

// After a batch (one block): with ``refine`` each position moves by its damped Gauss-Newton step per axis,
// num / (den + damping median_batch(den) + 1e-30), clipped to +-max_step px (subpixel.position_steps_px,
// LSQML._move_positions); with a scale each amplitude factor c_j *= 1 + clip(Re<psi,chi> / ||psi||^2, +-max_rel).
__global__ void lf_move(const double* __restrict__ acc, const int* __restrict__ order, int b0, int cnt, int refine,
                        float damping, float max_step, float max_rel, double hi_r, double hi_c, double* pos,
                        int* rows, int* cols, long long* rows64, long long* cols64, float* scale) {
    __shared__ float med[2][2];
    if (refine) {
        // the median of each axis' denominators over the batch: ranks by (value, index), the two middle ones
        for (int i = threadIdx.x; i < cnt; i += blockDim.x) {
            for (int ax = 0; ax < 2; ++ax) {
                float d = (float)acc[(long long)i * LF_SLOTS + 7 + ax];
                int rank = 0;
                for (int q = 0; q < cnt; ++q) {
                    float e = (float)acc[(long long)q * LF_SLOTS + 7 + ax];
                    rank += (e < d) || (e == d && q < i);
                }
                if (rank == (cnt - 1) / 2) med[ax][0] = d;
                if (rank == cnt / 2) med[ax][1] = d;
            }
        }
    }
    __syncthreads();
    for (int jj = threadIdx.x; jj < cnt; jj += blockDim.x) {
        int j = order[b0 + jj];
        const double* a = acc + (long long)jj * LF_SLOTS;
        if (refine) {
            float step[2];
            for (int ax = 0; ax < 2; ++ax) {
                float m = 0.5f * (med[ax][0] + med[ax][1]);
                float s = (float)a[5 + ax] / ((float)a[7 + ax] + damping * m + 1e-30f);
                step[ax] = fminf(fmaxf(s, -max_step), max_step);
            }
            lf_set_position(pos, j, pos[2 * j] + (double)step[0], pos[2 * j + 1] + (double)step[1], hi_r, hi_c, rows,
                            cols, rows64, cols64);
        }
        if (scale) {
            float s = (float)(a[9] / (a[10] + 1e-30));
            s = fminf(fmaxf(s, -max_rel), max_rel);
            scale[j] = scale[j] * (1.f + s);
        }
    }
}

// After an epoch (one block): with ``refine`` the affine part of the corrections since the start is removed (a
// least-squares fit of pos - start on [start - mean(start), 1], LSQML._remove_affine_drift); with a scale the
// amplitude factors are divided by their mean.
__global__ void lf_epoch_end(const double* __restrict__ start, int N, int refine, double hi_r, double hi_c,
                             double* pos, int* rows, int* cols, long long* rows64, long long* cols64, float* scale) {
    __shared__ double sh[10][32];
    __shared__ double res[10];
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    // pass 1: means of the start positions and of the corrections, the mean of the factors
    double v[10];
    for (int q = 0; q < 10; ++q) v[q] = 0.0;
    for (int i = threadIdx.x; i < N; i += blockDim.x) {
        if (refine) {
            v[0] += start[2 * i]; v[1] += start[2 * i + 1];
            v[2] += pos[2 * i] - start[2 * i]; v[3] += pos[2 * i + 1] - start[2 * i + 1];
        }
        if (scale) v[4] += (double)scale[i];
    }
    for (int q = 0; q < 5; ++q) { double s = warp_sum_d(v[q]); if (lane == 0) sh[q][wid] = s; }
    __syncthreads();
    if (threadIdx.x < 5) {
        double s = 0.0;
        for (int w = 0; w < nw; ++w) s += sh[threadIdx.x][w];
        res[threadIdx.x] = s / (double)N;
    }
    __syncthreads();
    double m_r = res[0], m_c = res[1], off_r = res[2], off_c = res[3], m_scale = res[4];
    __syncthreads();
    if (refine) {
        // pass 2: X^T X of the centred start positions and X^T (pos - start)
        for (int q = 0; q < 10; ++q) v[q] = 0.0;
        for (int i = threadIdx.x; i < N; i += blockDim.x) {
            double xr = start[2 * i] - m_r, xc = start[2 * i + 1] - m_c;
            double dr = pos[2 * i] - start[2 * i], dc = pos[2 * i + 1] - start[2 * i + 1];
            v[0] += xr * xr; v[1] += xr * xc; v[2] += xc * xc;
            v[3] += xr * dr; v[4] += xr * dc; v[5] += xc * dr; v[6] += xc * dc;
        }
        for (int q = 0; q < 7; ++q) { double s = warp_sum_d(v[q]); if (lane == 0) sh[q][wid] = s; }
        __syncthreads();
        if (threadIdx.x < 7) {
            double s = 0.0;
            for (int w = 0; w < nw; ++w) s += sh[threadIdx.x][w];
            res[threadIdx.x] = s;
        }
        __syncthreads();
        double srr = res[0], src = res[1], scc = res[2];
        double det = srr * scc - src * src, tr = srr + scc;
        // coefficients L (2 x 2): row 0 multiplies the centred row coordinate, row 1 the centred column
        double l00, l01, l10, l11;
        if (fabs(det) > 1e-12 * tr * tr) {
            double i00 = scc / det, i01 = -src / det, i11 = srr / det;
            l00 = i00 * res[3] + i01 * res[5]; l01 = i00 * res[4] + i01 * res[6];
            l10 = i01 * res[3] + i11 * res[5]; l11 = i01 * res[4] + i11 * res[6];
        } else {  // a line scan: the minimum-norm solution (one centred coordinate is constant)
            double ir = srr > 1e-12 * tr ? 1.0 / srr : 0.0, ic = scc > 1e-12 * tr ? 1.0 / scc : 0.0;
            l00 = ir * res[3]; l01 = ir * res[4]; l10 = ic * res[5]; l11 = ic * res[6];
        }
        for (int i = threadIdx.x; i < N; i += blockDim.x) {
            double xr = start[2 * i] - m_r, xc = start[2 * i + 1] - m_c;
            double r = pos[2 * i] - (xr * l00 + xc * l10 + off_r);
            double c = pos[2 * i + 1] - (xr * l01 + xc * l11 + off_c);
            lf_set_position(pos, i, r, c, hi_r, hi_c, rows, cols, rows64, cols64);
        }
    }
    if (scale) {
        float inv = (float)m_scale;
        for (int i = threadIdx.x; i < N; i += blockDim.x) scale[i] = scale[i] / inv;
    }
}

}  // extern "C"
