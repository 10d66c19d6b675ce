// lsqml.cu: see common.cuh for the conventions shared by every kernel.

// This thread's share of the five step sums of position j = order[b0 + jj]: |a|^2, |b|^2, Re<a,b>, Re<a,chi>,
// Re<b,chi>, with a_k = (num_o / (den_o + add_o))[w] c P_jk and b_k = c O_j gp_k / (dp + add_p). FITS false: one
// probe for every window, c = 1 (the plain path: ls_dots); true: the probe of window jj, mode k at
// pr[jj * pstride + k * n2 + p] and the position's amplitude factor c (lsqml_fits.cu's lf_dots).
template <bool FITS>
__device__ __forceinline__ void ls_dot_sums(const float2* __restrict__ chi, const float2* __restrict__ obj,
                                            const float2* __restrict__ pr, long long pstride, float c,
                                            const float2* __restrict__ num_o, const float* __restrict__ den_o,
                                            const float2* __restrict__ gp, const float* __restrict__ dp,
                                            const int* __restrict__ rows, const int* __restrict__ cols, int j,
                                            int jj, int n, int W, int M, float add_o, float add_p,
                                            int update_probe, float (&v)[5]) {
    int n2 = n * n;
    float a11 = 0.f, a22 = 0.f, a12 = 0.f, y1 = 0.f, y2 = 0.f;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        long long w = (long long)(rows[j] + y) * W + (cols[j] + x);
        float2 dn = num_o[w];
        float dd = den_o[w] + add_o;
        float2 d_o = make_float2(dn.x / dd, dn.y / dd);
        float2 o = obj[w];
        if (FITS) o = make_float2(c * o.x, c * o.y);
        float ddp = dp[p] + add_p;
        for (int k = 0; k < M; ++k) {
            float2 pk;
            if (FITS) {
                pk = pr[(long long)jj * pstride + (long long)k * n2 + p];
                pk.x *= c; pk.y *= c;
            } else {
                pk = pr[k * n2 + p];
            }
            float2 ch = chi[((long long)jj * M + k) * n2 + p];
            float2 a = cmul(d_o, pk);
            a11 += abs2(a);
            float2 ac = cmulc(a, ch);
            y1 += ac.x;
            if (update_probe) {
                float2 g = gp[k * n2 + p];
                float2 b = cmul(o, make_float2(g.x / ddp, g.y / ddp));
                a22 += abs2(b);
                a12 += cmulc(a, b).x;
                y2 += cmulc(b, ch).x;
            }
        }
    }
    v[0] = a11; v[1] = a22; v[2] = a12; v[3] = y1; v[4] = y2;
}

extern "C" {
// ---------------------------------------------------------------- LSQML (one mini-batch per set of launches)
// Batch b covers order[b0 .. b0+cnt-1]; psi/chi buffer (cnt, M, n2).
// Also resets this batch's sums (in place of four memset nodes): num_o and den_o on the batch's windows (every later
// read of them is on those windows), acc[0 .. 5 cnt) and the max slots[0 .. 3].
__global__ void ls_gather(const float2* __restrict__ obj, const float2* __restrict__ probe,
                          const int* __restrict__ rows, const int* __restrict__ cols, const int* __restrict__ order,
                          int b0, int cnt, int n, int W, int M, float2* __restrict__ psi, float2* __restrict__ num_o,
                          float* __restrict__ den_o, double* __restrict__ acc, unsigned int* __restrict__ slots) {
    int n2 = n * n;
    int tid = (blockIdx.y * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x;
    int threads = gridDim.x * gridDim.y * blockDim.x;
    for (int i = tid; i < 5 * cnt; i += threads) acc[i] = 0.0;
    if (tid < 4) slots[tid] = 0u;
    for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int j = order[b0 + jj];
        int y = row_of(p, n), x = p - y * n;
        long long w = (long long)(rows[j] + y) * W + (cols[j] + x);
        float2 o = obj[w];
        num_o[w] = make_float2(0.f, 0.f);
        den_o[w] = 0.f;
        for (int k = 0; k < M; ++k) psi[((long long)jj * M + k) * n2 + p] = cmul(probe[k * n2 + p], o);
    }
}

// Gaussian noise model: chi_hat = Psi (A / |Psi| - 1) (0 where invalid), scaled for the unnormalised inverse.
// amp_from < 0: amp is (N, n2), row order[b0 + jj]; amp_from >= 0: a ring slot of the streamed run holding
// visiting steps amp_from.., row b0 + jj - amp_from.
__global__ void ls_modulus(float2* __restrict__ far, const float* __restrict__ amp,
                           const unsigned char* __restrict__ mask, int has_mask, int mask_stride,
                           const int* __restrict__ order, int b0, int cnt, int n2, int M, float inv_n, float inv_n2,
                           double* err, int amp_from) {
    float e_sq = 0.f, e_a2 = 0.f;
    for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int j = order[b0 + jj];
        long long base = (long long)jj * M * n2 + p;
        float s = 0.f;
        for (int k = 0; k < M; ++k) s += abs2(far[base + (long long)k * n2]);
        long long arow = amp_from < 0 ? j : b0 + jj - amp_from;
        float a = amp[arow * n2 + p];
        bool valid = !has_mask || mask[(long long)j * mask_stride + p];
        float f = (modulus_factor(sqrtf(s) * inv_n, a, valid, e_sq, e_a2) - 1.f) * inv_n2;
        for (int k = 0; k < M; ++k) {
            float2 v = far[base + (long long)k * n2];
            far[base + (long long)k * n2] = make_float2(v.x * f, v.y * f);
        }
    }
    block_add2(e_sq, e_a2, err);
}

