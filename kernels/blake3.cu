// BLAKE3 hashes of byte ranges in device memory (src/gpu/hash.rs). Compiled at run time by
// NVRTC.
//
// A checkout without an output directory checks every chunk it rebuilt against the chunk's
// recorded blake3 (codec chunks are hashed as plain `blake3::hash` of their bytes). Hashing on
// the device saves reading the whole model back to the host. The hash is the standard one:
// 1024-byte chunks compressed block by block (64 bytes) with their index as counter, then a
// binary tree of parent nodes. Merging the chaining values level by level, pairs from the
// left and an odd last one carried up unchanged, builds exactly BLAKE3's tree (its left
// subtrees are the largest powers of two), so three kernels do it:
//
//   b3_chunks   one thread per 1024-byte chunk of every range: the chunk's chaining value
//               (with the ROOT flag where the range is a single chunk: then it is the hash)
//   b3_parents  one launch per tree level: parent nodes of adjacent pairs, ROOT at the top
//   b3_roots    one thread per range: its hash into the output
//
// A range is RANGE_WORDS 64-bit words:
//   0 addr      device address of the range's first byte
//   1 len       bytes
//   2 first     index of the range's first chunk value (ranges are in chunk order)
//   3 chunks    its number of 1024-byte chunks (at least one: the empty range has one)

typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;

#define RANGE_WORDS 4
#define CHUNK_LEN 1024
#define BLOCK_LEN 64
#define CHUNK_START 1u
#define CHUNK_END 2u
#define PARENT 4u
#define ROOT 8u

__constant__ u32 IV[8] = {0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
                          0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u};

__device__ __forceinline__ u32 rotr(u32 x, u32 n) { return (x >> n) | (x << (32 - n)); }

__device__ __forceinline__ void g(u32 *s, int a, int b, int c, int d, u32 x, u32 y) {
    s[a] = s[a] + s[b] + x;
    s[d] = rotr(s[d] ^ s[a], 16);
    s[c] = s[c] + s[d];
    s[b] = rotr(s[b] ^ s[c], 12);
    s[a] = s[a] + s[b] + y;
    s[d] = rotr(s[d] ^ s[a], 8);
    s[c] = s[c] + s[d];
    s[b] = rotr(s[b] ^ s[c], 7);
}

// The compression function, keeping the chaining value (the output's first eight words).
__device__ void compress(u32 *cv, const u32 *block, u64 counter, u32 block_len, u32 flags) {
    u32 s[16] = {cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7],
                 IV[0], IV[1], IV[2], IV[3], (u32)counter, (u32)(counter >> 32), block_len, flags};
    u32 m[16];
#pragma unroll
    for (int i = 0; i < 16; i++) m[i] = block[i];
    const int perm[16] = {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8};
#pragma unroll
    for (int r = 0; r < 7; r++) {
        g(s, 0, 4, 8, 12, m[0], m[1]);
        g(s, 1, 5, 9, 13, m[2], m[3]);
        g(s, 2, 6, 10, 14, m[4], m[5]);
        g(s, 3, 7, 11, 15, m[6], m[7]);
        g(s, 0, 5, 10, 15, m[8], m[9]);
        g(s, 1, 6, 11, 12, m[10], m[11]);
        g(s, 2, 7, 8, 13, m[12], m[13]);
        g(s, 3, 4, 9, 14, m[14], m[15]);
        u32 p[16];
#pragma unroll
        for (int i = 0; i < 16; i++) p[i] = m[perm[i]];
#pragma unroll
        for (int i = 0; i < 16; i++) m[i] = p[i];
    }
#pragma unroll
    for (int i = 0; i < 8; i++) cv[i] = s[i] ^ s[i + 8];
}

