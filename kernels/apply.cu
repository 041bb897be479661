// Applying decoded chunks on the device (src/gpu). Compiled at run time by NVRTC.
//
// The host decodes each chunk's entropy stage into its byte planes (codec::chunk::decode_planes)
// and copies them to the device; these kernels do the rest of codec::chunk::decode there: join
// the planes into elements, undo the transform against the parent chunk (already on the
// device), and write the chunk into place. One launch of each kernel covers a whole batch of
// chunks, described by a table of jobs; one warp works on one tile of a chunk: the job's
// `tile` elements of a grouped chunk, PLAIN_TILE of any other (short, so that a batch has
// warps enough to keep the memory busy).
//
// A job is JOB_WORDS 64-bit words:
//   0 out       device address of the chunk's first byte in its tensor
//   1 parent    device address of the parent's chunk (0 when the transform needs none)
//   2 planes    device address of plane 0; plane k starts at planes + k * n (a lossy
//               chunk: its payload, as codec::lossy codes it)
//   3 counts    device address of the job's u32 context counts, tiles x keys, tile-major
//               (SUBCTX only); for LOWRANK the tensor's B factor (rank x cols bf16)
//   4 n         elements in the chunk
//   5 width | transform << 8 | bits << 16 | rank << 24  (width 1, 2, 4 or 8; for the lossy
//               transforms `bits` is the float format: 1 f32, 2 bf16, 3 f16)
//   6 tiles     ceil(n / tile) for a grouped job, ceil(n / PLAIN_TILE) for any other
//   7 first     the batch's warp number of the job's first tile (jobs are in warp order)
//   8 cols      LOWRANK: columns of the tensor as a matrix
//   9 element   LOWRANK: the tensor's element number of the chunk's first element
//  10 tile      SUBCTX: elements per tile (the host keeps it at least 2^bits, so that a
//               job's counts are at most its elements plus 2^bits)
//
// Transforms (codec::chunk): 0 full, 1 xor, 2 sub (zigzag integer difference), 3 sub with the
// differences grouped stably by `bits` bits after the sign of the parent's elements, 4 same;
// and the lossy tiers (codec::lossy), which add an approximate delta in f32 and round to the
// tensor's format exactly as the host does: 5 int8 (a scale per group of 128 elements), 6
// lowrank (the rows of A the chunk covers, times B).
//
// Grouped chunks (3) take three launches (the first two over the grouped jobs that count,
// which the host puts first in the table): `ctx_count` counts each tile's parent keys,
// `ctx_scan` turns the counts of a chunk into each (tile, key)'s first slot in the grouped
// order (key-major: every earlier key's elements, then this key's in earlier tiles), and
// `apply` walks each tile in order and takes each element's difference from the next slot of
// its key. Within a warp, lanes with equal keys are ranked with __match_any_sync, so the walk
// keeps the host's stable order. (A ballot per key bit instead measured slower on an H200,
// docs/PERFORMANCE.md.) The walk is a chain through the tile, so short tiles run faster; the
// counts grow as tiles x keys, so a job's tile holds at least 2^bits elements. A grouped job
// may instead point at slots an earlier batch counted and scanned (a resident base keeps them:
// they depend on the parent alone); the host puts it after the jobs that count, so the first
// two launches skip it, and `apply` only reads slots of contexts up to SHARED_BITS.

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define JOB_WORDS 11
#define INT8_GROUP 128
#define PLAIN_TILE 2048
#define WARPS_PER_BLOCK 4
// Keys counted in shared memory per warp, at most; larger contexts count in global memory.
// Each launch gives every warp 2^shared_bits counters (`shared_bits` <= SHARED_BITS, the
// largest context of its jobs that fits), so small contexts leave room for more warps.
#define SHARED_BITS 11
#define FULL_MASK 0xffffffffu