// num_o[w] += sum_k conj(P_k) chi_jk, den_o[w] += sum_k |P_k|^2.
__global__ void ls_scatter(const float2* __restrict__ chi, const float2* __restrict__ probe,
                           const int* __restrict__ rows, const int* __restrict__ cols, const int* __restrict__ order,
                           int b0, int cnt, int n, int W, int M, float* __restrict__ num, float* __restrict__ den) {
    int n2 = n * n;
    for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int j = order[b0 + jj];
        int y = row_of(p, n), x = p - y * n;
        float2 acc = make_float2(0.f, 0.f);
        float pi = 0.f;
        for (int k = 0; k < M; ++k) {
            float2 pk = probe[k * n2 + p];
            float2 g = cmulc(pk, chi[((long long)jj * M + k) * n2 + p]);
            acc.x += g.x; acc.y += g.y;
            pi += abs2(pk);
        }
        long long w = (long long)(rows[j] + y) * W + (cols[j] + x);
        atomic_add2(num + 2 * w, acc.x, acc.y);
        atomicAdd(den + w, pi);
    }
}

// gp[k, p] = sum_jj conj(O_j) chi_jk, dp[p] = sum_jj |O_j|^2; max dp into slots[1] and the max of den_o over the
// batch's windows into slots[0] (den_o is complete: ls_scatter ran before).
__global__ void ls_probe_reduce(const float2* __restrict__ chi, const float2* __restrict__ obj,
                                const float* __restrict__ den_o, const int* __restrict__ rows,
                                const int* __restrict__ cols, const int* __restrict__ order, int b0, int cnt, int n,
                                int W, int M, float2* __restrict__ gp, float* __restrict__ dp, unsigned int* slots) {
    int n2 = n * n;
    float m = 0.f, m_den = 0.f;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        float d = 0.f;
        for (int jj = 0; jj < cnt; ++jj) {
            int j = order[b0 + jj];
            long long w = (long long)(rows[j] + y) * W + (cols[j] + x);
            d += abs2(obj[w]);
            m_den = fmaxf(m_den, den_o[w]);
        }
        dp[p] = d;
        m = fmaxf(m, d);
        for (int k = 0; k < M; ++k) {
            float2 a = make_float2(0.f, 0.f);
            for (int jj = 0; jj < cnt; ++jj) {
                int j = order[b0 + jj];
                float2 o = obj[(long long)(rows[j] + y) * W + (cols[j] + x)];
                float2 g = cmulc(o, chi[((long long)jj * M + k) * n2 + p]);
                a.x += g.x; a.y += g.y;
            }
            gp[k * n2 + p] = a;
        }
    }
    block_max(m, slots + 1);
    block_max(m_den, slots);
}

// The max of den_o over the batch's windows into slots[0] (when the probe is not updated; else ls_probe_reduce).
__global__ void ls_den_max(const float* __restrict__ den_o, const int* __restrict__ rows,
                           const int* __restrict__ cols, const int* __restrict__ order, int b0, int cnt, int n, int W,
                           unsigned int* slots) {
    int n2 = n * n;
    float m = 0.f;
    for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int j = order[b0 + jj];
        int y = row_of(p, n), x = p - y * n;
        m = fmaxf(m, den_o[(long long)(rows[j] + y) * W + (cols[j] + x)]);
    }
    block_max(m, slots);
}

