// Fused CUDA kernels of the GPU fast paths (compiled at run time by CuPy's RawModule).
//
// Conventions shared by every kernel:
//   obj    float2 (H*W), row stride W          probe float2 (Mtot, n2), the first M modes active
//   amp    float (N, n2) measured amplitudes   mask  uint8, has_mask 0/1, mask_stride 0 (n x n) or n2 (per frame)
//   rows, cols int32 (N) window corners        order int32: the visiting order (epoch permutation)
//   FFTs are unnormalised cuFFT transforms; the orthonormal scale is folded in here:
//     model amplitude = |X| * inv_n, and the projected field is multiplied by factor * inv_n2 so that the
//     unnormalised inverse gives exactly the orthonormal result.
//   err    double[2]: sum over valid pixels of (|Psi| - A)^2 and of A^2 (block sums, one atomic per block).
//   fmax   unsigned int slots holding non-negative floats as bits (atomicMax on the bit pattern).

#define EPS 1e-12f

__device__ __forceinline__ float2 cmul(float2 a, float2 b) {
    return make_float2(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}
__device__ __forceinline__ float2 cmulc(float2 a, float2 b) {  // conj(a) * b
    return make_float2(a.x * b.x + a.y * b.y, a.x * b.y - a.y * b.x);
}
__device__ __forceinline__ float abs2(float2 a) { return a.x * a.x + a.y * a.y; }

// Row of pixel p in an n-wide window without an integer division: the float estimate (p + 0.5) / n is within one
// row for p < 2^24, and the two integer checks make it exact.
__device__ __forceinline__ int row_of(int p, int n) {
    int y = __float2int_rd(((float)p + 0.5f) * (1.0f / (float)n));
    y -= (y * n > p);          // one-row corrections keep it exact where the float estimate is off by one
    y += ((y + 1) * n <= p);
    return y;
}

// Kernels over (position, pixel) pairs run on a 2-D grid: blockIdx.y strides over positions, x over pixels.

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffff, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffff, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffff, v, o));
    return v;
}

// Adds (x, y) to the 8-byte aligned pair at a: one vector atomic on Hopper (sm_90), two scalar atomics before.
__device__ __forceinline__ void atomic_add2(float* a, float x, float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float2*>(a), make_float2(x, y));
#else
    atomicAdd(a, x);
    atomicAdd(a + 1, y);
#endif
}

// Block-wide sum of two values, atomically added (as double) to out[0], out[1]. blockDim.x <= 1024.
__device__ void block_add2(float a, float b, double* out) {
    __shared__ float sa[32], sb[32];
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    a = warp_sum(a);
    b = warp_sum(b);
    if (lane == 0) { sa[wid] = a; sb[wid] = b; }
    __syncthreads();
    if (wid == 0) {
        int nw = (blockDim.x + 31) >> 5;
        a = lane < nw ? sa[lane] : 0.f;
        b = lane < nw ? sb[lane] : 0.f;
        a = warp_sum(a);
        b = warp_sum(b);
        if (lane == 0) { atomicAdd(out, (double)a); atomicAdd(out + 1, (double)b); }
    }
    __syncthreads();
}

// Block-wide sum of two values added (no atomics) to this block's own pair out[2 * blockIdx.x + {0, 1}]: for
// kernels launched many times in sequence with the same grid (ePIE's per-position steps), where one contended
// pair of atomics per block and launch would sit on the critical path.
__device__ void block_add2_partial(float a, float b, double* out) {
    __shared__ float sa[32], sb[32];
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    a = warp_sum(a);
    b = warp_sum(b);
    if (lane == 0) { sa[wid] = a; sb[wid] = b; }
    __syncthreads();
    if (wid == 0) {
        int nw = (blockDim.x + 31) >> 5;
        a = lane < nw ? sa[lane] : 0.f;
        b = lane < nw ? sb[lane] : 0.f;
        a = warp_sum(a);
        b = warp_sum(b);
        if (lane == 0) { out[2 * blockIdx.x] += (double)a; out[2 * blockIdx.x + 1] += (double)b; }
    }
    __syncthreads();
}

// Block-wide max of a non-negative value, atomically folded into *slot.
__device__ void block_max(float v, unsigned int* slot) {
    __shared__ float sm[32];
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    v = warp_max(v);
    if (lane == 0) sm[wid] = v;
    __syncthreads();
    if (wid == 0) {
        int nw = (blockDim.x + 31) >> 5;
        v = lane < nw ? sm[lane] : 0.f;
        v = warp_max(v);
        if (lane == 0) atomicMax(slot, __float_as_uint(v));
    }
    __syncthreads();
}

__device__ __forceinline__ float slot_value(const unsigned int* slot) { return __uint_as_float(*slot); }

// Modulus step on one pixel of one position: error terms and the factor applied to the far field.
// Returns the factor (A / |Psi|, 1 where invalid), adds the error terms to e_sq, e_a2.
__device__ __forceinline__ float modulus_factor(float model, float a, bool valid, float& e_sq, float& e_a2) {
    if (!valid) return 1.f;
    float d = model - a;
    e_sq += d * d;
    e_a2 += a * a;
    return a / (model + EPS);
}