struct Job {
    u8 *out;
    const u8 *parent;
    const u8 *planes;
    u32 *counts;
    u64 n;
    u32 width, transform, bits;
    u32 tiles;
    u64 first, tile;
    u32 rank;
    u64 cols, element;
};

__device__ Job load_job(const u64 *jobs, u32 j) {
    const u64 *w = jobs + (u64)j * JOB_WORDS;
    Job job;
    job.out = (u8 *)w[0];
    job.parent = (const u8 *)w[1];
    job.planes = (const u8 *)w[2];
    job.counts = (u32 *)w[3];
    job.n = w[4];
    job.width = (u32)(w[5] & 0xff);
    job.transform = (u32)((w[5] >> 8) & 0xff);
    job.bits = (u32)((w[5] >> 16) & 0xff);
    job.tiles = (u32)w[6];
    job.first = w[7];
    job.rank = (u32)(w[5] >> 24);
    job.cols = w[8];
    job.element = w[9];
    job.tile = w[10];
    return job;
}

// The job holding warp `warp` of the batch: the last job whose first warp is at most `warp`.
__device__ u32 find_job(const u64 *jobs, u32 njobs, u64 warp) {
    u32 lo = 0, hi = njobs;
    while (hi - lo > 1) {
        u32 mid = (lo + hi) / 2;
        if (jobs[(u64)mid * JOB_WORDS + 7] <= warp) lo = mid; else hi = mid;
    }
    return lo;
}

template <typename T>
__device__ T load(const u8 *p, u64 i) { return ((const T *)p)[i]; }

template <typename T>
__device__ void store(u8 *p, u64 i, T v) { ((T *)p)[i] = v; }

// Element `i` of the chunk, put together from its byte planes.
template <typename T>
__device__ T joined(const u8 *planes, u64 n, u64 i) {
    T v = 0;
#pragma unroll
    for (u32 k = 0; k < sizeof(T); k++) v |= (T)planes[k * n + i] << (8 * k);
    return v;
}

template <typename T>
__device__ T unzigzag(T v) { return (v >> 1) ^ (T)(0 - (v & 1)); }

template <typename T>
__device__ u32 key_of(T parent, u32 bits) {
    return (u32)(((u64)parent >> (8 * sizeof(T) - 1 - bits)) & ((1ull << bits) - 1));
}

// Steps of 32 elements per round of the walk: their slots are found first, then their
// differences are all loaded, then stored, so that the loads overlap instead of each one
// holding up the walk's chain through the counters.
#define WALK_STEPS 8

// Loads the parents of the WALK_STEPS x 32 elements from `at` (below `end`; 0 past it), each
// lane its element of every step, all loads issued before any is used.
template <typename T>
__device__ __forceinline__ void load_parents(const Job &job, u64 at, u64 end, T (&p)[WALK_STEPS]) {
    u32 lane = threadIdx.x & 31;
#pragma unroll
    for (u32 s = 0; s < WALK_STEPS; s++) {
        u64 i = at + 32 * s + lane;
        p[s] = i < end ? load<T>(job.parent, i) : 0;
    }
}

