// dm.cu: see common.cuh for the conventions shared by every kernel.

extern "C" {
// ---------------------------------------------------------------- DM
// The probe as it lights window j, mode k, pixel p is probe[j * pstride + k * n2 + p]: the probe itself (pstride 0)
// or the windows' moved probes (sub-pixel windows, window_fits.cu; pstride Mtot n2). With a scale (-variableIntensity)
// window j is lit by c_j times that probe (c_j = scale[j]; flux_of), and its object by c_j O_j in the probe update.
// acc[w] += (sum_k conj(P_k) psi_jk, sum_k |P_k|^2, 0) over all positions: one 16-byte atomic per element
// (acc is (H*W, 4) float: numerator re, im, denominator, padding).
__global__ void dm_scatter(const float2* __restrict__ psi, const float2* __restrict__ probe, long long pstride,
                           const float* __restrict__ scale, const int* __restrict__ rows,
                           const int* __restrict__ cols, int N, int n, int W, int M, int Mtot,
                           float* __restrict__ acc4) {
    int n2 = n * n;
    for (int j = blockIdx.y; j < N; j += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        float2 acc = make_float2(0.f, 0.f);
        float pi = 0.f;
        const float2* ps = psi + ((long long)j * Mtot) * n2 + p;
        const float2* pr = probe + (long long)j * pstride + p;
        float cj = flux_of(scale, j);
        for (int k = 0; k < M; ++k) {
            float2 pk = cscale(pr[k * n2], cj);
            float2 g = cmulc(pk, ps[(long long)k * n2]);
            acc.x += g.x; acc.y += g.y;
            pi += abs2(pk);
        }
        long long w = (long long)(rows[j] + y) * W + (cols[j] + x);
        atomic_add4(acc4 + 4 * w, acc.x, acc.y, pi, 0.f);
    }
}

// max over the object of the scattered denominator acc4[4w + 2] into *slot.
__global__ void dm_den_max(const float* __restrict__ acc4, long long size, unsigned int* slot) {
    float m = 0.f;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size; i += (long long)gridDim.x * blockDim.x)
        m = fmaxf(m, acc4[4 * i + 2]);
    block_max(m, slot);
}

// obj = num / (den + reg * max den); the accumulator is zeroed for the next iteration.
__global__ void dm_obj_divide(float4* __restrict__ acc4, float2* __restrict__ obj, long long size, float reg,
                              const unsigned int* slot) {
    float add = reg * slot_value(slot);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size; i += (long long)gridDim.x * blockDim.x) {
        float4 v = acc4[i];
        float d = v.z + add;
        obj[i] = make_float2(v.x / d, v.y / d);
        acc4[i] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
}

// Partial sums over a segment of positions: pnum[s, k, p] = sum_j conj(c_j O_j) psi_jk, pden[s, p] = sum_j |c_j O_j|^2.
__global__ void dm_probe_partial(const float2* __restrict__ psi, const float2* __restrict__ obj,
                                 const int* __restrict__ rows, const int* __restrict__ cols, int N, int n, int W,
                                 int M, int Mtot, int nseg, float2* __restrict__ pnum, float* __restrict__ pden,
                                 const float* __restrict__ scale) {
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
                float2 o = cscale(obj[(long long)(rows[j] + y) * W + (cols[j] + x)], flux_of(scale, j));
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

// For positions j0..j0+cnt-1: buf[jj, k] = 2 P_k O_j - psi_jk (the reflected wave).
// With init != 0 it writes phi = P_k O_j into psi instead (the exit-wave initialisation; 2 = modes 1.. only).
__global__ void dm_reflect(float2* __restrict__ psi, const float2* __restrict__ obj, const float2* __restrict__ probe,
                           long long pstride, const float* __restrict__ scale, const int* __restrict__ rows,
                           const int* __restrict__ cols, int j0, int cnt, int n, int W, int M, int Mtot,
                           float2* __restrict__ buf, int init) {
    int n2 = n * n;
    for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int j = j0 + jj;
        int y = row_of(p, n), x = p - y * n;
        float2 o = obj[(long long)(rows[j] + y) * W + (cols[j] + x)];
        float2* ps = psi + ((long long)j * Mtot) * n2 + p;
        const float2* pr = probe + (long long)j * pstride + p;
        float cj = flux_of(scale, j);
        for (int k = 0; k < M; ++k) {
            float2 ph = cmul(cscale(pr[k * n2], cj), o);
            if (init) {  // 1: every mode, 2: modes 1.. (newly activated modes)
                if (init == 1 || k > 0) ps[(long long)k * n2] = ph;
            } else {
                float2 s = ps[(long long)k * n2];
                buf[((long long)jj * M + k) * n2 + p] = make_float2(2.f * ph.x - s.x, 2.f * ph.y - s.y);
            }
        }
    }
}

// Exact modulus projection of the reflected far field in place (scaled for the unnormalised inverse), and per
// position j: errp[2j] += sum (|F|/n - A)^2, errp[2j+1] += sum A^2 over valid pixels (for the relaxed weight).
__global__ void dm_modulus(float2* __restrict__ buf, const float* __restrict__ amp,
                           const unsigned char* __restrict__ mask, int has_mask, int mask_stride, int j0, int cnt,
                           int n2, int M, float inv_n, float inv_n2, double* errp) {
    for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y) {
        int j = j0 + jj;
        float e_sq = 0.f, e_a2 = 0.f;
        for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
            long long base = (long long)jj * M * n2 + p;
            float s = 0.f;
            for (int k = 0; k < M; ++k) s += abs2(buf[base + (long long)k * n2]);
            float a = amp[(long long)j * n2 + p];
            bool valid = !has_mask || mask[(long long)j * mask_stride + p];
            float f = modulus_factor(sqrtf(s) * inv_n, a, valid, e_sq, e_a2) * inv_n2;
            for (int k = 0; k < M; ++k) {
                float2 v = buf[base + (long long)k * n2];
                buf[base + (long long)k * n2] = make_float2(v.x * f, v.y * f);
            }
        }
        block_add2(e_sq, e_a2, errp + 2 * j);
    }
}

