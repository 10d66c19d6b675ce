// generic.cu: see common.cuh for the conventions shared by every kernel.

extern "C" {
// ---------------------------------------------------------------- generic
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

__global__ void copy_c64(const float2* __restrict__ src, float2* __restrict__ dst, long long size) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size; i += (long long)gridDim.x * blockDim.x)
        dst[i] = src[i];
}

// mean[i] += w (new[i] - mean[i]): one pass of an exponential mean (iterate_mean.py), in place.
__global__ void lerp_c64(float2* __restrict__ mean, const float2* __restrict__ fresh, float w, long long size) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size; i += (long long)gridDim.x * blockDim.x) {
        float2 m = mean[i], f = fresh[i];
        mean[i] = make_float2(fmaf(w, f.x - m.x, m.x), fmaf(w, f.y - m.y, m.y));
    }
}

}  // extern "C"