// Walks tile `t` of a grouped job 32 elements at a time, in element order, and rebuilds each
// element from its parent and the difference at its slot in the grouped order, where the
// slot of key k counts from ctr[k]; the counters advance past the walked elements.
template <typename T>
__device__ void ungroup(const Job &job, u32 t, volatile u32 *ctr) {
    u32 lane = threadIdx.x & 31;
    u64 start = (u64)t * job.tile;
    u64 end = min(job.n, start + job.tile);
    for (u64 at = start; at < end; at += 32 * WALK_STEPS) {
        T p[WALK_STEPS], d[WALK_STEPS];
        u32 slot[WALK_STEPS];
        load_parents<T>(job, at, end, p);
#pragma unroll
        for (u32 s = 0; s < WALK_STEPS; s++) {
            u64 i = at + 32 * s + lane;
            bool valid = i < end;
            u32 active = __ballot_sync(FULL_MASK, valid);
            slot[s] = 0;
            if (valid) {
                u32 key = key_of<T>(p[s], job.bits);
                u32 peers = __match_any_sync(active, key);
                u32 leader = __ffs(peers) - 1;
                u32 rank = __popc(peers & ((1u << lane) - 1));
                u32 first = 0;
                if (lane == leader) first = ctr[key];
                first = __shfl_sync(active, first, leader);
                slot[s] = first + rank;
                if (lane == leader) ctr[key] = first + __popc(peers);
            }
            __syncwarp();
        }
#pragma unroll
        for (u32 s = 0; s < WALK_STEPS; s++) {
            u64 i = at + 32 * s + lane;
            d[s] = i < end ? joined<T>(job.planes, job.n, slot[s]) : 0;
        }
#pragma unroll
        for (u32 s = 0; s < WALK_STEPS; s++) {
            u64 i = at + 32 * s + lane;
            if (i < end) store<T>(job.out, i, p[s] + unzigzag<T>(d[s]));
        }
    }
}

// Counts the parent keys of tile `t` into ctr (zeroed), WALK_STEPS x 32 elements at a time:
// their parents loaded together, then each key added once per warp step by the first of the
// lanes holding it (the keys of a tile are few and shared: one atomic per lane would queue
// on the same counters).
template <typename T>
__device__ void count_keys(const Job &job, u32 t, u32 *ctr) {
    u32 lane = threadIdx.x & 31;
    u64 start = (u64)t * job.tile;
    u64 end = min(job.n, start + job.tile);
    for (u64 at = start; at < end; at += 32 * WALK_STEPS) {
        T p[WALK_STEPS];
        load_parents<T>(job, at, end, p);
#pragma unroll
        for (u32 s = 0; s < WALK_STEPS; s++) {
            bool valid = at + 32 * s + lane < end;
            u32 active = __ballot_sync(FULL_MASK, valid);
            if (valid) {
                u32 key = key_of<T>(p[s], job.bits);
                u32 peers = __match_any_sync(active, key);
                if (lane == __ffs(peers) - 1) atomicAdd(&ctr[key], __popc(peers));
            }
        }
    }
}

// Counts the parent keys of tile `t`, in shared memory where they fit.
template <typename T>
__device__ void count_tile(const Job &job, u32 t, u32 *shared, u32 shared_bits) {
    u32 lane = threadIdx.x & 31;
    u64 keys = 1ull << job.bits;
    u32 *counts = job.counts + (u64)t * keys;
    if (job.bits <= shared_bits) {
        for (u64 k = lane; k < keys; k += 32) shared[k] = 0;
        __syncwarp();
        count_keys<T>(job, t, shared);
        __syncwarp();
        for (u64 k = lane; k < keys; k += 32) counts[k] = shared[k];
    } else {
        // The counts were zeroed by the host.
        count_keys<T>(job, t, counts);
    }
}