// psi_jk += s_j (2 phi - psi_jk) + (1 - s_j) buf[jj, k] - phi with phi = P_k O_j and the relaxed weight
// s_j = sqrt(min(1, relax^2 a_j / e_j)) from errp; with ``diff`` (the Poisson model: buf holds the step's change of
// the reflected wave, F^-1[Psi alpha g]) psi_jk = phi + buf[jj, k], i.e. psi + (2 phi - psi + buf) - phi.
// With fuse_probe (M <= 4) it also writes this block's probe partial sums of the new waves,
// pnum[seg, k, p] = sum_jj conj(O_j) psi_jk and pden[seg, p] = sum_jj |O_j|^2 with seg = seg0 + blockIdx.y,
// for the next iteration's probe update (the same sums dm_probe_partial computes).
__global__ void dm_psi_update(float2* __restrict__ psi, const float2* __restrict__ obj,
                              const float2* __restrict__ probe, long long pstride, const float* __restrict__ scale,
                              const int* __restrict__ rows, const int* __restrict__ cols, int j0, int cnt, int n,
                              int W, int M, int Mtot, const float2* __restrict__ buf, const double* __restrict__ errp,
                              float relax2, int fuse_probe, int seg0, float2* __restrict__ pnum,
                              float* __restrict__ pden, int diff) {
    int n2 = n * n;
    int seg = seg0 + blockIdx.y;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        float2 acc[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) acc[k] = make_float2(0.f, 0.f);
        float d = 0.f;
        for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y) {
            int j = j0 + jj;
            double ej = errp[2 * j], aj = errp[2 * j + 1];
            float sj = (relax2 > 0.f && ej > 0.0) ? (float)sqrt(fmin(1.0, (double)relax2 * aj / ej)) : 0.f;
            float2 o = obj[(long long)(rows[j] + y) * W + (cols[j] + x)];
            float cj = flux_of(scale, j);
            float2 lo = cscale(o, cj);  // the object as the probe update sees it, c_j O_j
            d += abs2(lo);
            float2* ps = psi + ((long long)j * Mtot) * n2 + p;
            const float2* pr = probe + (long long)j * pstride + p;
            for (int k = 0; k < M; ++k) {
                float2 ph = cmul(cscale(pr[k * n2], cj), o);
                float2 q = buf[((long long)jj * M + k) * n2 + p];
                float2 s = ps[(long long)k * n2];
                float2 nw;
                if (diff) {
                    nw = make_float2(ph.x + q.x, ph.y + q.y);
                } else {
                    float2 r = make_float2(2.f * ph.x - s.x, 2.f * ph.y - s.y);
                    float2 dl = make_float2(sj * r.x + (1.f - sj) * q.x - ph.x, sj * r.y + (1.f - sj) * q.y - ph.y);
                    nw = make_float2(s.x + dl.x, s.y + dl.y);
                }
                ps[(long long)k * n2] = nw;
                if (fuse_probe && k < 4) {
                    float2 g = cmulc(lo, nw);
                    acc[k].x += g.x; acc[k].y += g.y;
                }
            }
        }
        if (fuse_probe) {
            for (int k = 0; k < M && k < 4; ++k) pnum[((long long)seg * M + k) * n2 + p] = acc[k];
            pden[(long long)seg * n2 + p] = d;
        }
    }
}

// The error sample: buf[jj, k] = P_k O_j for j = (start[0] + jj) mod N, jj < cnt (see engines.dm.error_sample).
__global__ void dm_sample_gather(const float2* __restrict__ obj, const float2* __restrict__ probe,
                                 long long pstride, const float* __restrict__ scale, const int* __restrict__ rows,
                                 const int* __restrict__ cols, const int* __restrict__ start, int N, int cnt, int n,
                                 int W, int M, float2* __restrict__ buf) {
    int n2 = n * n;
    for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int j = (start[0] + jj) % N;
        int y = row_of(p, n), x = p - y * n;
        float2 o = obj[(long long)(rows[j] + y) * W + (cols[j] + x)];
        const float2* pr = probe + (long long)j * pstride + p;
        float cj = flux_of(scale, j);
        for (int k = 0; k < M; ++k) buf[((long long)jj * M + k) * n2 + p] = cmul(cscale(pr[k * n2], cj), o);
    }
}

// Fourier error of the sample's far fields (read only): err[0] += sum (|F|/n - A)^2, err[1] += sum A^2 (valid).
__global__ void dm_sample_error(const float2* __restrict__ buf, const float* __restrict__ amp,
                                const unsigned char* __restrict__ mask, int has_mask, int mask_stride,
                                const int* __restrict__ start, int N, int cnt, int n2, int M, float inv_n,
                                double* err) {
    float e_sq = 0.f, e_a2 = 0.f;
    for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int j = (start[0] + jj) % N;
        float s = 0.f;
        for (int k = 0; k < M; ++k) s += abs2(buf[((long long)jj * M + k) * n2 + p]);
        bool valid = !has_mask || mask[(long long)j * mask_stride + p];
        modulus_factor(sqrtf(s) * inv_n, amp[(long long)j * n2 + p], valid, e_sq, e_a2);
    }
    block_add2(e_sq, e_a2, err);
}

}  // extern "C"
