// window_fits.cu: sub-pixel windows and position refinement of the fast ePIE and DM (see common.cuh). They reuse
// lsqml_fits.cu: lf_shift (the moved probes from the probe's spectrum), lf_gather + lf_modulus (the terms of each
// position's step, LF_SLOTS 5-8), lf_gp_sum (the windows' probe terms moved back and summed), lf_gradients and
// lf_weigh_gradients.
//
// ePIE keeps its probe as an unnormalised spectrum pspec during the epoch: the moved probe of a step is
// ifft(pspec ramp_j) / n2 (lf_shift with cnt 1), and the step's probe update, moved back by the conjugate ramp, is
// added to pspec directly (wf_spectrum_add); the probe itself is ifft(pspec) / n2 at the epoch's end.

extern "C" {

// ePIE step ``step`` (j = order[step]) with its moved probe pj (M, n2): psi[k] = pj_k O_j; with ``refine`` also
// pj_k dO_j/drow at psi + plane and pj_k dO_j/dcol at psi + 2 plane (plane = M n2), the gradients weighed by
// lf_weigh_gradients where ``illum`` (H, W) is given (the refiner's step_illumination; null: not weighed); the old
// window in opatch; the maxima of |O_j|^2 and sum_k |pj_k|^2 into fmax[2 slot + {0, 1}], the other slot reset for
// the next step; the step's LF_SLOTS sums (acc points at them) reset for lf_modulus.
__global__ void wf_epie_gather(const float2* __restrict__ obj, const float2* __restrict__ pj,
                               const int* __restrict__ rows, const int* __restrict__ cols,
                               const int* __restrict__ order, int step, int n, int W, int M, int refine,
                               long long plane, float2* __restrict__ psi, float2* __restrict__ opatch,
                               unsigned int* fmax, int slot, double* __restrict__ acc,
                               const float* __restrict__ illum) {
    int n2 = n * n;
    int j = order[step];
    int r = rows[j], c = cols[j];
    int tid = blockIdx.x * blockDim.x + threadIdx.x;
    if (tid < 2) fmax[2 * (slot ^ 1) + tid] = 0u;
    if (tid < LF_SLOTS) acc[tid] = 0.0;
    float mo = 0.f, mp = 0.f;
    for (int p = tid; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        long long w = (long long)(r + y) * W + (c + x);
        float2 o = obj[w];
        opatch[p] = o;
        mo = fmaxf(mo, abs2(o));
        float2 gr = make_float2(0.f, 0.f), gc = gr;
        float pi = 0.f;
        for (int k = 0; k < M; ++k) pi += abs2(pj[k * n2 + p]);
        if (refine) {
            lf_gradients(obj, w, W, y, x, n, o, gr, gc);
            if (illum) lf_weigh_gradients(illum, w, pi, gr, gc);
        }
        for (int k = 0; k < M; ++k) {
            float2 pk = pj[k * n2 + p];
            psi[k * n2 + p] = cmul(pk, o);
            if (refine) {
                psi[plane + k * n2 + p] = cmul(pk, gr);
                psi[2 * plane + k * n2 + p] = cmul(pk, gc);
            }
        }
        mp = fmaxf(mp, pi);
    }
    block_max(mo, fmax + 2 * slot);
    block_max(mp, fmax + 2 * slot + 1);
}

// ePIE update from the difference d = psi' - psi (lf_modulus' output after the inverse transform):
// O_j += sum_k conj(pj_k) d_k / max sum |pj|^2; with ``update_probe`` the probe step in the window's frame,
// pstep[k] = conj(O_old) d_k / max |O_old|^2 (wf_spectrum_add moves it back into the probe's frame); with a scale
// the steps of the probe c_j pj (epie_step_window).
__global__ void wf_epie_update(float2* __restrict__ obj, const float2* __restrict__ pj, const float2* __restrict__ d,
                               const float2* __restrict__ opatch, const int* __restrict__ rows,
                               const int* __restrict__ cols, const int* __restrict__ order, int step, int n, int W,
                               int M, const unsigned int* fmax, int slot, int update_probe,
                               float2* __restrict__ pstep, const float* __restrict__ scale) {
    int n2 = n * n;
    int r, c;
    float inv_mo, inv_mp;
    epie_step_window(rows, cols, order, step, fmax, slot, scale, r, c, inv_mo, inv_mp);
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        float2 acc = make_float2(0.f, 0.f);  // sum_k conj(pj_k) d_k
        for (int k = 0; k < M; ++k) {
            float2 g = cmulc(pj[k * n2 + p], d[k * n2 + p]);
            acc.x += g.x; acc.y += g.y;
        }
        float2 o = opatch[p];
        if (update_probe) {
            for (int k = 0; k < M; ++k) {
                float2 h = cmulc(o, d[k * n2 + p]);
                pstep[k * n2 + p] = make_float2(h.x * inv_mo, h.y * inv_mo);
            }
        }
        int y = row_of(p, n);
        obj[(long long)(r + y) * W + (c + p - y * n)] = make_float2(o.x + acc.x * inv_mp, o.y + acc.y * inv_mp);
    }
}

