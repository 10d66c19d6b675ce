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
__device__ __forceinline__ float2 cscale(float2 a, float s) { return make_float2(s * a.x, s * a.y); }
// The amplitude factor c_j of position j (-variableIntensity: scale (N) float, mean 1), or 1 when scale is null.
__device__ __forceinline__ float flux_of(const float* scale, int j) { return scale ? scale[j] : 1.f; }

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

// Adds (x, y, z, w) to the 16-byte aligned quadruple at a: one vector atomic on Hopper (sm_90), four before.
__device__ __forceinline__ void atomic_add4(float* a, float x, float y, float z, float w) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float4*>(a), make_float4(x, y, z, w));
#else
    atomicAdd(a, x);
    atomicAdd(a + 1, y);
    atomicAdd(a + 2, z);
    atomicAdd(a + 3, w);
#endif
}

// Block-wide sums of a and b (blockDim.x <= 1024): returns true in thread 0, which then holds both sums. Ends with a
// barrier, so kernels may call it once per loop iteration.
__device__ bool block_sum2(float& a, float& b) {
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
    }
    __syncthreads();
    return threadIdx.x == 0;
}

// Block-wide sum of two values, atomically added (as double) to out[0], out[1].
__device__ void block_add2(float a, float b, double* out) {
    if (block_sum2(a, b)) { atomicAdd(out, (double)a); atomicAdd(out + 1, (double)b); }
}

// Block-wide sum of two values added (no atomics) to this block's own pair out[2 * blockIdx.x + {0, 1}]: for
// kernels launched many times in sequence with the same grid (ePIE's per-position steps), where one contended
// pair of atomics per block and launch would sit on the critical path.
__device__ void block_add2_partial(float a, float b, double* out) {
    if (block_sum2(a, b)) { out[2 * blockIdx.x] += (double)a; out[2 * blockIdx.x + 1] += (double)b; }
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
