// dm.cu: see common.cuh for the conventions shared by every kernel.

extern "C" {
// ---------------------------------------------------------------- DM
// num[w] += sum_k conj(P_k) psi_jk, den[w] += sum_k |P_k|^2 over all positions (atomics).
__global__ void dm_scatter(const float2* __restrict__ psi, const float2* __restrict__ probe,
                           const int* __restrict__ rows, const int* __restrict__ cols, int N, int n, int W, int M,
                           int Mtot, float* __restrict__ num, float* __restrict__ den) {
    int n2 = n * n;
    for (int j = blockIdx.y; j < N; j += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        float2 acc = make_float2(0.f, 0.f);
        float pi = 0.f;
        const float2* ps = psi + ((long long)j * Mtot) * n2 + p;
        for (int k = 0; k < M; ++k) {
            float2 pk = probe[k * n2 + p];
            float2 g = cmulc(pk, ps[(long long)k * n2]);
            acc.x += g.x; acc.y += g.y;
            pi += abs2(pk);
        }
        long long w = (long long)(rows[j] + y) * W + (cols[j] + x);
        atomic_add2(num + 2 * w, acc.x, acc.y);
        atomicAdd(den + w, pi);
    }
}

// obj = num / (den + reg * max den); num and den are zeroed for the next iteration.
__global__ void dm_obj_divide(float2* __restrict__ num, float* __restrict__ den, float2* __restrict__ obj,
                              long long size, float reg, const unsigned int* slot) {
    float add = reg * slot_value(slot);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size; i += (long long)gridDim.x * blockDim.x) {
        float2 v = num[i];
        float d = den[i] + add;
        obj[i] = make_float2(v.x / d, v.y / d);
        num[i] = make_float2(0.f, 0.f);
        den[i] = 0.f;
    }
}

// Partial sums over a segment of positions: pnum[s, k, p] = sum_j conj(O_j) psi_jk, pden[s, p] = sum_j |O_j|^2.
__global__ void dm_probe_partial(const float2* __restrict__ psi, const float2* __restrict__ obj,
                                 const int* __restrict__ rows, const int* __restrict__ cols, int N, int n, int W,
                                 int M, int Mtot, int nseg, float2* __restrict__ pnum, float* __restrict__ pden) {
    int n2 = n * n;
    int seg = blockIdx.y;
    int per = (N + nseg - 1) / nseg;
    int j0 = seg * per, j1 = min(N, j0 + per);
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        float d = 0.f;
        float2 acc[4];
        for (int k = 0; k < 4; ++k) acc[k] = make_float2(0.f, 0.f);
        for (int k0 = 0; k0 < M; k0 += 4) {
            for (int k = 0; k < 4; ++k) acc[k] = make_float2(0.f, 0.f);
            d = 0.f;
            for (int j = j0; j < j1; ++j) {
                float2 o = obj[(long long)(rows[j] + y) * W + (cols[j] + x)];
                d += abs2(o);
                const float2* ps = psi + ((long long)j * Mtot) * n2 + p;
#pragma unroll
                for (int k = 0; k < 4; ++k) {
                    if (k0 + k < M) {
                        float2 g = cmulc(o, ps[(long long)(k0 + k) * n2]);
                        acc[k].x += g.x; acc[k].y += g.y;
                    }
                }
            }
#pragma unroll
            for (int k = 0; k < 4; ++k)
                if (k0 + k < M) pnum[((long long)seg * M + k0 + k) * n2 + p] = acc[k];
        }
        pden[(long long)seg * n2 + p] = d;
    }
}

// Sum the segments: num_p (M, n2), den_p (n2), and the max of den_p into *slot.
__global__ void dm_probe_reduce(const float2* __restrict__ pnum, const float* __restrict__ pden, int nseg, int n2,
                                int M, float2* __restrict__ num_p, float* __restrict__ den_p, unsigned int* slot) {
    float m = 0.f;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        float d = 0.f;
        for (int s = 0; s < nseg; ++s) d += pden[(long long)s * n2 + p];
        den_p[p] = d;
        m = fmaxf(m, d);
        for (int k = 0; k < M; ++k) {
            float2 a = make_float2(0.f, 0.f);
            for (int s = 0; s < nseg; ++s) {
                float2 v = pnum[((long long)s * M + k) * n2 + p];
                a.x += v.x; a.y += v.y;
            }
            num_p[k * n2 + p] = a;
        }
    }
    block_max(m, slot);
}

