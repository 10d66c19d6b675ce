// stream.cu: see common.cuh for the conventions shared by every kernel.

extern "C" {
// ---------------------------------------------------------------- streaming from pinned host memory
// slot[k, p] = sqrt(host[order[s0 + k], p]) for k < cnt, p < n2: the next chunk of the visiting order gathered
// from mapped (pinned, zero-copy) host intensities into a device ring slot. Reads cross the host link, so the
// kernel runs on a few blocks (x over pixels, y over patterns) with 16-byte loads, several in flight per thread.
// __fsqrt_rn is the correctly rounded square root (the resident path's cupy.sqrt), independent of fast-math.
// vec = 1 where n2 % 4 == 0 and host is 16-byte aligned (float4 loads), else 0.
__global__ void stream_fill(const float* __restrict__ host, const int* __restrict__ order, int s0, int cnt, int n2,
                            int vec, float* __restrict__ slot) {
    if (vec) {
        int n4 = n2 >> 2;
        for (int k = blockIdx.y; k < cnt; k += gridDim.y) {
            const float4* src = reinterpret_cast<const float4*>(host + (long long)order[s0 + k] * n2);
            float4* dst = reinterpret_cast<float4*>(slot + (long long)k * n2);
#pragma unroll 4
            for (int q = blockIdx.x * blockDim.x + threadIdx.x; q < n4; q += gridDim.x * blockDim.x) {
                float4 v = src[q];
                dst[q] = make_float4(__fsqrt_rn(v.x), __fsqrt_rn(v.y), __fsqrt_rn(v.z), __fsqrt_rn(v.w));
            }
        }
        return;
    }
    for (int k = blockIdx.y; k < cnt; k += gridDim.y) {
        const float* src = host + (long long)order[s0 + k] * n2;
        float* dst = slot + (long long)k * n2;
        for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n2; p += gridDim.x * blockDim.x)
            dst[p] = __fsqrt_rn(src[p]);
    }
}

}  // extern "C"