extern "C" {

// ---------------------------------------------------------------- generic
__global__ void max_reduce(const float* __restrict__ x, long long size, unsigned int* slot) {
    float m = 0.f;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size; i += (long long)gridDim.x * blockDim.x)
        m = fmaxf(m, x[i]);
    block_max(m, slot);
}

// err[0..1] = sum over blocks of the partial pairs (one block).
__global__ void sum_partials(const double* __restrict__ partial, int nblocks, double* err) {
    double a = 0.0, b = 0.0;
    for (int i = threadIdx.x; i < nblocks; i += blockDim.x) { a += partial[2 * i]; b += partial[2 * i + 1]; }
    __shared__ double sa[32], sb[32];
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    a = warp_sum_d(a);
    b = warp_sum_d(b);
    if (lane == 0) { sa[wid] = a; sb[wid] = b; }
    __syncthreads();
    if (threadIdx.x == 0) {
        double ta = 0.0, tb = 0.0;
        for (int w = 0; w < (int)((blockDim.x + 31) >> 5); ++w) { ta += sa[w]; tb += sb[w]; }
        err[0] = ta;
        err[1] = tb;
    }
}

// ---------------------------------------------------------------- ePIE (one position per launch, graph-captured)
// psi_k = P_k O_j, keeps the old window in opatch; maxima of |O_j|^2 and sum_k |P_k|^2 into fmax[2*slot+{0,1}];
// resets the other slot for the next step.
__global__ void epie_gather(const float2* __restrict__ obj, const float2* __restrict__ probe,
                            const int* __restrict__ rows, const int* __restrict__ cols, const int* __restrict__ order,
                            int step, int n, int W, int M, float2* __restrict__ psi, float2* __restrict__ opatch,
                            unsigned int* fmax, int slot) {
    int n2 = n * n;
    int j = order[step];
    int r = rows[j], c = cols[j];
    float mo = 0.f, mp = 0.f;
    if (blockIdx.x == 0 && threadIdx.x < 2) fmax[2 * (slot ^ 1) + threadIdx.x] = 0u;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        float2 o = obj[(long long)(r + y) * W + (c + x)];
        opatch[p] = o;
        mo = fmaxf(mo, abs2(o));
        float pi = 0.f;
        for (int k = 0; k < M; ++k) {
            float2 pk = probe[k * n2 + p];
            pi += abs2(pk);
            psi[k * n2 + p] = cmul(pk, o);
        }
        mp = fmaxf(mp, pi);
    }
    block_max(mo, fmax + 2 * slot);
    block_max(mp, fmax + 2 * slot + 1);
}

__global__ void epie_modulus(float2* __restrict__ far, const float* __restrict__ amp,
                             const unsigned char* __restrict__ mask, int has_mask, int mask_stride,
                             const int* __restrict__ order, int step, int n2, int M, float inv_n, float inv_n2,
                             double* errp, unsigned int* fmax, int reset_slot) {
    int j = order[step];
    if (reset_slot >= 0 && blockIdx.x == 0 && threadIdx.x < 2) fmax[2 * reset_slot + threadIdx.x] = 0u;
    float e_sq = 0.f, e_a2 = 0.f;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        float s = 0.f;
        for (int k = 0; k < M; ++k) s += abs2(far[k * n2 + p]);
        float a = amp[(long long)j * n2 + p];
        bool valid = !has_mask || mask[(long long)j * mask_stride + p];
        float f = modulus_factor(sqrtf(s) * inv_n, a, valid, e_sq, e_a2) * inv_n2;
        for (int k = 0; k < M; ++k) {
            float2 v = far[k * n2 + p];
            far[k * n2 + p] = make_float2(v.x * f, v.y * f);
        }
    }
    block_add2_partial(e_sq, e_a2, errp);
}

// D_k = psi'_k - P_k O_old;  O += sum_k conj(P_k) D_k / max sum|P|^2;  P_k += conj(O_old) D_k / max |O_old|^2.
__global__ void epie_update(float2* __restrict__ obj, float2* __restrict__ probe, const float2* __restrict__ psi_new,
                            const float2* __restrict__ opatch, const int* __restrict__ rows,
                            const int* __restrict__ cols, const int* __restrict__ order, int step, int n, int W,
                            int M, const unsigned int* fmax, int slot, int update_probe) {
    int n2 = n * n;
    int j = order[step];
    int r = rows[j], c = cols[j];
    float inv_mo = 1.f / slot_value(fmax + 2 * slot);
    float inv_mp = 1.f / slot_value(fmax + 2 * slot + 1);
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        float2 o = opatch[p];
        float2 acc = make_float2(0.f, 0.f);
        for (int k = 0; k < M; ++k) {
            float2 pk = probe[k * n2 + p];
            float2 ph = cmul(pk, o);
            float2 q = psi_new[k * n2 + p];
            float2 d = make_float2(q.x - ph.x, q.y - ph.y);
            float2 g = cmulc(pk, d);
            acc.x += g.x; acc.y += g.y;
            if (update_probe) {
                float2 h = cmulc(o, d);
                probe[k * n2 + p] = make_float2(pk.x + h.x * inv_mo, pk.y + h.y * inv_mo);
            }
        }
        obj[(long long)(r + y) * W + (c + x)] = make_float2(o.x + acc.x * inv_mp, o.y + acc.y * inv_mp);
    }
}

