#include "attentionKernel.h"

#include "common/cudaCheck.h"
#include "common/deviceInfo.h"

#include <cuda_fp16.h>

namespace mvt
{
namespace
{
constexpr float kLog2e = 1.4426950408889634F;

// ------------------------------------------------------------------------------------------
// FP16: flash-attention style, mma.sync m16n8k16 (FP16 in, FP32 accumulate). This kernel serves
// N <= 32 and N > 64; 32 < N <= 64 has its own kernel (attentionF16SingleTileKernel, below).
//
// A CTA is 4 warps. Warps form groups of kWpg warps; a group owns one work item, i.e.
// 16 * kWpg query rows of one (sequence, head) pair, and walks that pair's keys in tiles of
// kTile = 16 * kWpg rows with an online softmax. Short sequences (N <= 16 or 32) use small
// groups so a CTA serves 4 or 2 pairs at once instead of idling on padding rows.
// Q, K and V tiles go through shared memory (cp.async, K/V double-buffered); head dims are
// zero-padded to kHd (a multiple of 16) and keys past N are masked to -inf.
// ------------------------------------------------------------------------------------------
constexpr int32_t kWarps = 4;
constexpr int32_t kThreads = kWarps * 32;
constexpr int32_t kRows = 64; // shared-memory rows per Q/K/V buffer (= 16 * kWarps)
// CTAs per SM asked of ptxas for single-tile kernels (one key tile: N <= 32 here): 6 caps
// kHd <= 32 at 80 registers, 5 caps kHd = 48 at 96; kHd = 64 is left uncapped.
template <int32_t kHd, int32_t kStages>
constexpr int32_t minBlocks()
{
    return kStages != 1 ? 1 : (kHd <= 32 ? 6 : (kHd == 48 ? 5 : 1));
}

struct GroupPointers
{
    __half const* q;
    __half const* k;
    __half const* v;
    __half* o;
    int32_t qRow0; // first query row of the item
    int32_t valid;
};

__device__ __forceinline__ uint32_t smemAddr(void const* p)
{
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

template <int32_t kVec>
__device__ __forceinline__ void copyChunk(__half* dst, __half const* src, bool valid)
{
    if constexpr (kVec == 8)
    {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smemAddr(dst)), "l"(src),
            "r"(valid ? 16 : 0));
    }
    else if constexpr (kVec == 4)
    {
        asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(smemAddr(dst)), "l"(src),
            "r"(valid ? 8 : 0));
    }
    else if constexpr (kVec == 2)
    {
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smemAddr(dst)), "l"(src),
            "r"(valid ? 4 : 0));
    }
    else
    {
        *dst = valid ? *src : __float2half(0.F);
    }
}

__device__ __forceinline__ void cpAsyncCommit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}

template <int32_t kN>
__device__ __forceinline__ void cpAsyncWait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kN));
}

__device__ __forceinline__ void mma16816(float (&c)[4], uint32_t const (&a)[4], uint32_t b0, uint32_t b1)
{
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrixX4Trans(uint32_t (&r)[4], void const* p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smemAddr(p)));
}

__device__ __forceinline__ uint32_t packHalf2(float lo, float hi)
{
    __half2 const h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t const*>(&h);
}

// Copy kVec halves (one 16-, 8-, 4- or 2-byte chunk) from src to dst; both aligned to the chunk.
template <int32_t kVec>
__device__ __forceinline__ void storeChunk(__half* dst, __half const* src)
{
    if constexpr (kVec == 8)
    {
        *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<uint4 const*>(src);
    }
    else if constexpr (kVec == 4)
    {
        *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<uint2 const*>(src);
    }
    else if constexpr (kVec == 2)
    {
        *reinterpret_cast<uint32_t*>(dst) = *reinterpret_cast<uint32_t const*>(src);
    }
    else
    {
        *dst = *src;
    }
}

// Copy a 64-row tile (rows of every group) from global to shared memory, zero-filling rows past
// the sequence, head-dim padding and invalid items. `rowOf(g, r)` gives the token index.
template <int32_t kHd, int32_t kLds, int32_t kVec, int32_t kTile>
__device__ __forceinline__ void loadTile(__half* smem, GroupPointers const* groups, int32_t which, int32_t tile,
    int64_t tokenStride, int32_t seqLen, int32_t headDim)
{
    constexpr int32_t kChunksPerRow = kHd / kVec;
    constexpr int32_t kChunks = kRows * kChunksPerRow;
#pragma unroll
    for (int32_t i = threadIdx.x; i < kChunks; i += kThreads)
    {
        int32_t const r = i / kChunksPerRow;
        int32_t const c = (i % kChunksPerRow) * kVec;
        GroupPointers const& g = groups[r / kTile];
        int32_t const token = (which == 0 ? g.qRow0 : tile * kTile) + r % kTile;
        bool const valid = g.valid && token < seqLen && c < headDim;
        __half const* base = which == 0 ? g.q : (which == 1 ? g.k : g.v);
        __half const* src = valid ? base + token * tokenStride + c : base;
        copyChunk<kVec>(smem + r * kLds + c, src, valid);
    }
}

