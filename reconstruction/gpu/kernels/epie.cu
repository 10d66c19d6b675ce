// epie.cu: see common.cuh for the conventions shared by every kernel.

extern "C" {
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

// amp_from < 0: amp is (N, n2), row order[step]; amp_from >= 0: amp is a ring slot holding steps amp_from.. in
// visiting order (streamed run), row step - amp_from.
__global__ void epie_modulus(float2* __restrict__ far, const float* __restrict__ amp,
                             const unsigned char* __restrict__ mask, int has_mask, int mask_stride,
                             const int* __restrict__ order, int step, int n2, int M, float inv_n, float inv_n2,
                             double* errp, unsigned int* fmax, int reset_slot, int amp_from) {
    int j = order[step];
    long long arow = amp_from < 0 ? j : step - amp_from;  // resident: row j of amp; streamed: row of the ring slot
    if (reset_slot >= 0 && blockIdx.x == 0 && threadIdx.x < 2) fmax[2 * reset_slot + threadIdx.x] = 0u;
    float e_sq = 0.f, e_a2 = 0.f;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        float s = 0.f;
        for (int k = 0; k < M; ++k) s += abs2(far[k * n2 + p]);
        float a = amp[arow * n2 + p];
        bool valid = !has_mask || mask[(long long)j * mask_stride + p];
        float f = modulus_factor(sqrtf(s) * inv_n, a, valid, e_sq, e_a2) * inv_n2;
        for (int k = 0; k < M; ++k) {
            float2 v = far[k * n2 + p];
            far[k * n2 + p] = make_float2(v.x * f, v.y * f);
        }
    }
    block_add2_partial(e_sq, e_a2, errp);
}

// The window corner (r, c) of step ``step`` and the reciprocal maxima 1 / max |O_j|^2, 1 / max sum_k |P_k|^2 that the
// step's gather left in fmax[2 slot + {0, 1}], each divided by the position's amplitude factor c_j when scale is
// not null (-variableIntensity, engines/epie.py: with the probe c P, the object step conj(c P) D / max |c P|^2 is
// conj(P) D / (c max |P|^2), and the probe step conj(O) D / (c max |O|^2)).
__device__ __forceinline__ void epie_step_window(const int* __restrict__ rows, const int* __restrict__ cols,
                                                 const int* __restrict__ order, int step, const unsigned int* fmax,
                                                 int slot, const float* __restrict__ scale, int& r, int& c,
                                                 float& inv_mo, float& inv_mp) {
    int j = order[step];
    r = rows[j];
    c = cols[j];
    inv_mo = 1.f / slot_value(fmax + 2 * slot);
    inv_mp = 1.f / slot_value(fmax + 2 * slot + 1);
    if (scale) {
        inv_mo /= scale[j];
        inv_mp /= scale[j];
    }
}