// Launched over the tiles of the table's first `njobs` jobs, the grouped jobs that count.
extern "C" __global__ void ctx_count(const u64 *jobs, u32 njobs, u64 warps, u32 shared_bits) {
    extern __shared__ u32 shared_counts[];
    u64 warp = ((u64)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    if (warp >= warps) return;
    u32 *shared = shared_counts + (threadIdx.x / 32) * (1u << shared_bits);
    Job job = load_job(jobs, find_job(jobs, njobs, warp));
    if (job.transform != 3) return;
    u32 t = (u32)(warp - job.first);
    switch (job.width) {
        case 2: count_tile<u16>(job, t, shared, shared_bits); break;
        case 4: count_tile<u32>(job, t, shared, shared_bits); break;
        case 8: count_tile<u64>(job, t, shared, shared_bits); break;
    }
}

#define SCAN_THREADS 1024
// Counts each thread of `ctx_scan` loads at once.
#define SCAN_STEPS 8

// One block of SCAN_THREADS per job: each (tile, key) count becomes the key's first slot in
// that tile, in place. The keys are taken SCAN_THREADS at a time, or all of them, each with
// the threads left over splitting its tiles into parts; a thread sums one (key, part) down
// its tiles (consecutive threads, consecutive keys: the loads coalesce), the block scans the
// sums in (key, part) order, and each thread writes its part's running slots.
extern "C" __global__ void ctx_scan(const u64 *jobs, u32 njobs) {
    __shared__ u32 sums[SCAN_THREADS];
    if (blockIdx.x >= njobs) return;
    Job job = load_job(jobs, blockIdx.x);
    if (job.transform != 3) return;
    u64 keys = 1ull << job.bits;
    u32 group = (u32)min(keys, (u64)SCAN_THREADS);
    u32 parts = SCAN_THREADS / group;
    u32 key_in_group = threadIdx.x % group, part = threadIdx.x / group;
    u32 per_part = (job.tiles + parts - 1) / parts;
    u32 t0 = min(job.tiles, part * per_part), t1 = min(job.tiles, t0 + per_part);
    u32 slot = key_in_group * parts + part;
    u32 carry = 0;
    for (u64 k0 = 0; k0 < keys; k0 += group) {
        u32 *column = job.counts + k0 + key_in_group;
        u32 sum = 0;
        for (u32 t = t0; t < t1; t += SCAN_STEPS) {
            u32 c[SCAN_STEPS];
#pragma unroll
            for (u32 s = 0; s < SCAN_STEPS; s++) c[s] = t + s < t1 ? column[(u64)(t + s) * keys] : 0;
#pragma unroll
            for (u32 s = 0; s < SCAN_STEPS; s++) sum += c[s];
        }
        sums[slot] = sum;
        __syncthreads();
        // Hillis-Steele inclusive scan of the sums.
        for (u32 d = 1; d < SCAN_THREADS; d *= 2) {
            u32 v = slot >= d ? sums[slot - d] : 0;
            __syncthreads();
            sums[slot] += v;
            __syncthreads();
        }
        u32 run = carry + sums[slot] - sum;
        carry += sums[SCAN_THREADS - 1];
        for (u32 t = t0; t < t1; t += SCAN_STEPS) {
            u32 c[SCAN_STEPS];
#pragma unroll
            for (u32 s = 0; s < SCAN_STEPS; s++) c[s] = t + s < t1 ? column[(u64)(t + s) * keys] : 0;
#pragma unroll
            for (u32 s = 0; s < SCAN_STEPS; s++) {
                if (t + s < t1) column[(u64)(t + s) * keys] = run;
                run += c[s];
            }
        }
        __syncthreads();
    }
}

// The bits of N bytes loaded or stored at once, and their bytes.
template <u32 N> struct Raw;
template <> struct Raw<2> { typedef u16 type; };
template <> struct Raw<4> { typedef u32 type; };
template <> struct Raw<8> { typedef u64 type; };
template <> struct Raw<16> { typedef uint4 type; };
template <u32 N> union Bytes { typename Raw<N>::type raw; u8 b[N]; };
template <typename T> union Lanes { uint4 raw; T t[16 / sizeof(T)]; };

// Elements `at ..` of a plain job (not grouped), 16 bytes of output at once: one load per
// plane and one of the parent. The caller checks the alignment. A `same` job has no planes:
// its `planes` address may lie at or past the end of the batch's.
template <typename T>
__device__ void plain_vector(const Job &job, u64 at) {
    constexpr u32 W = sizeof(T), E = 16 / W;
    Bytes<E> planes[W] = {};
    if (job.transform != 4) {
#pragma unroll
        for (u32 k = 0; k < W; k++) planes[k].raw = *(const typename Raw<E>::type *)(job.planes + k * job.n + at);
    }
    Lanes<T> parent, out;
    if (job.transform != 0) parent.raw = *(const uint4 *)(job.parent + at * W);
#pragma unroll
    for (u32 e = 0; e < E; e++) {
        T v = 0;
#pragma unroll
        for (u32 k = 0; k < W; k++) v |= (T)planes[k].b[e] << (8 * k);
        switch (job.transform) {
            case 0: out.t[e] = v; break;
            case 1: out.t[e] = parent.t[e] ^ v; break;
            case 2: out.t[e] = parent.t[e] + unzigzag<T>(v); break;
            default: out.t[e] = parent.t[e]; break;
        }
    }
    *(uint4 *)(job.out + at * W) = out.raw;
}

template <typename T>
__device__ void plain_scalar(const Job &job, u64 i) {
    T v;
    switch (job.transform) {
        case 0: v = joined<T>(job.planes, job.n, i); break;
        case 1: v = load<T>(job.parent, i) ^ joined<T>(job.planes, job.n, i); break;
        case 2: v = load<T>(job.parent, i) + unzigzag<T>(joined<T>(job.planes, job.n, i)); break;
        default: v = load<T>(job.parent, i); break;
    }
    store<T>(job.out, i, v);
}

// Float formats of the lossy tiers: to f32 exactly, and back rounding to nearest, ties to
// even, NaNs kept quiet (as the `half` crate converts on the host).
__device__ float float_at(const u8 *p, u64 i, u32 format) {
    switch (format) {
        case 1: return __uint_as_float(load<u32>(p, i));
        case 2: return __uint_as_float((u32)load<u16>(p, i) << 16);
        default: {
            u32 h = load<u16>(p, i), sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
            if (exp == 0x1f) return __uint_as_float(sign | (man ? 0x7fc00000u : 0x7f800000u) | (man << 13));
            if (exp == 0) {
                if (man == 0) return __uint_as_float(sign);
                // A subnormal half: normalize it.
                int e = -1;
                do { man <<= 1; e++; } while ((man & 0x400) == 0);
                return __uint_as_float(sign | (u32)(112 - e) << 23 | (man & 0x3ff) << 13);
            }
            return __uint_as_float(sign | (exp + 112) << 23 | man << 13);
        }
    }
}

__device__ u16 to_bf16(float f) {
    u32 x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (u16)((x >> 16) | 0x40);
    u32 round = 0x8000u;
    return (u16)((x >> 16) + ((x & round) != 0 && (x & (3 * round - 1)) != 0));
}

__device__ u16 to_f16(float f) {
    u32 x = __float_as_uint(f);
    u32 sign = x & 0x80000000u, exp = x & 0x7f800000u, man = x & 0x7fffffu;
    if (exp == 0x7f800000u) return (u16)((sign >> 16) | 0x7c00u | (man != 0 ? 0x200u : 0) | (man >> 13));
    u32 half_sign = sign >> 16;
    int half_exp = (int)(exp >> 23) - 127 + 15;
    if (half_exp >= 0x1f) return (u16)(half_sign | 0x7c00u);
    if (half_exp <= 0) {
        if (14 - half_exp > 24) return (u16)half_sign;
        u32 m = man | 0x800000u;
        u32 half_man = m >> (14 - half_exp);
        u32 round = 1u << (13 - half_exp);
        if ((m & round) != 0 && (m & (3 * round - 1)) != 0) half_man++;
        return (u16)(half_sign | half_man);
    }
    u32 v = half_sign | (u32)half_exp << 10 | man >> 13;
    u32 round = 0x1000u;
    return (u16)(v + ((man & round) != 0 && (man & (3 * round - 1)) != 0));
}

__device__ void store_float(u8 *p, u64 i, float v, u32 format) {
    switch (format) {
        case 1: store<u32>(p, i, __float_as_uint(v)); break;
        case 2: store<u16>(p, i, to_bf16(v)); break;
        default: store<u16>(p, i, to_f16(v)); break;
    }
}

// Element `i` of a lossy job: the parent plus the coded delta, summed in f32 in the host's
// order with no fused multiply-add.
__device__ void lossy_element(const Job &job, u64 i) {
    u32 format = job.bits;
    float delta;
    if (job.transform == 5) {
        u64 groups = (job.n + INT8_GROUP - 1) / INT8_GROUP;
        float scale = __uint_as_float(joined<u32>(job.planes + 4 * (i / INT8_GROUP), 1, 0));
        float q = (float)(signed char)job.planes[4 * groups + i];
        delta = __fmul_rn(q, scale);
    } else {
        u64 e = job.element + i;
        u64 row = e / job.cols - job.element / job.cols, col = e % job.cols;
        // A's rows lie in the payload at any byte offset; B is its own allocation.
        const u8 *a = job.planes + 2 * row * job.rank;
        const u8 *b = (const u8 *)job.counts;
        delta = 0.0f;
        for (u32 k = 0; k < job.rank; k++) {
            float ak = __uint_as_float((u32)joined<u16>(a + 2 * k, 1, 0) << 16);
            delta = __fadd_rn(delta, __fmul_rn(ak, float_at(b, (u64)k * job.cols + col, 2)));
        }
    }
    // A NaN parent stays itself, quieted, as the host's addition leaves it.
    float p = float_at(job.parent, i, format);
    float sum = isnan(p) ? __uint_as_float(__float_as_uint(p) | 0x400000u) : __fadd_rn(p, delta);
    store_float(job.out, i, sum, format);
}

template <typename T>
__device__ void apply_tile(const Job &job, u32 t, u32 *shared, u32 shared_bits) {
    u32 lane = threadIdx.x & 31;
    if (job.transform == 3) {
        u64 keys = 1ull << job.bits;
        u32 *counts = job.counts + (u64)t * keys;
        if (job.bits <= shared_bits) {
            for (u64 k = lane; k < keys; k += 32) shared[k] = counts[k];
            __syncwarp();
            ungroup<T>(job, t, shared);
        } else {
            ungroup<T>(job, t, counts);
        }
        return;
    }
    u64 start = (u64)t * PLAIN_TILE;
    u64 end = min(job.n, start + PLAIN_TILE);
    if (job.transform >= 5) {
        for (u64 i = start + lane; i < end; i += 32) lossy_element(job, i);
        return;
    }
    // 16 bytes per lane and step where every address allows it (tensors and blocks start
    // aligned; a batch's planes may not); the rest element by element.
    constexpr u32 E = 16 / sizeof(T);
    bool aligned = ((u64)job.out | (u64)job.parent) % 16 == 0 && job.n % E == 0 &&
                   (job.transform == 4 || (u64)job.planes % E == 0);
    u64 vector_end = aligned ? start + (end - start) / E * E : start;
#pragma unroll 4
    for (u64 at = start + lane * E; at < vector_end; at += 32 * E) plain_vector<T>(job, at);
    for (u64 i = vector_end + lane; i < end; i += 32) plain_scalar<T>(job, i);
}

extern "C" __global__ void apply(const u64 *jobs, u32 njobs, u64 warps, u32 shared_bits) {
    extern __shared__ u32 shared_counts[];
    u64 warp = ((u64)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    if (warp >= warps) return;
    u32 *shared = shared_counts + (threadIdx.x / 32) * (1u << shared_bits);
    Job job = load_job(jobs, find_job(jobs, njobs, warp));
    u32 t = (u32)(warp - job.first);
    switch (job.width) {
        case 1: apply_tile<u8>(job, t, shared, shared_bits); break;
        case 2: apply_tile<u16>(job, t, shared, shared_bits); break;
        case 4: apply_tile<u32>(job, t, shared, shared_bits); break;
        case 8: apply_tile<u64>(job, t, shared, shared_bits); break;
    }
}