// kStages = 1 when the whole sequence is one key tile (N <= 16 * kWpg): no second K/V buffer, so
// less shared memory and more CTAs per SM; 2 = K/V tiles double-buffered.
template <int32_t kHd, int32_t kWpg, int32_t kVec, int32_t kStages>
__global__ void __launch_bounds__(kThreads, minBlocks<kHd, kStages>()) attentionF16Kernel(AttentionParams<__half> p, float scaleLog2,
    int32_t qBlocks, int32_t totalItems)
{
    constexpr int32_t kGroups = kWarps / kWpg;
    constexpr int32_t kTile = 16 * kWpg;  // keys per tile, = query rows per item
    constexpr int32_t kLds = kHd + 8;     // padded row: conflict-free fragments and ldmatrix
    constexpr int32_t kKSteps = kHd / 16; // k-steps of Q.K^T
    constexpr int32_t kSTiles = kTile / 8; // n-tiles of S
    constexpr int32_t kPSteps = kTile / 16; // k-steps of P.V
    constexpr int32_t kOTiles = kHd / 8;  // n-tiles of O

    __shared__ __align__(16) __half sQ[kRows * kLds];
    __shared__ __align__(16) __half sK[kStages][kRows * kLds];
    __shared__ __align__(16) __half sV[kStages][kRows * kLds];
    __shared__ GroupPointers sGroups[kGroups];

    int32_t const warp = threadIdx.x / 32;
    int32_t const lane = threadIdx.x % 32;
    int32_t const g = lane / 4;
    int32_t const t = lane % 4;
    int32_t const group = warp / kWpg;

    if (threadIdx.x < kGroups)
    {
        int32_t const item = blockIdx.x * kGroups + threadIdx.x;
        GroupPointers gp{};
        gp.valid = item < totalItems;
        int32_t const it = gp.valid ? item : 0;
        int32_t const pair = it / qBlocks;
        int32_t const s = pair / p.heads;
        int32_t const h = pair % p.heads;
        gp.qRow0 = (it % qBlocks) * kTile;
        gp.q = p.q + s * p.qStride.batch + h * p.qStride.head;
        gp.k = p.k + s * p.kStride.batch + h * p.kStride.head;
        gp.v = p.v + s * p.vStride.batch + h * p.vStride.head;
        gp.o = p.o + s * p.oStride.batch + h * p.oStride.head;
        sGroups[threadIdx.x] = gp;
    }
    __syncthreads();

    int32_t const nTiles = (p.seqLen + kTile - 1) / kTile;
    loadTile<kHd, kLds, kVec, kTile>(sQ, sGroups, 0, 0, p.qStride.token, p.seqLen, p.headDim);
    loadTile<kHd, kLds, kVec, kTile>(sK[0], sGroups, 1, 0, p.kStride.token, p.seqLen, p.headDim);
    loadTile<kHd, kLds, kVec, kTile>(sV[0], sGroups, 2, 0, p.vStride.token, p.seqLen, p.headDim);
    cpAsyncCommit();

    uint32_t qf[kKSteps][4];
    float o[kOTiles][4];
#pragma unroll
    for (int32_t j = 0; j < kOTiles; ++j)
    {
        o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.F;
    }
    float rowMax[2] = {-INFINITY, -INFINITY};
    float rowSum[2] = {0.F, 0.F};
    int32_t const qr = 16 * warp; // this warp's rows in sQ
    int32_t const kr = group * kTile; // this group's rows in sK / sV

    for (int32_t tile = 0; tile < nTiles; ++tile)
    {
        int32_t const buf = tile & (kStages - 1);
        bool prefetched = false;
        if constexpr (kStages == 2)
        {
            if (tile + 1 < nTiles)
            {
                loadTile<kHd, kLds, kVec, kTile>(
                    sK[buf ^ 1], sGroups, 1, tile + 1, p.kStride.token, p.seqLen, p.headDim);
                loadTile<kHd, kLds, kVec, kTile>(
                    sV[buf ^ 1], sGroups, 2, tile + 1, p.vStride.token, p.seqLen, p.headDim);
                cpAsyncCommit();
                cpAsyncWait<1>();
                prefetched = true;
            }
        }
        if (!prefetched)
        {
            cpAsyncWait<0>();
        }
        __syncthreads();

        if (tile == 0)
        {
#pragma unroll
            for (int32_t kk = 0; kk < kKSteps; ++kk)
            {
                __half const* base = sQ + (qr + g) * kLds + 16 * kk + 2 * t;
                qf[kk][0] = *reinterpret_cast<uint32_t const*>(base);
                qf[kk][1] = *reinterpret_cast<uint32_t const*>(base + 8 * kLds);
                qf[kk][2] = *reinterpret_cast<uint32_t const*>(base + 8);
                qf[kk][3] = *reinterpret_cast<uint32_t const*>(base + 8 * kLds + 8);
            }
        }

        // S = Q K^T (unscaled, FP32)
        float s[kSTiles][4];
        __half const* kBase = sK[buf] + kr * kLds;
#pragma unroll
        for (int32_t j = 0; j < kSTiles; ++j)
        {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.F;
#pragma unroll
            for (int32_t kk = 0; kk < kKSteps; ++kk)
            {
                __half const* kp = kBase + (8 * j + g) * kLds + 16 * kk + 2 * t;
                uint32_t const b0 = *reinterpret_cast<uint32_t const*>(kp);
                uint32_t const b1 = *reinterpret_cast<uint32_t const*>(kp + 8);
                mma16816(s[j], qf[kk], b0, b1);
            }
        }

        // Online softmax in the log2 domain; each thread holds rows g and g + 8.
        int32_t const key0 = tile * kTile + 2 * t;
        float tileMax[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int32_t j = 0; j < kSTiles; ++j)
        {
#pragma unroll
            for (int32_t e = 0; e < 4; ++e)
            {
                bool const inRange = key0 + 8 * j + (e & 1) < p.seqLen;
                s[j][e] = inRange ? s[j][e] * scaleLog2 : -INFINITY;
                tileMax[e >> 1] = fmaxf(tileMax[e >> 1], s[j][e]);
            }
        }
        float alpha[2];
#pragma unroll
        for (int32_t r = 0; r < 2; ++r)
        {
            tileMax[r] = fmaxf(tileMax[r], __shfl_xor_sync(0xffffffffu, tileMax[r], 1));
            tileMax[r] = fmaxf(tileMax[r], __shfl_xor_sync(0xffffffffu, tileMax[r], 2));
            float const newMax = fmaxf(rowMax[r], tileMax[r]);
            // newMax is finite from the first tile on (its first key is always in range).
            alpha[r] = exp2f(rowMax[r] - newMax);
            rowMax[r] = newMax;
            rowSum[r] *= alpha[r];
        }
#pragma unroll
        for (int32_t j = 0; j < kOTiles; ++j)
        {
            o[j][0] *= alpha[0];
            o[j][1] *= alpha[0];
            o[j][2] *= alpha[1];
            o[j][3] *= alpha[1];
        }
#pragma unroll
        for (int32_t j = 0; j < kSTiles; ++j)
        {
#pragma unroll
            for (int32_t e = 0; e < 4; ++e)
            {
                s[j][e] = exp2f(s[j][e] - rowMax[e >> 1]);
                rowSum[e >> 1] += s[j][e];
            }
        }

        // O += P V; P's accumulator layout is reused as the A fragment.
        __half const* vBase = sV[buf] + kr * kLds;
#pragma unroll
        for (int32_t kk = 0; kk < kPSteps; ++kk)
        {
            uint32_t a[4];
            a[0] = packHalf2(s[2 * kk][0], s[2 * kk][1]);
            a[1] = packHalf2(s[2 * kk][2], s[2 * kk][3]);
            a[2] = packHalf2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            a[3] = packHalf2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int32_t jp = 0; jp < kOTiles / 2; ++jp)
            {
                uint32_t b[4];
                ldmatrixX4Trans(b, vBase + (16 * kk + (lane & 15)) * kLds + 16 * jp + 8 * (lane >> 4));
                mma16816(o[2 * jp], a, b[0], b[1]);
                mma16816(o[2 * jp + 1], a, b[2], b[3]);
            }
        }
        __syncthreads();
    }

    // Normalise, stage this warp's 16 x kHd output rows in its own rows of sQ, store coalesced.
    float inv[2];
#pragma unroll
    for (int32_t r = 0; r < 2; ++r)
    {
        float sum = rowSum[r];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        inv[r] = 1.F / sum;
    }
#pragma unroll
    for (int32_t j = 0; j < kOTiles; ++j)
    {
        __half* dst = sQ + (qr + g) * kLds + 8 * j + 2 * t;
        *reinterpret_cast<uint32_t*>(dst) = packHalf2(o[j][0] * inv[0], o[j][1] * inv[0]);
        *reinterpret_cast<uint32_t*>(dst + 8 * kLds) = packHalf2(o[j][2] * inv[1], o[j][3] * inv[1]);
    }
    __syncwarp();
    GroupPointers const gp = sGroups[group];
    if (!gp.valid)
    {
        return;
    }
    constexpr int32_t kChunksPerRow = kHd / kVec;
    int32_t const rowBase = gp.qRow0 + 16 * (warp % kWpg);
#pragma unroll
    for (int32_t i = lane; i < 16 * kChunksPerRow; i += 32)
    {
        int32_t const r = i / kChunksPerRow;
        int32_t const c = (i % kChunksPerRow) * kVec;
        int32_t const token = rowBase + r;
        if (token < p.seqLen && c < p.headDim)
        {
            storeChunk<kVec>(gp.o + token * p.oStride.token + c, sQ + (qr + r) * kLds + c);
        }
    }
}