__global__ void dm_probe_divide(const float2* __restrict__ num_p, const float* __restrict__ den_p, int n2, int M,
                                float reg, const unsigned int* slot, float2* __restrict__ probe) {
    float add = reg * slot_value(slot);
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        float d = den_p[p] + add;
        for (int k = 0; k < M; ++k) {
            float2 v = num_p[k * n2 + p];
            probe[k * n2 + p] = make_float2(v.x / d, v.y / d);
        }
    }
}

// For positions j0..j0+cnt-1: buf[jj, k] = phi = P_k O_j, buf[cnt + jj, k] = 2 phi - psi_jk.
// With init != 0 it writes phi into psi instead (the exit-wave initialisation; 2 = modes 1.. only).
__global__ void dm_reflect(float2* __restrict__ psi, const float2* __restrict__ obj, const float2* __restrict__ probe,
                           const int* __restrict__ rows, const int* __restrict__ cols, int j0, int cnt, int n, int W,
                           int M, int Mtot, float2* __restrict__ buf, int init) {
    int n2 = n * n;
    long long half = (long long)cnt * M * n2;
    for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int j = j0 + jj;
        int y = row_of(p, n), x = p - y * n;
        float2 o = obj[(long long)(rows[j] + y) * W + (cols[j] + x)];
        float2* ps = psi + ((long long)j * Mtot) * n2 + p;
        for (int k = 0; k < M; ++k) {
            float2 ph = cmul(probe[k * n2 + p], o);
            if (init) {  // 1: every mode, 2: modes 1.. (newly activated modes)
                if (init == 1 || k > 0) ps[(long long)k * n2] = ph;
            } else {
                float2 s = ps[(long long)k * n2];
                long long b = ((long long)jj * M + k) * n2 + p;
                buf[b] = ph;
                buf[half + b] = make_float2(2.f * ph.x - s.x, 2.f * ph.y - s.y);
            }
        }
    }
}

// Error of phi (first half of buf) and the modulus projection of the reflected wave (second half), in place.
__global__ void dm_modulus(float2* __restrict__ buf, const float* __restrict__ amp,
                           const unsigned char* __restrict__ mask, int has_mask, int mask_stride, int j0, int cnt,
                           int n2, int M, float inv_n, float inv_n2, double* err) {
    long long half = (long long)cnt * M * n2;
    float e_sq = 0.f, e_a2 = 0.f, dummy1 = 0.f, dummy2 = 0.f;
    for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int j = j0 + jj;
        float s_phi = 0.f, s_ref = 0.f;
        long long base = (long long)jj * M * n2 + p;
        for (int k = 0; k < M; ++k) {
            s_phi += abs2(buf[base + (long long)k * n2]);
            s_ref += abs2(buf[half + base + (long long)k * n2]);
        }
        float a = amp[(long long)j * n2 + p];
        bool valid = !has_mask || mask[(long long)j * mask_stride + p];
        modulus_factor(sqrtf(s_phi) * inv_n, a, valid, e_sq, e_a2);
        float f = modulus_factor(sqrtf(s_ref) * inv_n, a, valid, dummy1, dummy2) * inv_n2;
        for (int k = 0; k < M; ++k) {
            float2 v = buf[half + base + (long long)k * n2];
            buf[half + base + (long long)k * n2] = make_float2(v.x * f, v.y * f);
        }
    }
    block_add2(e_sq, e_a2, err);
}

// psi_jk += buf[cnt + jj, k] - P_k O_j.
__global__ void dm_psi_update(float2* __restrict__ psi, const float2* __restrict__ obj,
                              const float2* __restrict__ probe, const int* __restrict__ rows,
                              const int* __restrict__ cols, int j0, int cnt, int n, int W, int M, int Mtot,
                              const float2* __restrict__ buf) {
    int n2 = n * n;
    long long half = (long long)cnt * M * n2;
    for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int j = j0 + jj;
        int y = row_of(p, n), x = p - y * n;
        float2 o = obj[(long long)(rows[j] + y) * W + (cols[j] + x)];
        float2* ps = psi + ((long long)j * Mtot) * n2 + p;
        for (int k = 0; k < M; ++k) {
            float2 ph = cmul(probe[k * n2 + p], o);
            float2 q = buf[half + ((long long)jj * M + k) * n2 + p];
            float2 s = ps[(long long)k * n2];
            ps[(long long)k * n2] = make_float2(s.x + q.x - ph.x, s.y + q.y - ph.y);
        }
    }
}

}  // extern "C"
