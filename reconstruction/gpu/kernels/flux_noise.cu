// flux_noise.cu: the per-position flux fit (-variableIntensity) of the fast ePIE and DM (gpu/flux_noise.py; see
// common.cuh for the shared conventions). The Poisson noise model's far-field step is lsqml_fits.cu's (lf_modulus,
// lf_poisson_newton, lf_poisson_apply), as are the Gaussian difference and error sums of ePIE with the flux fit.
//
// ePIE (engines/epie.py) fits c_j to the measured pattern at each visit: nf_epie_flux_sums reduces the far field
// at c = 1, nf_epie_flux_scale turns the sums into c_j and scales the far field (and with refinement its two moved
// gradients) by it, so that the far-field step that follows sees the model c_j Psi. DM (engines/dm.py) fits c_j to
// its exit waves after the object update: nf_dm_flux_sums, then nf_flux_normalise. Both engines then divide the
// factors by their mean and multiply the probe by it (nf_flux_normalise, nf_scale_by_slot; base.normalise_flux).

extern "C" {

// ePIE step ``step`` (j = order[step]): the flux fit's sums of position j over valid pixels from its far field X (M
// unnormalised modes at c = 1, |Psi| = |X| inv_n; physics.modulus.flux_factor), added to sums[0], sums[1]:
//   gaussian: sum A |Psi|, sum |Psi|^2;   poisson: sum A^2, sum |Psi|^2.
// amp_from as in epie_modulus (resident or a ring slot of a streamed run).
__global__ void nf_epie_flux_sums(const float2* __restrict__ far, const float* __restrict__ amp,
                                  const unsigned char* __restrict__ mask, int has_mask, int mask_stride,
                                  const int* __restrict__ order, int step, int n2, int M, float inv_n, int amp_from,
                                  int poisson, double* sums) {
    int j = order[step];
    long long arow = amp_from < 0 ? j : step - amp_from;
    float num = 0.f, den = 0.f;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
        if (has_mask && !mask[(long long)j * mask_stride + p]) continue;
        float s = 0.f;
        for (int k = 0; k < M; ++k) s += abs2(far[k * n2 + p]);
        float model = sqrtf(s) * inv_n;
        float a = amp[arow * n2 + p];
        num += poisson ? a * a : a * model;
        den += model * model;
    }
    block_add2(num, den, sums);
}

// c_j from nf_epie_flux_sums' sums (num / den, its square root for Poisson; 0 where den = 0), kept at scale[j]
// where it is not positive; far (size values: the step's spectra) *= c_j and scale[j] = c_j.
__global__ void nf_epie_flux_scale(float2* __restrict__ far, long long size, const int* __restrict__ order, int step,
                                   int poisson, const double* __restrict__ sums, float* __restrict__ scale) {
    int j = order[step];
    double num = sums[0], den = sums[1];
    float fitted = den > 0.0 ? (float)(num / fmax(den, 1e-30)) : 0.f;
    if (poisson) fitted = sqrtf(fitted);
    float c = fitted > 0.f ? fitted : scale[j];
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size; i += (long long)gridDim.x * blockDim.x)
        far[i] = cscale(far[i], c);
    if (blockIdx.x == 0 && threadIdx.x == 0) scale[j] = c;
}

// DM's flux fit of every position j (one block row per position): sums[2 j] += Re<P_j O_j, psi_j>,
// sums[2 j + 1] += ||P_j O_j||^2 over the M active modes (the probe as it lights window j, before its factor).
__global__ void nf_dm_flux_sums(const float2* __restrict__ psi, const float2* __restrict__ obj,
                                const float2* __restrict__ probe, long long pstride, const int* __restrict__ rows,
                                const int* __restrict__ cols, int N, int n, int W, int M, int Mtot,
                                double* __restrict__ sums) {
    int n2 = n * n;
    for (int j = blockIdx.y; j < N; j += gridDim.y) {
        float num = 0.f, den = 0.f;
        for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x) {
            int y = row_of(p, n), x = p - y * n;
            float2 o = obj[(long long)(rows[j] + y) * W + (cols[j] + x)];
            const float2* ps = psi + ((long long)j * Mtot) * n2 + p;
            const float2* pr = probe + (long long)j * pstride + p;
            for (int k = 0; k < M; ++k) {
                float2 model = cmul(pr[k * n2], o);
                num += cmulc(model, ps[(long long)k * n2]).x;
                den += abs2(model);
            }
        }
        block_add2(num, den, sums + 2 * j);
    }
}

// One block. With sums (DM's fit): c_j = num_j / den_j where den_j > 0, else kept. Then the factors' mean m: where
// m > 0, scale /= m and *slot = m (the probe is then multiplied by it: nf_scale_by_slot), else *slot = 1.
__global__ void nf_flux_normalise(float* __restrict__ scale, int N, const double* __restrict__ sums,
                                  float* __restrict__ slot) {
    __shared__ double sh[32];
    __shared__ float mean;
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    double t = 0.0;
    for (int i = threadIdx.x; i < N; i += blockDim.x) {
        float c = scale[i];
        if (sums && sums[2 * i + 1] > 0.0) c = (float)(sums[2 * i] / fmax(sums[2 * i + 1], 1e-30));
        scale[i] = c;
        t += (double)c;
    }
    t = warp_sum_d(t);
    if (lane == 0) sh[wid] = t;
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0.0;
        for (int w = 0; w < (int)((blockDim.x + 31) >> 5); ++w) s += sh[w];
        mean = (float)(s / (double)N);
        *slot = mean > 0.f ? mean : 1.f;
    }
    __syncthreads();
    if (mean > 0.f)
        for (int i = threadIdx.x; i < N; i += blockDim.x) scale[i] = scale[i] / mean;
}

// a (size values) *= *slot.
__global__ void nf_scale_by_slot(float2* __restrict__ a, long long size, const float* __restrict__ slot) {
    float s = *slot;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size; i += (long long)gridDim.x * blockDim.x)
        a[i] = cscale(a[i], s);
}

}  // extern "C"