// ------------------------------------------------------------------------------------------
// FP16, 32 < N <= 64: all keys of a pair fit in one 64-key tile, so the softmax needs no online
// rescaling. One CTA per work item = 16 * kRB query rows of one pair; the CTA is kRB x kSplit
// warps, warp (rb, kp) owning query rows 16*rb..16*rb+15 of the item and the kp-th of kSplit
// slices of the keys. Two shapes are used:
//   kRB = 4, kSplit = 1: a CTA per pair, each warp all 64 keys of its rows (K, V read once);
//   kRB = 1, kSplit = 4: four CTAs per pair, each warp 16 keys of 16 rows; for few pairs (small
//     batches) the launch spreads over 4x the multiprocessors and each warp's chain of dependent
//     instructions, which bounds a latency-bound launch, is a quarter as long. Every warp writes
//     its unnormalised partial (O, row max, row sum) to shared memory; all threads then merge
//     the slices and store 8-column chunks of the output.
// Q and K arrive in one cp.async group and V in a second, so S and the softmax are computed while
// V is still in flight. Fragments come through ldmatrix (x4: Q as A, K as B, V transposed as B).
// Loads: thread i copies column chunk i % kCpr of rows i / kCpr + n * kRowStep (fixed strides,
// a few instructions per 16-byte chunk). A full tile (N = 64) skips the key mask.
// ------------------------------------------------------------------------------------------
template <int32_t kHd, int32_t kRB, int32_t kSplit>
struct SingleTileShape
{
    static constexpr int32_t kTile = 64;                 // keys (and rows of K, V) per pair
    static constexpr int32_t kThreads = kRB * kSplit * 32;
    static constexpr int32_t kLds = kHd + 8;             // halves per smem row (conflict-free ldmatrix)
    static constexpr int32_t kQRows = 16 * kRB;          // query rows per item
    static constexpr int32_t kQBlocks = kTile / kQRows;  // items per pair
    static constexpr int32_t kKvElems = (kQRows + 2 * kTile) * kLds;
    static constexpr int32_t kXLd = kHd + 8;             // floats per row of a partial O
    static constexpr int32_t kSlotFloats = 16 * kXLd + 2 * 16; // partial O, row maxima, row sums
    static constexpr size_t kSmemBytes = static_cast<size_t>(kKvElems) * sizeof(__half)
        + (kSplit > 1 ? static_cast<size_t>(kRB) * kSplit * kSlotFloats * sizeof(float) : 0);
    static_assert(kTile % kQRows == 0, "an item holds query rows of one pair");
};

template <int32_t kHd, int32_t kRB, int32_t kSplit>
constexpr int32_t singleTileMinBlocks()
{
    // Cap registers where occupancy is the point: the CTA-per-pair shape serves large batches.
    return kRB == 4 && kSplit == 1 ? (kHd <= 32 ? 6 : (kHd == 48 ? 5 : 1)) : 1;
}

// Store the first min(8, limit) of 8 packed halves to dst in kVec-wide pieces (dst kVec-aligned).
template <int32_t kVec>
__device__ __forceinline__ void storeEight(__half* dst, uint32_t const (&pk)[4], int32_t limit)
{
    if constexpr (kVec == 8)
    {
        *reinterpret_cast<uint4*>(dst) = make_uint4(pk[0], pk[1], pk[2], pk[3]);
    }
    else if constexpr (kVec == 4)
    {
        *reinterpret_cast<uint2*>(dst) = make_uint2(pk[0], pk[1]);
        if (limit > 4)
        {
            *reinterpret_cast<uint2*>(dst + 4) = make_uint2(pk[2], pk[3]);
        }
    }
    else
    {
#pragma unroll
        for (int32_t e = 0; e < 4; ++e)
        {
            if constexpr (kVec == 2)
            {
                if (2 * e < limit)
                {
                    *reinterpret_cast<uint32_t*>(dst + 2 * e) = pk[e];
                }
            }
            else
            {
                __half2 const h = *reinterpret_cast<__half2 const*>(&pk[e]);
                if (2 * e < limit)
                {
                    dst[2 * e] = __low2half(h);
                }
                if (2 * e + 1 < limit)
                {
                    dst[2 * e + 1] = __high2half(h);
                }
            }
        }
    }
}

__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], void const* p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smemAddr(p)));
}

// 2^x with the MUFU unit (flushes denormal results to 0; only used on arguments <= 0).
__device__ __forceinline__ float fastExp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// Element offset of pair `pair`'s first row in a tensor with strides `s`.
__device__ __forceinline__ int64_t pairOffset(AttentionStrides const& s, int32_t pair, int32_t heads)
{
    int32_t const b = pair / heads;
    return b * s.batch + (pair - b * heads) * s.head;
}

// Issue the cp.async copies of matrices [whichBegin, whichEnd) (0 = this item's kQRows query rows
// from qRow0, 1 = K, 2 = V of its pair: 64 rows each) into shared memory (Q, K, V one after the
// other, rows of kLds halves), zero-filling rows past N, columns past the head dim and everything
// of a pair past the end. `tid`: this thread's index among the kThreads threads that load the item.
template <int32_t kHd, int32_t kThreads, int32_t kQRows, int32_t kLds, int32_t kVec>
__device__ __forceinline__ void loadSingleTileItem(__half* smem, AttentionParams<__half> const& p, int32_t pair,
    int32_t qRow0, bool pairValid, int32_t whichBegin, int32_t whichEnd, int32_t tid)
{
    constexpr int32_t kTile = 64;
    constexpr int32_t kCpr = kHd / kVec;
    constexpr int32_t kRowStep = kThreads / kCpr;
    static_assert(kRowStep >= 1, "at least one row per pass");
    int32_t const r0 = tid / kCpr;
    int32_t const c = (tid - r0 * kCpr) * kVec;
    if (r0 >= kRowStep)
    {
        return;
    }
    bool const ok = pairValid && c < p.headDim;
    int32_t const pairSafe = ok ? pair : 0;
#pragma unroll
    for (int32_t which = whichBegin; which < whichEnd; ++which)
    {
        __half const* const base = which == 0 ? p.q : (which == 1 ? p.k : p.v);
        AttentionStrides const& st = which == 0 ? p.qStride : (which == 1 ? p.kStride : p.vStride);
        int32_t const rows = which == 0 ? kQRows : kTile;
        int32_t const token0 = (which == 0 ? qRow0 : 0) + r0;
        __half const* src = base + pairOffset(st, pairSafe, p.heads) + token0 * st.token + (ok ? c : 0);
        __half* dst = smem + ((which == 0 ? 0 : kQRows + (which - 1) * kTile) + r0) * kLds + c;
        int64_t const srcStep = kRowStep * st.token;
#pragma unroll
        for (int32_t pass = 0; pass < (kTile + kRowStep - 1) / kRowStep; ++pass)
        {
            if (r0 + pass * kRowStep < rows)
            {
                bool const valid = ok && token0 + pass * kRowStep < p.seqLen;
                copyChunk<kVec>(dst, valid ? src : base, valid);
            }
            src += srcStep;
            dst += kRowStep * kLds;
        }
    }
}

// ---- Warp-level steps shared by the single-tile kernels (CTA per item, and the bulk two-pair
// kernel on Hopper): one warp owns 16 query rows against kSTiles * 8 keys of one 64-key tile.

// Q fragments (A operand of Q.K^T) of the warp's 16 rows starting at sRows.
template <int32_t kLds, int32_t kKSteps>
__device__ __forceinline__ void loadQFragments(uint32_t (&qf)[kKSteps][4], __half const* sRows, int32_t lane)
{
#pragma unroll
    for (int32_t kk = 0; kk < kKSteps; ++kk)
    {
        ldmatrixX4(qf[kk], sRows + (lane & 15) * kLds + 16 * kk + 8 * (lane >> 4));
    }
}

// S = Q K^T (unscaled, FP32) over the kSTiles * 8 keys whose rows start at sKeys.
template <int32_t kLds, int32_t kKSteps, int32_t kSTiles>
__device__ __forceinline__ void warpScores(
    float (&s)[kSTiles][4], uint32_t const (&qf)[kKSteps][4], __half const* sKeys, int32_t lane)
{
#pragma unroll
    for (int32_t j = 0; j < kSTiles; ++j)
    {
        s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.F;
    }
#pragma unroll
    for (int32_t jp = 0; jp < kSTiles / 2; ++jp)
    {
#pragma unroll
        for (int32_t kk = 0; kk < kKSteps; ++kk)
        {
            uint32_t b[4];
            ldmatrixX4(b, sKeys + (16 * jp + (lane & 7) + 8 * (lane >> 4)) * kLds + 16 * kk + 8 * ((lane >> 3) & 1));
            mma16816(s[2 * jp], qf[kk], b[0], b[1]);
            mma16816(s[2 * jp + 1], qf[kk], b[2], b[3]);
        }
    }
}