// pspec[k, p] += s[k, p] conj(ramp_j(p)), j = order[step], s the unnormalised spectra of the probe step: the
// probe's spectrum takes the step moved back by position j's fraction.
__global__ void wf_spectrum_add(float2* __restrict__ pspec, const float2* __restrict__ s, const double* __restrict__ pos,
                                const int* __restrict__ rows, const int* __restrict__ cols,
                                const int* __restrict__ order, int step, int n, int M) {
    int n2 = n * n;
    int j = order[step];
    float fr, fc;
    lf_fraction(pos, rows, cols, j, fr, fc);
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        int y = row_of(p, n), x = p - y * n;
        float2 ramp = lf_ramp(fr, fc, y, x, n);
        for (int k = 0; k < M; ++k) {
            float2 t = cmulc(ramp, s[k * n2 + p]);
            float2 v = pspec[k * n2 + p];
            pspec[k * n2 + p] = make_float2(v.x + t.x, v.y + t.y);
        }
    }
}

// dst = scale * src (size complex values).
__global__ void wf_scale_c64(const float2* __restrict__ src, float2* __restrict__ dst, long long size, float scale) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size; i += (long long)gridDim.x * blockDim.x)
        dst[i] = make_float2(scale * src[i].x, scale * src[i].y);
}

// DM: g[jj, k] = conj(c_j O_j) psi_jk for j = j0 + jj: the windows' probe-update terms in their own frames (their
// spectra are moved back and summed by lf_gp_sum). One thread per (window, pixel) of the chunk.
__global__ void wf_dm_conj_obj(const float2* __restrict__ psi, const float2* __restrict__ obj,
                               const int* __restrict__ rows, const int* __restrict__ cols, int j0, int cnt, int n,
                               int W, int M, int Mtot, float2* __restrict__ g, const float* __restrict__ scale) {
    int n2 = n * n;
    long long total = (long long)cnt * n2;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        int jj = (int)(i / n2), p = (int)(i - (long long)jj * n2);
        int y = row_of(p, n);
        long long w = (long long)(rows[j0 + jj] + y) * W + (cols[j0 + jj] + p - y * n);
        float2 o = cscale(obj[w], flux_of(scale, j0 + jj));
        for (int k = 0; k < M; ++k)
            g[((long long)jj * M + k) * n2 + p] = cmulc(o, psi[((long long)(j0 + jj) * Mtot + k) * n2 + p]);
    }
}

// DM after a refining epoch (the fast DM's follow of its moves, engines/dm.DM._follow_positions in two passes):
// psi[j, k] += sign c_j P_jk O_j for every window j < N and mode k < M, P_j = pr + j pstride (the moved probes, or
// the probe with pstride 0), O_j the object at the window's corner now. With sign -1 before the positions move
// (psi then holds DM's memory psi - phi, which rolls with the windows) and +1 after (phi taken anew at each window's
// new place); with ``sums`` (sign -1) also sums[0] += ||psi - phi||^2 and sums[1] += ||phi||^2 (float64, zero
// before): engines/dm.memory_share without a stack-sized temporary; ``store`` 0: the sums only, psi unchanged (an
// epoch that moves no window).
__global__ void wf_dm_phi_add(float2* __restrict__ psi, const float2* __restrict__ pr, long long pstride,
                              const float2* __restrict__ obj, const int* __restrict__ rows,
                              const int* __restrict__ cols, int N, int n, int W, int M, int Mtot,
                              const float* __restrict__ scale, float sign, double* __restrict__ sums,
                              int store) {
    int n2 = n * n;
    long long total = (long long)N * n2;
    double memory = 0.0, phi2 = 0.0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        int j = (int)(i / n2), p = (int)(i - (long long)j * n2);
        int y = row_of(p, n);
        float2 o = cscale(obj[(long long)(rows[j] + y) * W + (cols[j] + p - y * n)], sign * flux_of(scale, j));
        for (int k = 0; k < M; ++k) {
            float2 phi = cmul(pr[(long long)j * pstride + (long long)k * n2 + p], o);
            long long at = ((long long)j * Mtot + k) * n2 + p;
            float2 v = make_float2(psi[at].x + phi.x, psi[at].y + phi.y);
            if (store) psi[at] = v;
            memory += (double)v.x * v.x + (double)v.y * v.y;
            phi2 += (double)phi.x * phi.x + (double)phi.y * phi.y;
        }
    }
    if (sums) {
        memory = warp_sum_d(memory);
        phi2 = warp_sum_d(phi2);
        if ((threadIdx.x & 31) == 0) {
            atomicAdd(sums, memory);
            atomicAdd(sums + 1, phi2);
        }
    }
}

}  // extern "C"