// Per position jj (blockIdx.y): sums of |a|^2, |b|^2, Re<a,b>, Re<a,chi>, Re<b,chi> into acc[jj*5 ..] (double).
//   a_k = (num_o / (den_o + delta max den_o))[w] P_k,   b_k = O_j gp_k / (dp + delta max dp).
__global__ void ls_dots(const float2* __restrict__ chi, const float2* __restrict__ obj,
                        const float2* __restrict__ probe, const float2* __restrict__ num_o,
                        const float* __restrict__ den_o, const float2* __restrict__ gp, const float* __restrict__ dp,
                        const int* __restrict__ rows, const int* __restrict__ cols, const int* __restrict__ order,
                        int b0, int n, int W, int M, float delta, const unsigned int* slots, int update_probe,
                        double* acc) {
    int jj = blockIdx.y;
    int j = order[b0 + jj];
    float add_o = delta * slot_value(slots);
    float add_p = delta * slot_value(slots + 1);
    float v[5];
    ls_dot_sums<false>(chi, obj, probe, 0, 1.f, num_o, den_o, gp, dp, rows, cols, j, jj, n, W, M, add_o, add_p,
                       update_probe, v);
    __shared__ float sh[5][32];
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
#pragma unroll
    for (int q = 0; q < 5; ++q) {
        float s = warp_sum(v[q]);
        if (lane == 0) sh[q][wid] = s;
    }
    __syncthreads();
    if (wid == 0) {
        int nw = (blockDim.x + 31) >> 5;
#pragma unroll
        for (int q = 0; q < 5; ++q) {
            float s = lane < nw ? sh[q][lane] : 0.f;
            s = warp_sum(s);
            if (lane == 0) atomicAdd(acc + jj * 5 + q, (double)s);
        }
    }
}

// Optimal step of position jj from its five sums (clipped to [0, 2]): the object's (which 0) or the probe's (1).
// Computed where it is used (ls_probe_update, ls_obj_update) instead of in a launch of its own.
// ls_step_of: from the position's five sums at a (the fits path keeps them in wider per-position rows).
__device__ __forceinline__ float ls_step_of(const double* __restrict__ a, int update_probe, int which) {
    double a11 = a[0], a22 = a[1], a12 = a[2], y1 = a[3], y2 = a[4];
    double s;
    if (update_probe) {
        double lam = 1e-6 * (a11 + a22) + 1e-30;
        double det = (a11 + lam) * (a22 + lam) - a12 * a12;
        s = which == 0 ? ((a22 + lam) * y1 - a12 * y2) / det : ((a11 + lam) * y2 - a12 * y1) / det;
    } else {
        s = which == 0 ? y1 / (a11 + 1e-30) : 0.0;
    }
    return (float)fmin(fmax(s, 0.0), 2.0);
}

__device__ __forceinline__ float ls_step(const double* __restrict__ acc, int jj, int update_probe, int which) {
    return ls_step_of(acc + jj * 5, update_probe, which);
}

// new_probe_k = P_k + beta sum_jj step_p conj(O_j) chi_jk / (dp + delta max dp)
__global__ void ls_probe_update(const float2* __restrict__ chi, const float2* __restrict__ obj,
                                const float2* __restrict__ probe, const float* __restrict__ dp,
                                const int* __restrict__ rows, const int* __restrict__ cols,
                                const int* __restrict__ order, int b0, int cnt, int n, int W, int M, float beta,
                                float delta, const unsigned int* slots, const double* __restrict__ sums,
                                float2* __restrict__ new_probe) {
    int n2 = n * n;
    float add_p = delta * slot_value(slots + 1);
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        float scale = beta / (dp[p] + add_p);
        for (int k = 0; k < M; ++k) {
            float2 a = make_float2(0.f, 0.f);
            for (int jj = 0; jj < cnt; ++jj) {
                int j = order[b0 + jj];
                float2 o = obj[(long long)(rows[j] + y) * W + (cols[j] + x)];
                float2 g = cmulc(o, chi[((long long)jj * M + k) * n2 + p]);
                float s = ls_step(sums, jj, 1, 1);
                a.x += s * g.x; a.y += s * g.y;
            }
            float2 pk = probe[k * n2 + p];
            new_probe[k * n2 + p] = make_float2(pk.x + scale * a.x, pk.y + scale * a.y);
        }
    }
}

// O[w] += beta step_o sum_k conj(P_k) chi_jk / (den_o[w] + delta max den_o)   (atomics)
__global__ void ls_obj_update(const float2* __restrict__ chi, const float2* __restrict__ probe,
                              const float* __restrict__ den_o, const int* __restrict__ rows,
                              const int* __restrict__ cols, const int* __restrict__ order, int b0, int cnt, int n,
                              int W, int M, float beta, float delta, const unsigned int* slots,
                              const double* __restrict__ sums, int update_probe, float* __restrict__ obj) {
    int n2 = n * n;
    float add_o = delta * slot_value(slots);
    for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int j = order[b0 + jj];
        int y = row_of(p, n), x = p - y * n;
        float2 acc = make_float2(0.f, 0.f);
        for (int k = 0; k < M; ++k) {
            float2 g = cmulc(probe[k * n2 + p], chi[((long long)jj * M + k) * n2 + p]);
            acc.x += g.x; acc.y += g.y;
        }
        long long w = (long long)(rows[j] + y) * W + (cols[j] + x);
        float s = beta * ls_step(sums, jj, update_probe, 0) / (den_o[w] + add_o);
        atomic_add2(obj + 2 * w, s * acc.x, s * acc.y);
    }
}

}  // extern "C"