// Softmax numerators in place, in the log2 domain; a thread holds rows g and g + 8. With `mask`,
// the thread's keys at or past `keysLeft` (N minus the thread's first key) are -inf. The scale
// (> 0) is folded into the exponent: p = 2^(s*c - max*c). rowMax gets the rows' unscaled maxima
// over the warp's keys, rowSum the thread's partial sums (reduced by reduceRowSums). A warp with
// no key in range (a key slice past a short sequence) keeps max = -inf and P = 0.
template <int32_t kSTiles>
__device__ __forceinline__ void softmaxNumerators(float (&s)[kSTiles][4], bool mask, int32_t keysLeft,
    float scaleLog2, float (&rowMax)[2], float (&rowSum)[2])
{
    if (mask) // uniform branch: nothing to mask for a full tile
    {
#pragma unroll
        for (int32_t j = 0; j < kSTiles; ++j)
        {
#pragma unroll
            for (int32_t e = 0; e < 4; ++e)
            {
                s[j][e] = 8 * j + (e & 1) < keysLeft ? s[j][e] : -INFINITY;
            }
        }
    }
    rowMax[0] = rowMax[1] = -INFINITY;
#pragma unroll
    for (int32_t j = 0; j < kSTiles; ++j)
    {
#pragma unroll
        for (int32_t e = 0; e < 4; ++e)
        {
            rowMax[e >> 1] = fmaxf(rowMax[e >> 1], s[j][e]);
        }
    }
    float ref[2];
#pragma unroll
    for (int32_t r = 0; r < 2; ++r)
    {
        rowMax[r] = fmaxf(rowMax[r], __shfl_xor_sync(0xffffffffu, rowMax[r], 1));
        rowMax[r] = fmaxf(rowMax[r], __shfl_xor_sync(0xffffffffu, rowMax[r], 2));
        ref[r] = rowMax[r] == -INFINITY ? 0.F : rowMax[r] * scaleLog2;
    }
    rowSum[0] = rowSum[1] = 0.F;
#pragma unroll
    for (int32_t j = 0; j < kSTiles; ++j)
    {
#pragma unroll
        for (int32_t e = 0; e < 4; ++e)
        {
            s[j][e] = fastExp2(fmaf(s[j][e], scaleLog2, -ref[e >> 1]));
            rowSum[e >> 1] += s[j][e];
        }
    }
}

// O = P V over 16 * kPSteps keys whose rows start at sValues; P's accumulator layout is reused as
// the A fragment. beforeStep(kk) runs before k-step kk (where a kernel waits for those V rows).
template <int32_t kLds, int32_t kPSteps, int32_t kOTiles, int32_t kSTiles, typename BeforeStep>
__device__ __forceinline__ void warpContext(float (&o)[kOTiles][4], float const (&s)[kSTiles][4],
    __half const* sValues, int32_t lane, BeforeStep beforeStep)
{
    static_assert(kSTiles == 2 * kPSteps, "P covers the keys of the P.V k-steps");
#pragma unroll
    for (int32_t j = 0; j < kOTiles; ++j)
    {
        o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.F;
    }
#pragma unroll
    for (int32_t kk = 0; kk < kPSteps; ++kk)
    {
        beforeStep(kk);
        uint32_t a[4];
        a[0] = packHalf2(s[2 * kk][0], s[2 * kk][1]);
        a[1] = packHalf2(s[2 * kk][2], s[2 * kk][3]);
        a[2] = packHalf2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        a[3] = packHalf2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int32_t jp = 0; jp < kOTiles / 2; ++jp)
        {
            uint32_t b[4];
            ldmatrixX4Trans(b, sValues + (16 * kk + (lane & 15)) * kLds + 16 * jp + 8 * (lane >> 4));
            mma16816(o[2 * jp], a, b[0], b[1]);
            mma16816(o[2 * jp + 1], a, b[2], b[3]);
        }
    }
}

// Sum each row's partial sums over the 4 threads that hold it.
__device__ __forceinline__ void reduceRowSums(float (&rowSum)[2])
{
#pragma unroll
    for (int32_t r = 0; r < 2; ++r)
    {
        rowSum[r] += __shfl_xor_sync(0xffffffffu, rowSum[r], 1);
        rowSum[r] += __shfl_xor_sync(0xffffffffu, rowSum[r], 2);
    }
}

// Normalise the warp's 16 x kHd output rows, stage them in the warp's own shared-memory rows sRows
// (its Q fragments are in registers by now), store them to rows token0.. of out with kVec-wide
// coalesced writes (rows past N and columns past the head dim are not written).
template <int32_t kHd, int32_t kLds, int32_t kVec, int32_t kOTiles>
__device__ __forceinline__ void storeWarpRows(float const (&o)[kOTiles][4], float const (&rowSum)[2], __half* sRows,
    __half* out, int64_t tokenStride, int32_t token0, int32_t seqLen, int32_t headDim, int32_t lane)
{
    constexpr int32_t kCpr = kHd / kVec;
    int32_t const g = lane / 4;
    int32_t const t = lane % 4;
    float const inv[2] = {1.F / rowSum[0], 1.F / rowSum[1]};
    __syncwarp();
#pragma unroll
    for (int32_t j = 0; j < kOTiles; ++j)
    {
        __half* dst = sRows + g * kLds + 8 * j + 2 * t;
        *reinterpret_cast<uint32_t*>(dst) = packHalf2(o[j][0] * inv[0], o[j][1] * inv[0]);
        *reinterpret_cast<uint32_t*>(dst + 8 * kLds) = packHalf2(o[j][2] * inv[1], o[j][3] * inv[1]);
    }
    __syncwarp();
#pragma unroll
    for (int32_t i = lane; i < 16 * kCpr; i += 32)
    {
        int32_t const r = i / kCpr;
        int32_t const c = (i - r * kCpr) * kVec;
        int32_t const token = token0 + r;
        if (token < seqLen && c < headDim)
        {
            storeChunk<kVec>(out + token * tokenStride + c, sRows + r * kLds + c);
        }
    }
}