// The range holding value `v` of the chunk level: the last whose first value is at most `v`.
__device__ u32 find_range(const u64 *ranges, u32 nranges, u64 v) {
    u32 lo = 0, hi = nranges;
    while (hi - lo > 1) {
        u32 mid = (lo + hi) / 2;
        if (ranges[(u64)mid * RANGE_WORDS + 2] <= v) lo = mid; else hi = mid;
    }
    return lo;
}

extern "C" __global__ void b3_chunks(const u64 *ranges, u32 nranges, u64 values, u32 *cvs) {
    u64 v = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (v >= values) return;
    const u64 *r = ranges + (u64)find_range(ranges, nranges, v) * RANGE_WORDS;
    const u8 *data = (const u8 *)r[0];
    u64 len = r[1], chunk = v - r[2], chunks = r[3];
    u64 start = chunk * CHUNK_LEN;
    u32 bytes = (u32)min((u64)CHUNK_LEN, len - start);
    u32 blocks = bytes == 0 ? 1 : (bytes + BLOCK_LEN - 1) / BLOCK_LEN;
    u32 cv[8];
#pragma unroll
    for (int i = 0; i < 8; i++) cv[i] = IV[i];
    const u8 *p = data + start;
    bool wide = ((u64)p & 15) == 0;
    for (u32 b = 0; b < blocks; b++) {
        u32 block[16];
        u32 at = b * BLOCK_LEN;
        u32 n = min((u32)BLOCK_LEN, bytes - at);
        if (n == BLOCK_LEN && wide) {
            const uint4 *q = (const uint4 *)(p + at);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                uint4 w = q[i];
                block[4 * i] = w.x;
                block[4 * i + 1] = w.y;
                block[4 * i + 2] = w.z;
                block[4 * i + 3] = w.w;
            }
        } else {
            for (int i = 0; i < 16; i++) block[i] = 0;
            for (u32 i = 0; i < n; i++) block[i / 4] |= (u32)p[at + i] << (8 * (i % 4));
        }
        u32 flags = (b == 0 ? CHUNK_START : 0) | (b + 1 == blocks ? CHUNK_END : 0);
        if (b + 1 == blocks && chunks == 1) flags |= ROOT;
        compress(cv, block, chunk, n, flags);
    }
#pragma unroll
    for (int i = 0; i < 8; i++) cvs[v * 8 + i] = cv[i];
}

// Level `level` (1 for the first parents) from the values of the level below, `from`, into
// `to`: a range of m chunks has ceil(m / 2^level) values at each level, at its first index.
extern "C" __global__ void b3_parents(const u64 *ranges, u32 nranges, u64 values, u32 level,
                                      const u32 *from, u32 *to) {
    u64 v = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (v >= values) return;
    const u64 *r = ranges + (u64)find_range(ranges, nranges, v) * RANGE_WORDS;
    u64 k = v - r[2], chunks = r[3];
    u64 below = (chunks + (1ull << (level - 1)) - 1) >> (level - 1);
    if (2 * k >= below) return;
    const u32 *left = from + (r[2] + 2 * k) * 8;
    u32 *out = to + v * 8;
    if (2 * k + 1 == below) {
        // The odd one out goes up unchanged.
#pragma unroll
        for (int i = 0; i < 8; i++) out[i] = left[i];
        return;
    }
    u32 block[16], cv[8];
#pragma unroll
    for (int i = 0; i < 16; i++) block[i] = left[i];
#pragma unroll
    for (int i = 0; i < 8; i++) cv[i] = IV[i];
    compress(cv, block, 0, BLOCK_LEN, PARENT | (below == 2 ? ROOT : 0));
#pragma unroll
    for (int i = 0; i < 8; i++) out[i] = cv[i];
}

extern "C" __global__ void b3_roots(const u64 *ranges, u32 nranges, const u32 *cvs, u32 *hashes) {
    u32 j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= nranges) return;
    u64 first = ranges[(u64)j * RANGE_WORDS + 2];
#pragma unroll
    for (int i = 0; i < 8; i++) hashes[j * 8 + i] = cvs[first * 8 + i];
}