// The update of step s fused with the gather of step s+1 (one launch instead of two on the sequential chain).
// Ping-pong buffers keep it race-free: the step-s inputs (probe_a, psi_s, opatch_s) are only read, the outputs
// (probe_b, psi_next, opatch_next) only written, and an object pixel of window j_{s+1} that window j_s also
// covers is recomputed from the step-s inputs instead of being read from the object that this launch updates.
__global__ void epie_update_gather(float2* __restrict__ obj, const float2* __restrict__ probe_a,
                                   float2* __restrict__ probe_b, const float2* __restrict__ psi_s,
                                   const float2* __restrict__ opatch_s, float2* __restrict__ psi_next,
                                   float2* __restrict__ opatch_next, const int* __restrict__ rows,
                                   const int* __restrict__ cols, const int* __restrict__ order, int step, int n,
                                   int W, int M, unsigned int* fmax, int update_probe) {
    int n2 = n * n;
    int j = order[step], jn = order[step + 1];
    int r = rows[j], c = cols[j], rn = rows[jn], cn = cols[jn];
    int slot = step & 1, nslot = slot ^ 1;
    float inv_mo = 1.f / slot_value(fmax + 2 * slot);
    float inv_mp = 1.f / slot_value(fmax + 2 * slot + 1);
    float mo = 0.f, mp = 0.f;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        // update of step s at pixel p of window j_s
        float2 o = opatch_s[p];
        float2 acc = make_float2(0.f, 0.f);
        float pi = 0.f;
        for (int k = 0; k < M; ++k) {
            float2 pk = probe_a[k * n2 + p];
            float2 ph = cmul(pk, o);
            float2 q = psi_s[k * n2 + p];
            float2 d = make_float2(q.x - ph.x, q.y - ph.y);
            float2 g = cmulc(pk, d);
            acc.x += g.x; acc.y += g.y;
            float2 pn = pk;
            if (update_probe) {
                float2 h = cmulc(o, d);
                pn = make_float2(pk.x + h.x * inv_mo, pk.y + h.y * inv_mo);
            }
            probe_b[k * n2 + p] = pn;
            pi += abs2(pn);
        }
        obj[(long long)(r + y) * W + (c + x)] = make_float2(o.x + acc.x * inv_mp, o.y + acc.y * inv_mp);
        // gather of step s+1 at pixel p of window j_{s+1}
        int dy = rn + y - r, dx = cn + x - c;
        float2 on;
        if (dy >= 0 && dy < n && dx >= 0 && dx < n) {
            int q2 = dy * n + dx;
            float2 o2 = opatch_s[q2];
            float2 a2 = make_float2(0.f, 0.f);
            for (int k = 0; k < M; ++k) {
                float2 pk = probe_a[k * n2 + q2];
                float2 ph = cmul(pk, o2);
                float2 q = psi_s[k * n2 + q2];
                float2 g = cmulc(pk, make_float2(q.x - ph.x, q.y - ph.y));
                a2.x += g.x; a2.y += g.y;
            }
            on = make_float2(o2.x + a2.x * inv_mp, o2.y + a2.y * inv_mp);
        } else {
            on = obj[(long long)(rn + y) * W + (cn + x)];
        }
        opatch_next[p] = on;
        mo = fmaxf(mo, abs2(on));
        mp = fmaxf(mp, pi);
        for (int k = 0; k < M; ++k) psi_next[k * n2 + p] = cmul(probe_b[k * n2 + p], on);
    }
    block_max(mo, fmax + 2 * nslot);
    block_max(mp, fmax + 2 * nslot + 1);
}

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
__global__ void ls_modulus(float2* __restrict__ far, const float* __restrict__ amp,
                           const unsigned char* __restrict__ mask, int has_mask, int mask_stride,
                           const int* __restrict__ order, int b0, int cnt, int n2, int M, float inv_n, float inv_n2,
                           double* err) {
    float e_sq = 0.f, e_a2 = 0.f;
    for (int jj = blockIdx.y; jj < cnt; jj += gridDim.y)
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int j = order[b0 + jj];
        long long base = (long long)jj * M * n2 + p;
        float s = 0.f;
        for (int k = 0; k < M; ++k) s += abs2(far[base + (long long)k * n2]);
        float a = amp[(long long)j * n2 + p];
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

__global__ void copy_c64(const float2* __restrict__ src, float2* __restrict__ dst, long long size) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size; i += (long long)gridDim.x * blockDim.x)
        dst[i] = src[i];
}

}  // extern "C"