template <int32_t kHd, int32_t kRB, int32_t kSplit, int32_t kVec>
__global__ void __launch_bounds__(kRB * kSplit * 32, singleTileMinBlocks<kHd, kRB, kSplit>())
    attentionF16SingleTileKernel(AttentionParams<__half> p, float scaleLog2, int32_t totalPairs)
{
    using Sh = SingleTileShape<kHd, kRB, kSplit>;
    constexpr int32_t kLds = Sh::kLds;
    constexpr int32_t kKeys = Sh::kTile / kSplit; // keys per warp
    constexpr int32_t kKSteps = kHd / 16;         // k-steps of Q.K^T
    constexpr int32_t kSTiles = kKeys / 8;        // n-tiles of S
    constexpr int32_t kPSteps = kKeys / 16;       // k-steps of P.V
    constexpr int32_t kOTiles = kHd / 8;          // n-tiles of O
    static_assert(kKeys % 16 == 0 && kSTiles % 2 == 0, "each warp needs whole 16-key steps");

    extern __shared__ __align__(16) unsigned char smemRaw[];
    __half* const sQ = reinterpret_cast<__half*>(smemRaw);
    __half const* const sK = sQ + Sh::kQRows * kLds;
    __half const* const sV = sK + Sh::kTile * kLds;

    int32_t const warp = threadIdx.x / 32;
    int32_t const lane = threadIdx.x % 32;
    int32_t const g = lane / 4;
    int32_t const t = lane % 4;
    int32_t const rb = warp % kRB;       // 16-row block of the item
    int32_t const kp = warp / kRB;       // key slice
    int32_t const firstKey = kp * kKeys; // first key (row of sK / sV) of this warp's slice
    int32_t const pair = static_cast<int32_t>(blockIdx.x) / Sh::kQBlocks;
    int32_t const qRow0 = (static_cast<int32_t>(blockIdx.x) - pair * Sh::kQBlocks) * Sh::kQRows;
    bool const pairValid = pair < totalPairs;

    int32_t const tid = static_cast<int32_t>(threadIdx.x);
    loadSingleTileItem<kHd, Sh::kThreads, Sh::kQRows, kLds, kVec>(sQ, p, pair, qRow0, pairValid, 0, 2, tid);
    cpAsyncCommit();
    loadSingleTileItem<kHd, Sh::kThreads, Sh::kQRows, kLds, kVec>(sQ, p, pair, qRow0, pairValid, 2, 3, tid);
    cpAsyncCommit();
    cpAsyncWait<1>(); // Q and K
    __syncthreads();

    uint32_t qf[kKSteps][4];
    loadQFragments<kLds>(qf, sQ + 16 * rb * kLds, lane);
    float s[kSTiles][4];
    warpScores<kLds>(s, qf, sK + firstKey * kLds, lane);
    float rowMax[2];
    float rowSum[2];
    softmaxNumerators(s, p.seqLen < Sh::kTile, p.seqLen - firstKey - 2 * t, scaleLog2, rowMax, rowSum);

    cpAsyncWait<0>(); // V
    __syncthreads();

    float o[kOTiles][4];
    warpContext<kLds, kPSteps>(o, s, sV + firstKey * kLds, lane, [](int32_t) {});
    reduceRowSums(rowSum);
    if (!pairValid)
    {
        return; // uniform across the CTA: no barrier follows that others would wait on
    }
    __half* const out = p.o + pairOffset(p.oStride, pair, p.heads);

    if constexpr (kSplit == 1)
    {
        storeWarpRows<kHd, kLds, kVec>(
            o, rowSum, sQ + 16 * rb * kLds, out, p.oStride.token, qRow0 + 16 * rb, p.seqLen, p.headDim, lane);
    }
    else
    {
        // Every warp writes its partial; then all threads merge the kSplit slices of one
        // (row, 8 columns) chunk each and store it.
        float* const xchg = reinterpret_cast<float*>(smemRaw + Sh::kKvElems * sizeof(__half));
        float* const slot = xchg + (kp * kRB + rb) * Sh::kSlotFloats;
#pragma unroll
        for (int32_t j = 0; j < kOTiles; ++j)
        {
            *reinterpret_cast<float2*>(slot + g * Sh::kXLd + 8 * j + 2 * t) = make_float2(o[j][0], o[j][1]);
            *reinterpret_cast<float2*>(slot + (g + 8) * Sh::kXLd + 8 * j + 2 * t) = make_float2(o[j][2], o[j][3]);
        }
        if (t == 0)
        {
            // The slice's max in the exponent's units; -inf for a slice with no key in range,
            // so that the merge's max comes from slices that have keys.
            slot[16 * Sh::kXLd + g] = rowMax[0] * scaleLog2;
            slot[16 * Sh::kXLd + g + 8] = rowMax[1] * scaleLog2;
            slot[16 * Sh::kXLd + 16 + g] = rowSum[0];
            slot[16 * Sh::kXLd + 16 + g + 8] = rowSum[1];
        }
        __syncthreads();
        constexpr int32_t kMergeChunks = kRB * 16 * (kHd / 8);
#pragma unroll
        for (int32_t i = threadIdx.x; i < kMergeChunks; i += Sh::kThreads)
        {
            int32_t const row = i / (kHd / 8); // row of the item, 0 .. 16 * kRB - 1
            int32_t const c = (i - row * (kHd / 8)) * 8;
            int32_t const token = qRow0 + row;
            float const* const base = xchg + (row / 16) * Sh::kSlotFloats;
            int32_t const r = row % 16;
            float m = -INFINITY;
#pragma unroll
            for (int32_t sl = 0; sl < kSplit; ++sl)
            {
                m = fmaxf(m, base[sl * kRB * Sh::kSlotFloats + 16 * Sh::kXLd + r]);
            }
            float acc[8] = {0.F, 0.F, 0.F, 0.F, 0.F, 0.F, 0.F, 0.F};
            float sum = 0.F;
#pragma unroll
            for (int32_t sl = 0; sl < kSplit; ++sl)
            {
                float const* const x = base + sl * kRB * Sh::kSlotFloats;
                // Slice 0 holds key 0, so m is finite; an all-masked slice gets factor 0.
                float const f = fastExp2(x[16 * Sh::kXLd + r] - m);
                sum = fmaf(x[16 * Sh::kXLd + 16 + r], f, sum);
                float4 const lo = *reinterpret_cast<float4 const*>(x + r * Sh::kXLd + c);
                float4 const hi = *reinterpret_cast<float4 const*>(x + r * Sh::kXLd + c + 4);
                acc[0] = fmaf(lo.x, f, acc[0]);
                acc[1] = fmaf(lo.y, f, acc[1]);
                acc[2] = fmaf(lo.z, f, acc[2]);
                acc[3] = fmaf(lo.w, f, acc[3]);
                acc[4] = fmaf(hi.x, f, acc[4]);
                acc[5] = fmaf(hi.y, f, acc[5]);
                acc[6] = fmaf(hi.z, f, acc[6]);
                acc[7] = fmaf(hi.w, f, acc[7]);
            }
            float const inv = 1.F / sum;
            uint32_t pk[4];
#pragma unroll
            for (int32_t e = 0; e < 4; ++e)
            {
                pk[e] = packHalf2(acc[2 * e] * inv, acc[2 * e + 1] * inv);
            }
            if (token < p.seqLen && c < p.headDim)
            {
                storeEight<kVec>(out + token * p.oStride.token + c, pk, p.headDim - c);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// FP16, 32 < N <= 64 on Hopper, 1.5 to 4 pairs per SM (one wave): attentionF16BulkPairKernel.
// kPairs pairs per CTA, a group of 4 warps per pair, warp w of a group owning query rows
// 16w..16w+15 against all 64 keys (the arithmetic of the CTA-per-pair shape above). Thread 0 brings
// in Q and K of every pair of the CTA, then V of every pair in halves of 32 rows, with
// cp.async.bulk (one instruction per contiguous [rows, 48] block; bulkLoadPairs), so each SM's
// loads are all in flight at once after a handful of instructions, S and the softmax of both pairs
// overlap V's arrival, and P.V of keys 0-31 starts before keys 32-63 land. Shared memory per pair:
// Q, K, V of 64 unpadded rows of kHd halves (96-byte rows: ldmatrix 2-way bank conflicts), then
// the mbarriers (Q+K, V rows 0-31, V rows 32-63 of each pair).
// ------------------------------------------------------------------------------------------
template <int32_t kHd, int32_t kPairs>
struct BulkPairShape
{
    static constexpr int32_t kThreads = 128 * kPairs;
    static constexpr int32_t kLds = kHd;
    static constexpr int32_t kPairElems = 3 * 64 * kLds;
    static constexpr size_t kBarrierOffset = static_cast<size_t>(kPairs) * kPairElems * sizeof(__half);
    static constexpr size_t kSmemBytes = kBarrierOffset + 3 * kPairs * sizeof(uint64_t);
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void mbarrierInit(uint64_t* bar, uint32_t count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smemAddr(bar)), "r"(count) : "memory");
}

// Arrive on `bar` and add `bytes` to the transaction count its current phase waits for.
__device__ __forceinline__ void mbarrierArriveExpectTx(uint64_t* bar, uint32_t bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smemAddr(bar)), "r"(bytes)
                 : "memory");
}

__device__ __forceinline__ void mbarrierWait(uint64_t* bar, uint32_t parity)
{
    asm volatile(
        "{\n"
        ".reg .pred done;\n"
        "WAIT_%=:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra WAIT_%=;\n"
        "}\n" ::"r"(smemAddr(bar)),
        "r"(parity)
        : "memory");
}

// One bulk copy (TMA, no tensor map) of `bytes` (a multiple of 16; both ends 16-byte aligned) from
// global to shared memory, completing as transactions on `bar`.
__device__ __forceinline__ void bulkCopyToShared(void* dst, void const* src, uint32_t bytes, uint64_t* bar)
{
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
            smemAddr(dst)),
        "l"(src), "r"(bytes), "r"(smemAddr(bar))
        : "memory");
}

