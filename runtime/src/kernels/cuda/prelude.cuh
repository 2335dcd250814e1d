// edgeact CUDA prelude: prepended to every kernel source before NVRTC compiles it.
//
// NVRTC ships no headers, so nothing here #includes anything: the fixed-width types, the
// half-precision conversions (inline PTX) and the warp/block reductions are defined locally.
// Weight blocks are read byte-wise because ggml's blocks are only 2-byte aligned (Q4_0 is 18
// bytes), so a row's blocks cannot be loaded as wider structs.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

// The host-emulation test (host_emu.rs) compiles these sources as C++ on the CPU and brings
// its own half conversions and dynamic shared memory; the GPU build never defines this.
#ifndef EDGEACT_HOST_EMULATION
// IEEE half -> float. PTX cvt is exact for every half value (subnormals, inf, NaN included).
static __device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// float -> IEEE half, round to nearest even (what the CPU KV cache and `half` do).
static __device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// Dynamic shared memory of a block (sized at launch).
#define EDGEACT_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

// Little-endian half at an address that is only guaranteed to be 1-byte aligned.
static __device__ __forceinline__ float ld_half(const u8* p) {
    return h2f((u16)p[0] | ((u16)p[1] << 8));
}

static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide reductions for blockDim.x a multiple of 32, at most 1024. `red` is 32 slots of
// shared scratch; every thread gets the result. Two barriers so `red` can be reused at once.
static __device__ float block_sum(float v, float* red) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

static __device__ double block_sum_d(double v, double* red) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0;
    v = warp_sum_d(v);
    __syncthreads();
    return v;
}

static __device__ float block_max(float v, float* red) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : -__int_as_float(0x7f800000);
    v = warp_max(v);
    __syncthreads();
    return v;
}