// D_k = psi'_k - P_k O_old;  O += sum_k conj(P_k) D_k / max sum|P|^2;  P_k += conj(O_old) D_k / max |O_old|^2.
// With ``diff`` psi_new holds D itself (the flux fit and the Poisson model: gpu/flux_noise.py), and with a scale the
// steps are those of the probe c_j P (epie_step_window). The body of epie_update (plain: scale null, diff 0, both
// known to the compiler, so the plain kernel carries neither branch nor their registers) and epie_update_fit.
__device__ __forceinline__ void epie_update_body(float2* __restrict__ obj, float2* __restrict__ probe,
                                                 const float2* __restrict__ psi_new, const float2* __restrict__ opatch,
                                                 const int* __restrict__ rows, const int* __restrict__ cols,
                                                 const int* __restrict__ order, int step, int n, int W, int M,
                                                 const unsigned int* fmax, int slot, int update_probe,
                                                 const float* __restrict__ scale, int diff) {
    int n2 = n * n;
    int r, c;
    float inv_mo, inv_mp;
    epie_step_window(rows, cols, order, step, fmax, slot, scale, r, c, inv_mo, inv_mp);
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        float2 o = opatch[p];
        float2 acc = make_float2(0.f, 0.f);
        for (int k = 0; k < M; ++k) {
            float2 pk = probe[k * n2 + p];
            float2 ph = diff ? make_float2(0.f, 0.f) : cmul(pk, o);
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

__global__ void epie_update(float2* __restrict__ obj, float2* __restrict__ probe, const float2* __restrict__ psi_new,
                            const float2* __restrict__ opatch, const int* __restrict__ rows,
                            const int* __restrict__ cols, const int* __restrict__ order, int step, int n, int W,
                            int M, const unsigned int* fmax, int slot, int update_probe) {
    epie_update_body(obj, probe, psi_new, opatch, rows, cols, order, step, n, W, M, fmax, slot, update_probe,
                     nullptr, 0);
}

__global__ void epie_update_fit(float2* __restrict__ obj, float2* __restrict__ probe,
                                const float2* __restrict__ psi_new, const float2* __restrict__ opatch,
                                const int* __restrict__ rows, const int* __restrict__ cols,
                                const int* __restrict__ order, int step, int n, int W, int M,
                                const unsigned int* fmax, int slot, int update_probe, const float* __restrict__ scale,
                                int diff) {
    epie_update_body(obj, probe, psi_new, opatch, rows, cols, order, step, n, W, M, fmax, slot, update_probe, scale,
                     diff);
}

// The update of step s fused with the gather of step s+1 (one launch instead of two on the sequential chain).
// Ping-pong buffers keep it race-free: the step-s inputs (probe_a, psi_s, opatch_s) are only read, the outputs
// (probe_b, psi_next, opatch_next) only written, and an object pixel of window j_{s+1} that window j_s also
// covers is recomputed from the step-s inputs instead of being read from the object that this launch updates.
// ``scale`` and ``diff`` as in epie_update_body; the body of epie_update_gather (plain) and epie_update_gather_fit.
__device__ __forceinline__ void epie_update_gather_body(
        float2* __restrict__ obj, const float2* __restrict__ probe_a, float2* __restrict__ probe_b,
        const float2* __restrict__ psi_s, const float2* __restrict__ opatch_s, float2* __restrict__ psi_next,
        float2* __restrict__ opatch_next, const int* __restrict__ rows, const int* __restrict__ cols,
        const int* __restrict__ order, int step, int n, int W, int M, unsigned int* fmax, int update_probe,
        const float* __restrict__ scale, int diff) {
    int n2 = n * n;
    int j = order[step], jn = order[step + 1];
    int r = rows[j], c = cols[j], rn = rows[jn], cn = cols[jn];
    int slot = step & 1, nslot = slot ^ 1;
    float inv_mo = 1.f / slot_value(fmax + 2 * slot);
    float inv_mp = 1.f / slot_value(fmax + 2 * slot + 1);
    if (scale) {
        inv_mo /= scale[j];
        inv_mp /= scale[j];
    }
    float mo = 0.f, mp = 0.f;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        // update of step s at pixel p of window j_s
        float2 o = opatch_s[p];
        float2 acc = make_float2(0.f, 0.f);
        float pi = 0.f;
        for (int k = 0; k < M; ++k) {
            float2 pk = probe_a[k * n2 + p];
            float2 ph = diff ? make_float2(0.f, 0.f) : cmul(pk, o);
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
                float2 ph = diff ? make_float2(0.f, 0.f) : cmul(pk, o2);
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

__global__ void epie_update_gather(float2* __restrict__ obj, const float2* __restrict__ probe_a,
                                   float2* __restrict__ probe_b, const float2* __restrict__ psi_s,
                                   const float2* __restrict__ opatch_s, float2* __restrict__ psi_next,
                                   float2* __restrict__ opatch_next, const int* __restrict__ rows,
                                   const int* __restrict__ cols, const int* __restrict__ order, int step, int n,
                                   int W, int M, unsigned int* fmax, int update_probe) {
    epie_update_gather_body(obj, probe_a, probe_b, psi_s, opatch_s, psi_next, opatch_next, rows, cols, order, step,
                            n, W, M, fmax, update_probe, nullptr, 0);
}

__global__ void epie_update_gather_fit(float2* __restrict__ obj, const float2* __restrict__ probe_a,
                                       float2* __restrict__ probe_b, const float2* __restrict__ psi_s,
                                       const float2* __restrict__ opatch_s, float2* __restrict__ psi_next,
                                       float2* __restrict__ opatch_next, const int* __restrict__ rows,
                                       const int* __restrict__ cols, const int* __restrict__ order, int step,
                                       int n, int W, int M, unsigned int* fmax, int update_probe,
                                       const float* __restrict__ scale, int diff) {
    epie_update_gather_body(obj, probe_a, probe_b, psi_s, opatch_s, psi_next, opatch_next, rows, cols, order, step,
                            n, W, M, fmax, update_probe, scale, diff);
}

}  // extern "C"
