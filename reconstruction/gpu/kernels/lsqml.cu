// lsqml.cu: see common.cuh for the conventions shared by every kernel.

extern "C" {
// ---------------------------------------------------------------- LSQML (one mini-batch per set of launches)
// Batch b covers order[b0 .. b0+cnt-1]; psi/chi buffer (cnt, M, n2).
__global__ void ls_gather(const float2* __restrict__ obj, const float2* __restrict__ probe,
                          const int* __restrict__ rows, const int* __restrict__ cols, const int* __restrict__ order,
                          int b0, int cnt, int n, int W, int M, float2* __restrict__ psi) {
    int n2 = n * n;
    for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int j = order[b0 + jj];
        int y = row_of(p, n), x = p - y * n;
        float2 o = obj[(long long)(rows[j] + y) * W + (cols[j] + x)];
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

// gp[k, p] = sum_jj conj(O_j) chi_jk, dp[p] = sum_jj |O_j|^2, max dp into *slot.
__global__ void ls_probe_reduce(const float2* __restrict__ chi, const float2* __restrict__ obj,
                                const int* __restrict__ rows, const int* __restrict__ cols,
                                const int* __restrict__ order, int b0, int cnt, int n, int W, int M,
                                float2* __restrict__ gp, float* __restrict__ dp, unsigned int* slot) {
    int n2 = n * n;
    float m = 0.f;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        float d = 0.f;
        for (int jj = 0; jj < cnt; ++jj) {
            int j = order[b0 + jj];
            d += abs2(obj[(long long)(rows[j] + y) * W + (cols[j] + x)]);
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
    block_max(m, slot);
}

// Per position jj (blockIdx.y): sums of |a|^2, |b|^2, Re<a,b>, Re<a,chi>, Re<b,chi> into acc[jj*5 ..] (double).
//   a_k = (num_o / (den_o + delta max den_o))[w] P_k,   b_k = O_j gp_k / (dp + delta max dp).
__global__ void ls_dots(const float2* __restrict__ chi, const float2* __restrict__ obj,
                        const float2* __restrict__ probe, const float2* __restrict__ num_o,
                        const float* __restrict__ den_o, const float2* __restrict__ gp, const float* __restrict__ dp,
                        const int* __restrict__ rows, const int* __restrict__ cols, const int* __restrict__ order,
                        int b0, int n, int W, int M, float delta, const unsigned int* slots, int update_probe,
                        double* acc) {
    int n2 = n * n;
    int jj = blockIdx.y;
    int j = order[b0 + jj];
    float add_o = delta * slot_value(slots);
    float add_p = delta * slot_value(slots + 1);
    float a11 = 0.f, a22 = 0.f, a12 = 0.f, y1 = 0.f, y2 = 0.f;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        long long w = (long long)(rows[j] + y) * W + (cols[j] + x);
        float2 dn = num_o[w];
        float dd = den_o[w] + add_o;
        float2 d_o = make_float2(dn.x / dd, dn.y / dd);
        float2 o = obj[w];
        float ddp = dp[p] + add_p;
        for (int k = 0; k < M; ++k) {
            float2 pk = probe[k * n2 + p];
            float2 c = chi[((long long)jj * M + k) * n2 + p];
            float2 a = cmul(d_o, pk);
            a11 += abs2(a);
            float2 ac = cmulc(a, c);
            y1 += ac.x;
            if (update_probe) {
                float2 g = gp[k * n2 + p];
                float2 b = cmul(o, make_float2(g.x / ddp, g.y / ddp));
                a22 += abs2(b);
                a12 += cmulc(a, b).x;
                y2 += cmulc(b, c).x;
            }
        }
    }
    __shared__ float sh[5][32];
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    float v[5] = {a11, a22, a12, y1, y2};
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

// Optimal steps per position from the five sums (clipped to [0, 2]).
__global__ void ls_steps(const double* __restrict__ acc, int cnt, int update_probe, float* __restrict__ steps) {
    int jj = blockIdx.x * blockDim.x + threadIdx.x;
    if (jj >= cnt) return;
    double a11 = acc[jj * 5], a22 = acc[jj * 5 + 1], a12 = acc[jj * 5 + 2], y1 = acc[jj * 5 + 3],
           y2 = acc[jj * 5 + 4];
    double so, sp = 0.0;
    if (update_probe) {
        double lam = 1e-6 * (a11 + a22) + 1e-30;
        double det = (a11 + lam) * (a22 + lam) - a12 * a12;
        so = ((a22 + lam) * y1 - a12 * y2) / det;
        sp = ((a11 + lam) * y2 - a12 * y1) / det;
    } else {
        so = y1 / (a11 + 1e-30);
    }
    steps[2 * jj] = (float)fmin(fmax(so, 0.0), 2.0);
    steps[2 * jj + 1] = (float)fmin(fmax(sp, 0.0), 2.0);
}

// new_probe_k = P_k + beta sum_jj step_p conj(O_j) chi_jk / (dp + delta max dp)
__global__ void ls_probe_update(const float2* __restrict__ chi, const float2* __restrict__ obj,
                                const float2* __restrict__ probe, const float* __restrict__ dp,
                                const int* __restrict__ rows, const int* __restrict__ cols,
                                const int* __restrict__ order, int b0, int cnt, int n, int W, int M, float beta,
                                float delta, const unsigned int* slots, const float* __restrict__ steps,
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
                float s = steps[2 * jj + 1];
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
                              const float* __restrict__ steps, float* __restrict__ obj) {
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
        float s = beta * steps[2 * jj] / (den_o[w] + add_o);
        atomic_add2(obj + 2 * w, s * acc.x, s * acc.y);
    }
}

}  // extern "C"