// Thread 0 of the CTA issues the bulk copies of its kPairs pairs (Q, K, V each one contiguous block
// of N rows of kHd halves): first Q and K of every pair, then V of every pair in two halves of 32
// rows, each on its own mbarrier (arrival counts 1, so every barrier completes even for a pair past
// the end, which copies nothing). Rows of V past N are zeroed first: P is 0 there, but 0 times
// stale shared memory may be NaN.
template <int32_t kHd, int32_t kPairs>
__device__ __forceinline__ void bulkLoadPairs(
    unsigned char* smemRaw, AttentionParams<__half> const& p, int32_t firstPair, int32_t totalPairs)
{
    using Sh = BulkPairShape<kHd, kPairs>;
    uint64_t* const bar = reinterpret_cast<uint64_t*>(smemRaw + Sh::kBarrierOffset);
    __half* const smem = reinterpret_cast<__half*>(smemRaw);
    if (p.seqLen < 64)
    {
        int32_t const tailWords = (64 - p.seqLen) * kHd / 2;
        for (int32_t i = static_cast<int32_t>(threadIdx.x); i < kPairs * tailWords; i += Sh::kThreads)
        {
            int32_t const pr = i / tailWords;
            reinterpret_cast<uint32_t*>(smem + pr * Sh::kPairElems + (128 + p.seqLen) * kHd)[i - pr * tailWords] = 0U;
        }
    }
    if (threadIdx.x == 0)
    {
#pragma unroll
        for (int32_t i = 0; i < 3 * kPairs; ++i)
        {
            mbarrierInit(&bar[i], 1);
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    if (threadIdx.x != 0)
    {
        return;
    }
    uint32_t const bytes = static_cast<uint32_t>(p.seqLen) * kHd * sizeof(__half);
    uint32_t const firstHalf = 32 * kHd * sizeof(__half); // N > 32 here
#pragma unroll
    for (int32_t i = 0; i < kPairs; ++i)
    {
        bool const valid = firstPair + i < totalPairs;
        __half* const dst = smem + i * Sh::kPairElems;
        mbarrierArriveExpectTx(&bar[3 * i], valid ? 2 * bytes : 0);
        if (valid)
        {
            bulkCopyToShared(dst, p.q + pairOffset(p.qStride, firstPair + i, p.heads), bytes, &bar[3 * i]);
            bulkCopyToShared(dst + 64 * kHd, p.k + pairOffset(p.kStride, firstPair + i, p.heads), bytes, &bar[3 * i]);
        }
    }
#pragma unroll
    for (int32_t i = 0; i < kPairs; ++i)
    {
        bool const valid = firstPair + i < totalPairs;
        __half* const dst = smem + i * Sh::kPairElems + 128 * kHd;
        mbarrierArriveExpectTx(&bar[3 * i + 1], valid ? firstHalf : 0);
        mbarrierArriveExpectTx(&bar[3 * i + 2], valid ? bytes - firstHalf : 0);
        if (valid)
        {
            __half const* const src = p.v + pairOffset(p.vStride, firstPair + i, p.heads);
            bulkCopyToShared(dst, src, firstHalf, &bar[3 * i + 1]);
            bulkCopyToShared(dst + 32 * kHd, src + 32 * kHd, bytes - firstHalf, &bar[3 * i + 2]);
        }
    }
}
#endif

// See above BulkPairShape. Built for an architecture before sm_90, the kernel loads with cp.async
// instead (each group its own pair, the groups synchronised CTA-wide), so it is correct anywhere.
template <int32_t kHd, int32_t kVec, int32_t kPairs>
__global__ void __launch_bounds__(128 * kPairs, 2)
    attentionF16BulkPairKernel(AttentionParams<__half> p, float scaleLog2, int32_t totalPairs)
{
    using Sh = BulkPairShape<kHd, kPairs>;
    constexpr int32_t kLds = Sh::kLds;
    constexpr int32_t kKSteps = kHd / 16; // k-steps of Q.K^T
    constexpr int32_t kSTiles = 8;        // n-tiles of S (64 keys)
    constexpr int32_t kPSteps = 4;        // k-steps of P.V
    constexpr int32_t kOTiles = kHd / 8;  // n-tiles of O
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    constexpr bool kUseBulk = true;
#else
    constexpr bool kUseBulk = false;
#endif

    extern __shared__ __align__(16) unsigned char smemRaw[];
    int32_t const grp = static_cast<int32_t>(threadIdx.x) / 128;
    int32_t const tid = static_cast<int32_t>(threadIdx.x) % 128;
    __half* const sQ = reinterpret_cast<__half*>(smemRaw) + grp * Sh::kPairElems;
    __half const* const sK = sQ + 64 * kLds;
    __half const* const sV = sK + 64 * kLds;
    int32_t const warp = tid / 32;
    int32_t const lane = tid % 32;
    int32_t const t = lane % 4;
    int32_t const pair = static_cast<int32_t>(blockIdx.x) * kPairs + grp;
    bool const pairValid = pair < totalPairs;

    if constexpr (kUseBulk)
    {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        bulkLoadPairs<kHd, kPairs>(smemRaw, p, static_cast<int32_t>(blockIdx.x) * kPairs, totalPairs);
        mbarrierWait(reinterpret_cast<uint64_t*>(smemRaw + Sh::kBarrierOffset) + 3 * grp, 0); // Q and K
#endif
    }
    else
    {
        loadSingleTileItem<kHd, 128, 64, kLds, kVec>(sQ, p, pair, 0, pairValid, 0, 2, tid);
        cpAsyncCommit();
        loadSingleTileItem<kHd, 128, 64, kLds, kVec>(sQ, p, pair, 0, pairValid, 2, 3, tid);
        cpAsyncCommit();
        cpAsyncWait<1>(); // Q and K
        __syncthreads();
    }

    uint32_t qf[kKSteps][4];
    loadQFragments<kLds>(qf, sQ + 16 * warp * kLds, lane);
    float s[kSTiles][4];
    warpScores<kLds>(s, qf, sK, lane);
    // ptxas schedules the softmax's exponentials among the P.V MMAs after the V wait; pinning
    // them before it (a shared-memory store of their results) was slower at every batch measured
    // (benchmarks/kernels_h100.md, v4).
    float rowMax[2];
    float rowSum[2];
    softmaxNumerators(s, p.seqLen < 64, p.seqLen - 2 * t, scaleLog2, rowMax, rowSum);

    if constexpr (!kUseBulk)
    {
        cpAsyncWait<0>(); // V
        __syncthreads();
    }

    float o[kOTiles][4];
    warpContext<kLds, kPSteps>(o, s, sV, lane, [&]([[maybe_unused]] int32_t kk) {
        if constexpr (kUseBulk)
        {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
            if (kk % 2 == 0) // V rows 0-31, then 32-63
            {
                mbarrierWait(reinterpret_cast<uint64_t*>(smemRaw + Sh::kBarrierOffset) + 3 * grp + 1 + kk / 2, 0);
            }
#endif
        }
    });
    reduceRowSums(rowSum);
    if (!pairValid)
    {
        return; // no barrier follows
    }
    storeWarpRows<kHd, kLds, kVec>(o, rowSum, sQ + 16 * warp * kLds, p.o + pairOffset(p.oStride, pair, p.heads),
        p.oStride.token, 16 * warp, p.seqLen, p.headDim, lane);
}

// ------------------------------------------------------------------------------------------
// FP32: exact FP32 arithmetic (no TF32), one thread per query row, K/V tiles of 64 keys in
// shared memory, online softmax over chunks of 16 keys.
// ------------------------------------------------------------------------------------------
constexpr int32_t kF32Threads = 64;
constexpr int32_t kF32Tile = 64;
constexpr int32_t kF32Chunk = 16;

template <int32_t kHd>
__global__ void __launch_bounds__(kF32Threads) attentionF32Kernel(AttentionParams<float> p, int32_t qBlocks)
{
    __shared__ float sK[kF32Tile][kHd];
    __shared__ float sV[kF32Tile][kHd];
    int32_t const pair = blockIdx.x / qBlocks;
    int32_t const s = pair / p.heads;
    int32_t const h = pair % p.heads;
    int32_t const token = (blockIdx.x % qBlocks) * kF32Threads + threadIdx.x;
    float const* qp = p.q + s * p.qStride.batch + h * p.qStride.head;
    float const* kp = p.k + s * p.kStride.batch + h * p.kStride.head;
    float const* vp = p.v + s * p.vStride.batch + h * p.vStride.head;
    float* op = p.o + s * p.oStride.batch + h * p.oStride.head;
    bool const rowValid = token < p.seqLen;

    float q[kHd];
    float acc[kHd];
#pragma unroll
    for (int32_t d = 0; d < kHd; ++d)
    {
        q[d] = (rowValid && d < p.headDim) ? qp[token * p.qStride.token + d] * p.scale : 0.F;
        acc[d] = 0.F;
    }
    float rowMax = -INFINITY;
    float rowSum = 0.F;
    for (int32_t k0 = 0; k0 < p.seqLen; k0 += kF32Tile)
    {
        __syncthreads();
        for (int32_t i = threadIdx.x; i < kF32Tile * kHd; i += kF32Threads)
        {
            int32_t const r = i / kHd;
            int32_t const d = i % kHd;
            bool const ok = k0 + r < p.seqLen && d < p.headDim;
            sK[r][d] = ok ? kp[(k0 + r) * p.kStride.token + d] : 0.F;
            sV[r][d] = ok ? vp[(k0 + r) * p.vStride.token + d] : 0.F;
        }
        __syncthreads();
        int32_t const keys = min(kF32Tile, p.seqLen - k0);
        for (int32_t c0 = 0; c0 < keys; c0 += kF32Chunk)
        {
            float sc[kF32Chunk];
            float chunkMax = -INFINITY;
#pragma unroll
            for (int32_t j = 0; j < kF32Chunk; ++j)
            {
                float dot = 0.F;
#pragma unroll
                for (int32_t d = 0; d < kHd; ++d)
                {
                    dot = fmaf(q[d], sK[c0 + j][d], dot);
                }
                sc[j] = (c0 + j < keys) ? dot : -INFINITY;
                chunkMax = fmaxf(chunkMax, sc[j]);
            }
            float const newMax = fmaxf(rowMax, chunkMax);
            float const alpha = expf(rowMax - newMax);
            rowMax = newMax;
            rowSum *= alpha;
#pragma unroll
            for (int32_t d = 0; d < kHd; ++d)
            {
                acc[d] *= alpha;
            }
#pragma unroll
            for (int32_t j = 0; j < kF32Chunk; ++j)
            {
                float const pj = expf(sc[j] - newMax);
                rowSum += pj;
#pragma unroll
                for (int32_t d = 0; d < kHd; ++d)
                {
                    acc[d] = fmaf(pj, sV[c0 + j][d], acc[d]);
                }
            }
        }
    }
    if (!rowValid)
    {
        return;
    }
    float const inv = 1.F / rowSum;
#pragma unroll
    for (int32_t d = 0; d < kHd; ++d)
    {
        if (d < p.headDim)
        {
            op[token * p.oStride.token + d] = acc[d] * inv;
        }
    }
}

int32_t paddedHeadDim(int32_t headDim)
{
    return (headDim + 15) / 16 * 16;
}

template <typename T>
bool validParams(AttentionParams<T> const& p)
{
    return p.q != nullptr && p.k != nullptr && p.v != nullptr && p.o != nullptr && p.batch >= 0 && p.heads >= 1
        && p.seqLen >= 1 && p.seqLen <= kAttentionMaxSeqLen && p.headDim >= kAttentionMinHeadDim
        && p.headDim <= kAttentionMaxHeadDim && p.scale > 0.F;
}

bool stridesDivisible(AttentionStrides const& s, int32_t v)
{
    return s.batch % v == 0 && s.head % v == 0 && s.token % v == 0;
}

int32_t f16VectorWidth(AttentionParams<__half> const& p)
{
    for (int32_t v : {8, 4, 2})
    {
        unsigned const bytes = static_cast<unsigned>(v * sizeof(__half));
        if (p.headDim % v == 0 && stridesDivisible(p.qStride, v) && stridesDivisible(p.kStride, v)
            && stridesDivisible(p.vStride, v) && stridesDivisible(p.oStride, v) && isAligned(p.q, bytes)
            && isAligned(p.k, bytes) && isAligned(p.v, bytes) && isAligned(p.o, bytes))
        {
            return v;
        }
    }
    return 1;
}

template <int32_t kHd, int32_t kWpg, int32_t kVec, int32_t kStages>
cudaError_t launchF16(AttentionParams<__half> const& p, cudaStream_t stream)
{
    constexpr int32_t kGroups = kWarps / kWpg;
    constexpr int32_t kTile = 16 * kWpg;
    int32_t const qBlocks = (p.seqLen + kTile - 1) / kTile;
    int64_t const items = static_cast<int64_t>(p.batch) * p.heads * qBlocks;
    int64_t const blocks = (items + kGroups - 1) / kGroups;
    MVT_CHECK_ARG(items <= 0x7fffffffLL, cudaErrorInvalidValue);
    attentionF16Kernel<kHd, kWpg, kVec, kStages><<<static_cast<uint32_t>(blocks), kThreads, 0, stream>>>(
        p, p.scale * kLog2e, qBlocks, static_cast<int32_t>(items));
    return lastLaunchStatus();
}

template <int32_t kHd, int32_t kWpg, int32_t kStages>
cudaError_t dispatchVec(int32_t vec, AttentionParams<__half> const& p, cudaStream_t stream)
{
    switch (vec)
    {
    case 8: return launchF16<kHd, kWpg, 8, kStages>(p, stream);
    case 4: return launchF16<kHd, kWpg, 4, kStages>(p, stream);
    case 2: return launchF16<kHd, kWpg, 2, kStages>(p, stream);
    default: return launchF16<kHd, kWpg, 1, kStages>(p, stream);
    }
}


template <int32_t kHd, int32_t kRB, int32_t kSplit, int32_t kVec>
cudaError_t launchSingleTile(AttentionParams<__half> const& p, cudaStream_t stream)
{
    using Sh = SingleTileShape<kHd, kRB, kSplit>;
    static_assert(Sh::kSmemBytes <= 48 * 1024, "static launch without an opt-in shared-memory size");
    int64_t const pairs = static_cast<int64_t>(p.batch) * p.heads;
    int64_t const blocks = pairs * Sh::kQBlocks;
    MVT_CHECK_ARG(blocks <= 0x7fffffffLL, cudaErrorInvalidValue);
    attentionF16SingleTileKernel<kHd, kRB, kSplit, kVec><<<static_cast<uint32_t>(blocks), Sh::kThreads,
        Sh::kSmemBytes, stream>>>(p, p.scale * kLog2e, static_cast<int32_t>(pairs));
    return lastLaunchStatus();
}

template <int32_t kHd, int32_t kVec, int32_t kPairs>
cudaError_t launchBulkPairs(AttentionParams<__half> const& p, cudaStream_t stream)
{
    using Sh = BulkPairShape<kHd, kPairs>;
    static_assert(Sh::kSmemBytes <= 48 * 1024, "static launch without an opt-in shared-memory size");
    int64_t const pairs = static_cast<int64_t>(p.batch) * p.heads;
    int64_t const blocks = (pairs + kPairs - 1) / kPairs;
    MVT_CHECK_ARG(pairs <= 0x7fffffffLL, cudaErrorInvalidValue);
    attentionF16BulkPairKernel<kHd, kVec, kPairs><<<static_cast<uint32_t>(blocks), Sh::kThreads,
        Sh::kSmemBytes, stream>>>(p, p.scale * kLog2e, static_cast<int32_t>(pairs));
    return lastLaunchStatus();
}

// The two-pair bulk-copy kernel (Hopper) serves contiguous [N, 48] Q, K and V (the separate layout
// at hd = 48: MobileViT-S's N = 64 stage) from 1.5 to 4 pairs per multiprocessor (bounds in
// quarters), where it measured faster than a CTA per pair on the H100 (B = 16, 24, 32 at
// MobileViT-S); below and above it was slower (benchmarks/kernels_h100.md, v4).
constexpr int64_t kBulkMinQuarterPairsPerSm = 6;  // 1.5 pairs per SM
constexpr int64_t kBulkMaxQuarterPairsPerSm = 16; // 4 pairs per SM

bool useBulkPairs(AttentionParams<__half> const& p, int64_t pairs)
{
    int64_t const sms = multiProcessorCount();
    return p.headDim == 48 && p.qStride.token == 48 && p.kStride.token == 48 && p.vStride.token == 48
        && 4 * pairs >= kBulkMinQuarterPairsPerSm * sms && 4 * pairs <= kBulkMaxQuarterPairsPerSm * sms
        && computeCapabilityMajor() >= 9;
}

template <int32_t kHd, int32_t kVec>
cudaError_t launchSingleTileBySize(AttentionParams<__half> const& p, cudaStream_t stream)
{
    // Few pairs (small batches): a CTA per 16 query rows, its 4 warps splitting the 64 keys, so
    // the launch spreads over 4x the multiprocessors and each warp's dependent chain is short.
    // Otherwise a CTA per pair, 4 warps of 16 query rows each over all keys: K and V are read
    // once per pair instead of 4 times, which is what counts once the chip is full.
    int64_t const pairs = static_cast<int64_t>(p.batch) * p.heads;
    if (pairs * 4 <= static_cast<int64_t>(multiProcessorCount()))
    {
        return launchSingleTile<kHd, 1, 4, kVec>(p, stream);
    }
    if constexpr (kHd == 48 && kVec == 8) // 16-byte aligned rows and pair offsets
    {
        if (useBulkPairs(p, pairs))
        {
            return launchBulkPairs<48, 8, 2>(p, stream);
        }
    }
    return launchSingleTile<kHd, 4, 1, kVec>(p, stream);
}

// 32 < N <= 64: the single-tile kernel.
template <int32_t kHd>
cudaError_t dispatchSingleTile(int32_t vec, AttentionParams<__half> const& p, cudaStream_t stream)
{
    switch (vec)
    {
    case 8: return launchSingleTileBySize<kHd, 8>(p, stream);
    case 4: return launchSingleTileBySize<kHd, 4>(p, stream);
    case 2: return launchSingleTileBySize<kHd, 2>(p, stream);
    default: return launchSingleTileBySize<kHd, 1>(p, stream);
    }
}

template <int32_t kHd>
cudaError_t dispatchWpg(int32_t vec, AttentionParams<__half> const& p, cudaStream_t stream)
{
    // Short sequences: one key tile, groups sized to the sequence (several pairs per CTA).
    if (p.seqLen <= 16)
    {
        return dispatchVec<kHd, 1, 1>(vec, p, stream);
    }
    if (p.seqLen <= 32)
    {
        return dispatchVec<kHd, 2, 1>(vec, p, stream);
    }
    if (p.seqLen <= 64)
    {
        return dispatchSingleTile<kHd>(vec, p, stream);
    }
    return dispatchVec<kHd, 4, 2>(vec, p, stream);
}

template <int32_t kHd>
cudaError_t launchF32(AttentionParams<float> const& p, cudaStream_t stream)
{
    int32_t const qBlocks = (p.seqLen + kF32Threads - 1) / kF32Threads;
    int64_t const blocks = static_cast<int64_t>(p.batch) * p.heads * qBlocks;
    MVT_CHECK_ARG(blocks <= 0x7fffffffLL, cudaErrorInvalidValue);
    attentionF32Kernel<kHd><<<static_cast<uint32_t>(blocks), kF32Threads, 0, stream>>>(p, qBlocks);
    return lastLaunchStatus();
}
} // namespace

AttentionStrides separateLayoutStrides(int32_t heads, int32_t seqLen, int32_t headDim)
{
    int64_t const token = headDim;
    int64_t const head = token * seqLen;
    return AttentionStrides{head * heads, head, token};
}

template <typename T>
AttentionParams<T> packedLayoutParams(
    T const* qkv, T* o, int32_t batch, int32_t heads, int32_t seqLen, int32_t headDim, float scale)
{
    AttentionParams<T> p;
    int64_t const c = static_cast<int64_t>(heads) * headDim;
    p.q = qkv;
    p.k = qkv == nullptr ? nullptr : qkv + c;
    p.v = qkv == nullptr ? nullptr : qkv + 2 * c;
    p.o = o;
    p.qStride = AttentionStrides{3 * c * seqLen, headDim, 3 * c};
    p.kStride = p.qStride;
    p.vStride = p.qStride;
    p.oStride = AttentionStrides{c * seqLen, headDim, c};
    p.batch = batch;
    p.heads = heads;
    p.seqLen = seqLen;
    p.headDim = headDim;
    p.scale = scale;
    return p;
}

template <typename T>
AttentionParams<T> separateLayoutParams(T const* q, T const* k, T const* v, T* o, int32_t batch, int32_t heads,
    int32_t seqLen, int32_t headDim, float scale)
{
    AttentionParams<T> p;
    p.q = q;
    p.k = k;
    p.v = v;
    p.o = o;
    p.qStride = separateLayoutStrides(heads, seqLen, headDim);
    p.kStride = p.qStride;
    p.vStride = p.qStride;
    p.oStride = p.qStride;
    p.batch = batch;
    p.heads = heads;
    p.seqLen = seqLen;
    p.headDim = headDim;
    p.scale = scale;
    return p;
}

template <>
cudaError_t launchAttention<__half>(AttentionParams<__half> const& p, cudaStream_t stream)
{
    MVT_CHECK_ARG(validParams(p), cudaErrorInvalidValue);
    if (p.batch == 0)
    {
        return cudaSuccess;
    }
    int32_t const vec = f16VectorWidth(p);
    switch (paddedHeadDim(p.headDim))
    {
    case 16: return dispatchWpg<16>(vec, p, stream);
    case 32: return dispatchWpg<32>(vec, p, stream);
    case 48: return dispatchWpg<48>(vec, p, stream);
    case 64: return dispatchWpg<64>(vec, p, stream);
    default: return cudaErrorInvalidValue;
    }
}

template <>
cudaError_t launchAttention<float>(AttentionParams<float> const& p, cudaStream_t stream)
{
    MVT_CHECK_ARG(validParams(p), cudaErrorInvalidValue);
    if (p.batch == 0)
    {
        return cudaSuccess;
    }
    switch (paddedHeadDim(p.headDim))
    {
    case 16: return launchF32<16>(p, stream);
    case 32: return launchF32<32>(p, stream);
    case 48: return launchF32<48>(p, stream);
    case 64: return launchF32<64>(p, stream);
    default: return cudaErrorInvalidValue;
    }
}

template AttentionParams<float> packedLayoutParams<float>(float const*, float*, int32_t, int32_t, int32_t, int32_t, float);
template AttentionParams<__half> packedLayoutParams<__half>(
    __half const*, __half*, int32_t, int32_t, int32_t, int32_t, float);
template AttentionParams<float> separateLayoutParams<float>(
    float const*, float const*, float const*, float*, int32_t, int32_t, int32_t, int32_t, float);
template AttentionParams<__half> separateLayoutParams<__half>(
    __half const*, __half const*, __half const*, __half*, int32_t, int32_t, int32_t, int32_t, float);
} // namespace mvt
