//! Static rANS for one byte plane: an order-0 entropy coder with a frequency table per block.
//!
//! The plane is cut into blocks of `2^block_log` bytes (the last one shorter). Each block is
//! stored raw, or coded with a table of its own, or with the table of the block before: the
//! encoder picks whichever is smallest, counting the table's own bytes. A block is coded by
//! [`LANES`] interleaved rANS states (u32, renormalized 16 bits at a time), so that decoding
//! has that many independent chains to run at once, and gives the length of its coded bytes,
//! so that blocks decode side by side too ([`decode_many`]). Layout (docs/FORMAT.md, "rANS
//! plane"):
//!
//! ```text
//! 1 byte  block_log (10..=24)
//! per block: 1 byte kind (0 raw, 1 new table, 2 previous table, 3 and 4: 1 and 2 sized), then
//!   raw:   the block's bytes
//!   coded: kinds 1 and 3: the table (bit-packed, see write_table), padded to a byte;
//!          LANES states, u32 LE; kinds 3 and 4: the words' byte length, u32 LE;
//!          the renormalization words, u16 LE, in decoding order
//! ```

use std::rc::Rc;

use super::Error;

mod avx2;

/// Bits of the frequency total: every table's frequencies sum to `1 << SCALE`.
pub const SCALE: u32 = 12;
const TOTAL: u32 = 1 << SCALE;
const MASK: u32 = TOTAL - 1;
/// A block is coded only when that saves more than 1/MARGIN of its bytes, else stored raw:
/// raw bytes cost nothing to decode, and the blocks that rANS shrinks by less are the ones
/// that cost checkout the most time per byte saved. On the real fp32 model, coding every
/// block that saves anything stored 0.8192 of raw and took 0.11 s of CPU to check out; this
/// margin 0.8199 and 0.08 s (1/128: 0.8200, the same time; zstd and raw alone: 0.03 s).
pub const MARGIN: usize = 256;
/// Independent rANS states per block; symbol i belongs to state i % LANES.
pub const LANES: usize = 8;
/// The lower bound of a state: states live in [LOW, 2^32) between symbols.
const LOW: u32 = 1 << 16;
const MIN_BLOCK_LOG: u8 = 10;
const MAX_BLOCK_LOG: u8 = 24;

const RAW: u8 = 0;
const NEW: u8 = 1;
const PREVIOUS: u8 = 2;
/// [`NEW`] and [`PREVIOUS`], with the byte length of the block's words after its states: the
/// decoder finds every block's start before decoding any, and decodes blocks together.
const NEW_SIZED: u8 = 3;
const PREVIOUS_SIZED: u8 = 4;

/// Bytes a coded block spends besides its symbols and table: the kind, the states and the
/// words' length.
const BLOCK_OVERHEAD: usize = 1 + 4 * LANES + 4;

/// Byte counts of `bytes`.
pub fn histogram(bytes: &[u8]) -> [u32; 256] {
    // Four tables, so that runs of one byte value do not wait on one counter.
    let mut counts = [[0u32; 256]; 4];
    let (words, rest) = bytes.as_chunks::<8>();
    for w in words {
        // One load per eight bytes, not eight: 3-5% of the coding of the real pair.
        let v = u64::from_le_bytes(*w);
        for k in 0..8 {
            counts[k % 4][(v >> (8 * k)) as u8 as usize] += 1;
        }
    }
    for &b in rest {
        counts[0][b as usize] += 1;
    }
    std::array::from_fn(|b| counts.iter().map(|t| t[b]).sum())
}

/// Byte counts of each piece of `plane` of the smallest block size, `2^BLOCK_LOGS[0]` bytes:
/// what [`Plan::from_pieces`] plans from, and summed ([`total`]) the plane's histogram.
pub fn pieces(plane: &[u8]) -> Vec<[u32; 256]> {
    plane.chunks(1 << BLOCK_LOGS[0]).map(histogram).collect()
}

/// The sum of byte counts.
pub fn total(pieces: &[[u32; 256]]) -> [u32; 256] {
    let mut sum = [0u32; 256];
    for h in pieces {
        for (s, &c) in sum.iter_mut().zip(h) {
            *s += c;
        }
    }
    sum
}

/// Order-0 entropy of a histogram, in bits per byte.
pub fn entropy_bits(counts: &[u32; 256]) -> f64 {
    let n: f64 = counts.iter().map(|&c| f64::from(c)).sum();
    if n == 0.0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Whether a plane of `len` bytes at `bits` per byte (order 0) may save more than
/// `len / fraction` through rANS, besides a block's overhead and table. Tables per block can
/// beat the plane's order-0 entropy, so callers pass a looser fraction than they require.
pub fn worth_trying(len: usize, bits: f64, fraction: usize) -> bool {
    let saving = len as f64 * (8.0 - bits) / 8.0;
    saving > (len / fraction + BLOCK_OVERHEAD + 64) as f64
}

/// Frequencies summing to [`TOTAL`], every present byte at least 1, close to `counts`.
fn normalize(counts: &[u32; 256]) -> [u32; 256] {
    let n: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    assert!(n > 0, "a table describes at least one byte");
    let mut freq = [0u32; 256];
    for (f, &c) in freq.iter_mut().zip(counts) {
        if c > 0 {
            // Rounded, at least 1; at most TOTAL since c <= n.
            *f = ((u64::from(c) * u64::from(TOTAL) + n / 2) / n).max(1) as u32;
        }
    }
    let sum: u32 = freq.iter().sum();
    if sum < TOTAL {
        let top = (0..256).max_by_key(|&s| counts[s]).expect("256 symbols");
        freq[top] += TOTAL - sum;
    }
    // Too many: take one at a time from the byte where it costs least (count / freq smallest,
    // the lowest byte value among equals), kept in a heap of the bytes that can give one.
    if sum > TOTAL {
        let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<Slack>> = (0..256)
            .filter(|&s| freq[s] > 1)
            .map(|s| std::cmp::Reverse(Slack::new(s, counts[s], freq[s])))
            .collect();
        for _ in TOTAL..sum {
            let std::cmp::Reverse(least) = heap
                .pop()
                .expect("TOTAL >= 256, so some frequency exceeds 1 while the sum exceeds TOTAL");
            let s = least.byte;
            freq[s] -= 1;
            if freq[s] > 1 {
                heap.push(std::cmp::Reverse(Slack::new(s, counts[s], freq[s])));
            }
        }
    }
    freq
}

/// A byte that can give up a slot, ordered by what a slot less costs it: count / freq, then
/// byte value.
#[derive(PartialEq, Eq)]
struct Slack {
    count: u64,
    freq: u64,
    byte: usize,
}

impl Slack {
    fn new(byte: usize, count: u32, freq: u32) -> Slack {
        Slack {
            count: count.into(),
            freq: freq.into(),
            byte,
        }
    }
}

impl Ord for Slack {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.count * other.freq)
            .cmp(&(other.count * self.freq))
            .then(self.byte.cmp(&other.byte))
    }
}

impl PartialOrd for Slack {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Bits needed to code `counts` with `freq`, or infinity if some byte has no slot.
fn cost_bits(counts: &[u32; 256], freq: &[u32; 256]) -> f64 {
    let slot_bits = slot_bits();
    let mut bits = 0.0;
    for (&c, &f) in counts.iter().zip(freq) {
        if c > 0 {
            if f == 0 {
                return f64::INFINITY;
            }
            bits += f64::from(c) * slot_bits[f as usize];
        }
    }
    bits
}

/// `SCALE - log2(f)` for every frequency `f` in `1..=TOTAL`: the bits a byte of that
/// frequency costs. Planning a plane evaluates it for every byte value of every candidate
/// block, and the table is the same numbers as computing each in place.
fn slot_bits() -> &'static [f64; TOTAL as usize + 1] {
    static BITS: std::sync::OnceLock<Box<[f64; TOTAL as usize + 1]>> = std::sync::OnceLock::new();
    BITS.get_or_init(|| {
        let mut t = Box::new([f64::INFINITY; TOTAL as usize + 1]);
        for (f, b) in t.iter_mut().enumerate().skip(1) {
            *b = SCALE as f64 - (f as f64).log2();
        }
        t
    })
}

struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter<'_> {
    fn put(&mut self, v: u32, bits: u32) {
        debug_assert!(bits <= 32 && (bits == 32 || v >> bits == 0));
        self.acc |= u64::from(v) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    fn finish(self) {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
    }
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    n: u32,
}

impl BitReader<'_> {
    fn get(&mut self, bits: u32) -> Result<u32, Error> {
        while self.n < bits {
            let b = *self.data.get(self.pos).ok_or(Error::Truncated)?;
            self.acc |= u64::from(b) << self.n;
            self.pos += 1;
            self.n += 8;
        }
        let v = (self.acc & ((1u64 << bits) - 1)) as u32;
        self.acc >>= bits;
        self.n -= bits;
        Ok(v)
    }
}

/// Unary prefixes this long switch to a plain value of [`ESCAPE_BITS`].
const ESCAPE: u32 = 20;
const ESCAPE_BITS: u32 = SCALE + 2;

const RICE_CAP: u32 = 256;

/// Adaptive Rice parameter (as in LOCO-I): the mean of recent values, in bits.
struct Rice {
    sum: u32,
    count: u32,
}

impl Rice {
    fn new() -> Self {
        Rice { sum: 2, count: 1 }
    }

    fn k(&self) -> u32 {
        let mut k = 0;
        while (self.count << k) < self.sum && k < SCALE {
            k += 1;
        }
        k
    }

    /// Values are capped, so that one escape does not make the next few dozen expensive.
    fn update(&mut self, v: u32) {
        self.sum += v.min(RICE_CAP);
        self.count += 1;
        if self.count == 8 {
            self.sum /= 2;
            self.count /= 2;
        }
    }
}

/// Writes a table: for each byte value in order, the zigzag-coded difference of its frequency
/// from the previous byte's, as an adaptive Rice code (near-uniform tables cost ~3 bits a
/// value, runs of absent bytes ~1 bit). Ends on a byte boundary.
fn write_table(freq: &[u32; 256], out: &mut Vec<u8>) {
    let mut w = BitWriter { out, acc: 0, n: 0 };
    let mut rice = Rice::new();
    let mut prev = 0i32;
    for &f in freq {
        let d = f as i32 - prev;
        prev = f as i32;
        let v = ((d << 1) ^ (d >> 31)) as u32;
        let k = rice.k();
        let q = v >> k;
        if q < ESCAPE {
            // q ones then a zero, then k low bits.
            w.put((1 << q) - 1, q + 1);
            w.put(v & ((1 << k) - 1), k);
        } else {
            w.put((1 << ESCAPE) - 1, ESCAPE);
            w.put(v, ESCAPE_BITS);
        }
        rice.update(v);
    }
    w.finish();
}

/// The bytes [`write_table`] writes for `freq`, without writing them.
fn table_bytes(freq: &[u32; 256]) -> usize {
    let mut rice = Rice::new();
    let mut prev = 0i32;
    let mut bits = 0;
    for &f in freq {
        let d = f as i32 - prev;
        prev = f as i32;
        let v = ((d << 1) ^ (d >> 31)) as u32;
        let k = rice.k();
        bits += if v >> k < ESCAPE {
            (v >> k) + 1 + k
        } else {
            ESCAPE + ESCAPE_BITS
        };
        rice.update(v);
    }
    bits.div_ceil(8) as usize
}

/// Reads a table written by [`write_table`] from the start of `data`; returns it and the bytes
/// it took. Refuses frequencies that do not sum to [`TOTAL`].
fn read_table(data: &[u8]) -> Result<([u32; 256], usize), Error> {
    let mut r = BitReader {
        data,
        pos: 0,
        acc: 0,
        n: 0,
    };
    let mut rice = Rice::new();
    let mut prev = 0i32;
    let mut freq = [0u32; 256];
    let mut sum = 0u32;
    for f in &mut freq {
        let k = rice.k();
        let mut q = 0;
        while q < ESCAPE && r.get(1)? == 1 {
            q += 1;
        }
        let v = if q < ESCAPE {
            (q << k) | r.get(k)?
        } else {
            r.get(ESCAPE_BITS)?
        };
        rice.update(v);
        let d = (v >> 1) as i32 ^ -((v & 1) as i32);
        let value = prev + d;
        if !(0..=TOTAL as i32).contains(&value) {
            return Err(Error::Rans("frequency out of range"));
        }
        prev = value;
        *f = value as u32;
        sum += *f;
        if sum > TOTAL {
            return Err(Error::Rans("frequencies exceed the total"));
        }
    }
    if sum != TOTAL {
        return Err(Error::Rans("frequencies do not sum to the total"));
    }
    Ok((freq, r.pos))
}

/// Cumulative frequencies: where each byte's slots start.
fn starts(freq: &[u32; 256]) -> [u32; 256] {
    let mut start = [0u32; 256];
    let mut at = 0;
    for (s, &f) in start.iter_mut().zip(freq) {
        *s = at;
        at += f;
    }
    start
}

/// Codes `plane` and appends it to `out`, with the block size of [`BLOCK_LOGS`] that the byte
/// counts say is smallest.
pub fn encode(plane: &[u8], out: &mut Vec<u8>) {
    Plan::new(plane).encode(plane, out);
}

/// How a plane will be coded: its block size and each block's choice, from byte counts alone.
pub struct Plan {
    block_log: u8,
    choices: Vec<Choice>,
    bits: f64,
    /// Whether coded blocks give their words' length (kinds [`NEW_SIZED`] and
    /// [`PREVIOUS_SIZED`]); only tests write the first format's blocks, without it.
    sized: bool,
    /// Whether blocks are coded with AVX2 ([`avx2::encode`]), where the CPU has it; tests
    /// turn it off to compare with the scalar coder, whose bytes are the same.
    simd: bool,
}

impl Plan {
    /// The block size of [`BLOCK_LOGS`] whose plan is smallest, and that plan.
    pub fn new(plane: &[u8]) -> Plan {
        Plan::from_pieces(&pieces(plane))
    }

    /// [`Plan::new`] for a plane whose [`pieces`] are counted already.
    pub fn from_pieces(pieces: &[[u32; 256]]) -> Plan {
        let first = BLOCK_LOGS[0];
        let mut best: Option<Plan> = None;
        let mut counts = Vec::with_capacity(pieces.len());
        for block_log in BLOCK_LOGS {
            let per_block = 1 << (block_log - first);
            counts.clear();
            counts.extend(pieces.chunks(per_block).map(total));
            let (bits, choices) = plan(&counts);
            if best.as_ref().is_none_or(|b| bits < b.bits) {
                best = Some(Plan {
                    block_log,
                    choices,
                    bits,
                    sized: true,
                    simd: avx2::available(),
                });
            }
            if pieces.len() <= per_block {
                break; // one block already: larger blocks are the same plane
            }
        }
        best.expect("at least one block size")
    }

    /// The plan for blocks of `2^block_log` bytes.
    fn with_block_log(plane: &[u8], block_log: u8) -> Plan {
        let counts: Vec<[u32; 256]> = plane.chunks(1 << block_log).map(histogram).collect();
        let (bits, choices) = plan(&counts);
        Plan {
            block_log,
            choices,
            bits,
            sized: true,
            simd: avx2::available(),
        }
    }

    /// The size the coded plane will have, in bytes (within a few bytes of padding).
    pub fn bytes(&self) -> usize {
        (self.bits / 8.0).ceil() as usize
    }

    /// Codes `plane`, which this plan was made for, and appends it to `out`.
    pub fn encode(&self, plane: &[u8], out: &mut Vec<u8>) {
        out.push(self.block_log);
        let blocks: Vec<&[u8]> = plane.chunks(1 << self.block_log).collect();
        let mut tables: Vec<EncodeTable> = Vec::new();
        let mut table_of = Vec::with_capacity(blocks.len());
        for choice in &self.choices {
            match choice {
                Choice::Raw => table_of.push(None),
                Choice::New(freq) => {
                    tables.push(EncodeTable::new(freq));
                    table_of.push(Some(tables.len() - 1));
                }
                Choice::Previous => table_of.push(Some(tables.len() - 1)),
            }
        }
        let coded: Vec<(&[u8], &EncodeTable)> = blocks
            .iter()
            .zip(&table_of)
            .filter_map(|(&block, t)| t.map(|t| (block, &tables[t])))
            .collect();
        let mut words = Vec::new();
        let mut coded = code_blocks(&coded, &mut words, self.simd).into_iter();
        for (block, choice) in blocks.iter().zip(&self.choices) {
            match choice {
                Choice::Raw => {
                    out.push(RAW);
                    out.extend_from_slice(block);
                    continue;
                }
                Choice::New(freq) => {
                    out.push(if self.sized { NEW_SIZED } else { NEW });
                    write_table(freq, out);
                }
                Choice::Previous => out.push(if self.sized { PREVIOUS_SIZED } else { PREVIOUS }),
            }
            let (x, range) = coded.next().expect("a coding per coded block");
            for v in x {
                out.extend_from_slice(&v.to_le_bytes());
            }
            let words = &words[range];
            if self.sized {
                let len = u32::try_from(2 * words.len()).expect("blocks are at most 2^24 bytes");
                out.extend_from_slice(&len.to_le_bytes());
            }
            out.reserve(words.len() * 2);
            for w in words {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
    }
}

/// The block sizes [`encode`] chooses from. On the real fp32 model and its fine-tune, the
/// skewed planes of a model alone gain from long blocks (fewer tables), the delta planes of a
/// fine-tune from short ones (their distribution drifts along the grouped plane).
pub const BLOCK_LOGS: [u8; 5] = [14, 15, 16, 17, 18];

/// How a block is stored.
enum Choice {
    Raw,
    New(Box<[u32; 256]>),
    Previous,
}

/// Chooses how each block with byte counts `counts` is stored, greedily in order: raw, with its
/// own table (counting the table's bytes) or with the previous block's. Returns the estimated
/// size in bits and the choices.
fn plan(counts: &[[u32; 256]]) -> (f64, Vec<Choice>) {
    let mut previous: Option<[u32; 256]> = None;
    let mut total = 8.0;
    let mut choices = Vec::with_capacity(counts.len());
    for c in counts {
        let n: u32 = c.iter().sum();
        let raw = f64::from(n) * 8.0;
        let own = normalize(c);
        let with_own = cost_bits(c, &own) + (table_bytes(&own) * 8) as f64;
        let with_previous = previous.as_ref().map_or(f64::INFINITY, |p| cost_bits(c, p));
        let coded_overhead = ((BLOCK_OVERHEAD - 1) * 8) as f64;
        total += 8.0;
        if raw * (1.0 - 1.0 / MARGIN as f64) <= with_own.min(with_previous) + coded_overhead {
            total += raw;
            choices.push(Choice::Raw);
        } else if with_previous <= with_own {
            total += with_previous + coded_overhead;
            choices.push(Choice::Previous);
        } else {
            total += with_own + coded_overhead;
            previous = Some(own);
            choices.push(Choice::New(Box::new(own)));
        }
    }
    (total, choices)
}

/// Codes `plane` with blocks of `2^block_log` bytes and appends it to `out`.
pub fn encode_with(plane: &[u8], block_log: u8, out: &mut Vec<u8>) {
    assert!(
        (MIN_BLOCK_LOG..=MAX_BLOCK_LOG).contains(&block_log),
        "block_log in {MIN_BLOCK_LOG}..={MAX_BLOCK_LOG}"
    );
    Plan::with_block_log(plane, block_log).encode(plane, out);
}

/// What coding one byte value needs, with the division by its frequency replaced by a
/// multiplication: for every 32-bit state x and frequency f >= 2, `x / f` is the high 64 bits
/// of `x * (floor(2^64 / f) + 1)` (Lemire, Kaser and Kurz, "Faster remainder by direct
/// computation", 2019).
#[derive(Debug, Clone, Copy, Default)]
struct EncSymbol {
    /// A state at or above this sheds 16 bits before the byte is coded.
    bound: u64,
    magic: u64,
    freq: u32,
    start: u32,
}

impl EncSymbol {
    fn new(start: u32, freq: u32) -> EncSymbol {
        EncSymbol {
            bound: (u64::from(LOW >> SCALE) << 16) * u64::from(freq),
            magic: match freq {
                0 | 1 => 0,
                f => u64::MAX / u64::from(f) + 1,
            },
            freq,
            start,
        }
    }

    /// The state after coding this byte into `x` (renormalized: `x < bound`, so `x / freq`
    /// is below 2^20 and the result fits 32 bits).
    #[inline(always)]
    fn put(&self, x: u32) -> u32 {
        let q = match self.freq {
            1 => x,
            _ => ((u128::from(x) * u128::from(self.magic)) >> 64) as u32,
        };
        (q << SCALE) + (x - q * self.freq) + self.start
    }
}

/// A frequency table ready for coding: each byte's [`EncSymbol`] for the scalar coder, and for
/// the AVX2 one its frequency and first slot packed in a u32 (`freq | start << 16`) and the
/// reciprocal of its frequency.
struct EncodeTable {
    symbols: [EncSymbol; 256],
    packed: [u32; 256],
    rcp: [f64; 256],
}

impl EncodeTable {
    fn new(freq: &[u32; 256]) -> EncodeTable {
        let start = starts(freq);
        EncodeTable {
            symbols: std::array::from_fn(|b| EncSymbol::new(start[b], freq[b])),
            packed: std::array::from_fn(|b| freq[b] | start[b] << 16),
            rcp: std::array::from_fn(|b| if freq[b] == 0 { 0.0 } else { 1.0 / f64::from(freq[b]) }),
        }
    }
}

/// One block being coded: the groups of [`LANES`] bytes still to code (from the last to the
/// first), its table, its states, and the words it has shed, written backwards from the end of
/// `words`: the coded words are `words[pos..]`.
struct Coding<'a> {
    groups: &'a [[u8; LANES]],
    table: &'a EncodeTable,
    x: [u32; LANES],
    words: &'a mut [u16],
    pos: usize,
}

/// Codes each block with its table, into `words`; returns each block's final states and the
/// range of `words` that holds its words, in decoding order. With `simd`, up to four blocks at
/// once with AVX2 ([`avx2::encode`]), whose bytes are the scalar coder's.
///
/// Coding runs from a block's last byte to its first, and the decoder reads the words in the
/// opposite order, so they are written backwards. Every byte sheds at most one word, so a
/// block's words never outnumber its bytes, and before a byte is coded `pos` is at least the
/// bytes left to code.
fn code_blocks(
    blocks: &[(&[u8], &EncodeTable)],
    words: &mut Vec<u16>,
    simd: bool,
) -> Vec<([u32; LANES], std::ops::Range<usize>)> {
    words.clear();
    words.resize(blocks.iter().map(|(b, _)| b.len()).sum(), 0);
    let mut codings = Vec::with_capacity(blocks.len());
    let mut rest = words.as_mut_slice();
    for &(block, table) in blocks {
        let (mine, after) = std::mem::take(&mut rest).split_at_mut(block.len());
        rest = after;
        let (groups, tail) = block.as_chunks::<LANES>();
        let mut c = Coding {
            groups,
            table,
            x: [LOW; LANES],
            pos: mine.len(),
            words: mine,
        };
        // Byte i goes to lane i % LANES; within a group the lanes run from the last to the first.
        for (lane, &b) in tail.iter().enumerate().rev() {
            c.step(lane, b);
        }
        codings.push(c);
    }
    if simd {
        avx2::encode(&mut codings);
    } else {
        for c in &mut codings {
            while let Some((group, before)) = c.groups.split_last() {
                c.groups = before;
                for (lane, &b) in group.iter().enumerate().rev() {
                    c.step(lane, b);
                }
            }
        }
    }
    let mut at = 0;
    codings
        .into_iter()
        .map(|c| {
            let range = at + c.pos..at + c.words.len();
            at += c.words.len();
            (c.x, range)
        })
        .collect()
}

impl Coding<'_> {
    /// Codes byte `b` into the state of `lane`. The word is written unconditionally and kept
    /// only when the state shed it: no branch to mispredict on the near-random planes.
    fn step(&mut self, lane: usize, b: u8) {
        let sym = &self.table.symbols[b as usize];
        let v = self.x[lane];
        let shed = u64::from(v) >= sym.bound;
        self.words[self.pos - 1] = v as u16;
        self.pos -= usize::from(shed);
        self.x[lane] = sym.put(if shed { v >> 16 } else { v });
    }
}

/// A table ready for decoding: for every slot, its byte, the byte's frequency less one and the
/// slot's offset from the byte's first slot, packed in one u32 (8 + 12 + 12 bits), so that a
/// decoding step makes one load.
struct DecodeTable {
    slots: [u32; TOTAL as usize],
}

const _: () = assert!(SCALE == 12, "the slot packing holds 12-bit frequencies and offsets");

impl DecodeTable {
    /// The table for frequencies `freq`.
    fn new(freq: &[u32; 256]) -> Rc<Self> {
        let mut table = Rc::new(DecodeTable {
            slots: [0; TOTAL as usize],
        });
        let slots = &mut Rc::get_mut(&mut table).expect("not shared yet").slots;
        let mut at = 0;
        for (s, &f) in freq.iter().enumerate() {
            for (offset, slot) in slots[at..at + f as usize].iter_mut().enumerate() {
                *slot = s as u32 | (f - 1) << 8 | (offset as u32) << 20;
            }
            at += f as usize;
        }
        table
    }

    /// One decoding step of state `x`: the byte and the state before it was coded (not yet
    /// renormalized). Cannot overflow: freq * (x >> SCALE) <= TOTAL * (2^(32 - SCALE) - 1).
    #[inline(always)]
    fn step(&self, x: u32) -> (u8, u32) {
        let e = self.slots[(x & MASK) as usize];
        let freq = ((e >> 8) & MASK) + 1;
        (e as u8, freq * (x >> SCALE) + (e >> 20))
    }
}

/// Decodes a plane coded by [`encode`] into `out`, which has the plane's exact length. Corrupt
/// or truncated input is refused with an error, never read or written out of bounds.
pub fn decode(coded: &[u8], out: &mut [u8]) -> Result<(), Error> {
    decode_many(vec![(coded, out)])
}

/// Decodes several planes, each coded by [`encode`], into their outputs (each of its plane's
/// exact length), as [`decode`] does one by one.
///
/// A block's states form one chain of dependent steps, so one block decodes no faster than a
/// step's latency allows. Every block gives the length of its words, so the start of each is
/// known before any is decoded, and where the CPU has AVX2 up to [`STREAMS`] blocks, of one
/// plane or of several, advance together, the [`LANES`] states of each in one vector
/// register: their steps do not wait on each other ([`avx2`]). A block of the first format,
/// without its length, holds up the rest of its plane until it is decoded.
pub fn decode_many(planes: Vec<(&[u8], &mut [u8])>) -> Result<(), Error> {
    decode_streams(planes, avx2::available())
}

/// [`decode_many`], with the blocks advancing `together` or one at a time.
fn decode_streams(planes: Vec<(&[u8], &mut [u8])>, together: bool) -> Result<(), Error> {
    let mut planes = planes
        .into_iter()
        .map(|(coded, out)| Plane::new(coded, out))
        .collect::<Result<Vec<_>, _>>()?;
    let mut blocks = Vec::new();
    loop {
        for (i, plane) in planes.iter_mut().enumerate() {
            if !plane.waiting {
                plane.parse(i, &mut blocks)?;
            }
        }
        if blocks.is_empty() {
            return Ok(()); // no plane stopped for room or waits: every one was parsed to its end
        }
        for batch in blocks.chunks_mut(STREAMS) {
            let groups = batch
                .iter()
                .map(Block::safe_groups)
                .min()
                .expect("batches are not empty");
            let alone = !together || batch.len() == 1;
            if alone || groups == 0 {
                for block in batch.iter_mut() {
                    if alone || block.safe_groups() == 0 {
                        block.finish()?;
                    }
                }
                continue;
            }
            avx2::groups(batch, groups);
        }
        let mut i = 0;
        while i < blocks.len() {
            if !blocks[i].done {
                i += 1;
                continue;
            }
            // A block without its length hands its plane the bytes after its last word.
            let block = blocks.swap_remove(i);
            if let Some(p) = block.plane {
                planes[p].rest = block.words;
                planes[p].waiting = false;
            }
        }
    }
}

/// The most blocks [`decode_many`] advances together.
pub const STREAMS: usize = 8;

/// A plane being parsed by [`decode_many`]: what is left of its coded bytes and of its output.
struct Plane<'a> {
    rest: &'a [u8],
    out: &'a mut [u8],
    block_log: u8,
    table: Option<Rc<DecodeTable>>,
    /// Whether a block in progress, one without its length, holds the rest of the bytes.
    waiting: bool,
}

/// A coded block being decoded by [`decode_many`].
struct Block<'a> {
    /// Its renormalization words not yet read: exactly its own for a block that gives their
    /// length, else everything after them too.
    words: &'a [u8],
    /// Its output not yet written.
    out: &'a mut [u8],
    table: Rc<DecodeTable>,
    x: [u32; LANES],
    /// The plane waiting for the block's end, for a block that does not give its length.
    plane: Option<usize>,
    /// Whether it was decoded to its end and checked.
    done: bool,
}

impl<'a> Plane<'a> {
    fn new(coded: &'a [u8], out: &'a mut [u8]) -> Result<Self, Error> {
        let (&block_log, rest) = coded.split_first().ok_or(Error::Truncated)?;
        if !(MIN_BLOCK_LOG..=MAX_BLOCK_LOG).contains(&block_log) {
            return Err(Error::Rans("block size out of range"));
        }
        Ok(Plane {
            rest,
            out,
            block_log,
            table: None,
            waiting: false,
        })
    }

    /// Parses blocks, copying raw ones and adding coded ones (plane number `index`) to
    /// `blocks`, until the end of the plane, which must be the end of its coded bytes, or a
    /// block without its length (where that one ends is known once it is decoded), or until
    /// `blocks` holds [`STREAMS`]: each coded block may bring a table of 16 KiB, so a hostile
    /// plane of tiny blocks must not have them all at once.
    fn parse(&mut self, index: usize, blocks: &mut Vec<Block<'a>>) -> Result<(), Error> {
        loop {
            if blocks.len() >= STREAMS {
                return Ok(());
            }
            if self.out.is_empty() {
                return match self.rest.len() {
                    0 => Ok(()),
                    n => Err(Error::Trailing(n)),
                };
            }
            let n = self.out.len().min(1 << self.block_log);
            let (&kind, tail) = self.rest.split_first().ok_or(Error::Truncated)?;
            self.rest = tail;
            match kind {
                RAW => {
                    let bytes = self.rest.get(..n).ok_or(Error::Truncated)?;
                    let (block, after) = std::mem::take(&mut self.out).split_at_mut(n);
                    block.copy_from_slice(bytes);
                    (self.out, self.rest) = (after, &self.rest[n..]);
                    continue;
                }
                NEW | NEW_SIZED => {
                    let (freq, used) = read_table(self.rest)?;
                    self.table = Some(DecodeTable::new(&freq));
                    self.rest = &self.rest[used..];
                }
                PREVIOUS | PREVIOUS_SIZED if self.table.is_some() => {}
                PREVIOUS | PREVIOUS_SIZED => return Err(Error::Rans("block reuses a table before the first")),
                _ => return Err(Error::Rans("unknown block kind")),
            }
            let states = self.rest.get(..4 * LANES).ok_or(Error::Truncated)?;
            let x = std::array::from_fn(|j| u32::from_le_bytes(states[4 * j..4 * j + 4].try_into().expect("4 bytes")));
            self.rest = &self.rest[4 * LANES..];
            let (out, after) = std::mem::take(&mut self.out).split_at_mut(n);
            self.out = after;
            let table = Rc::clone(self.table.as_ref().expect("set above"));
            let mut block = Block {
                words: self.rest,
                out,
                table,
                x,
                plane: None,
                done: false,
            };
            if matches!(kind, NEW_SIZED | PREVIOUS_SIZED) {
                let len = self.rest.get(..4).ok_or(Error::Truncated)?;
                let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                block.words = self.rest[4..].get(..len).ok_or(Error::Truncated)?;
                self.rest = &self.rest[4 + len..];
                blocks.push(block);
            } else {
                block.plane = Some(index);
                blocks.push(block);
                self.waiting = true;
                return Ok(());
            }
        }
    }
}

impl Block<'_> {
    /// Whole groups of [`LANES`] bytes that may be decoded without checks: a group reads at
    /// most one word per lane.
    fn safe_groups(&self) -> usize {
        if self.done {
            return 0;
        }
        (self.out.len() / LANES).min(self.words.len() / (2 * LANES))
    }

    /// Takes the next `n` bytes of output, decoded, and `used` bytes of words.
    fn advance(&mut self, n: usize, used: usize) {
        self.out = &mut std::mem::take(&mut self.out)[n..];
        self.words = &self.words[used..];
    }

    /// Decodes the rest of the block one state at a time and checks its end: the states back
    /// at their start, and for a block that gives its words' length, every word read.
    fn finish(&mut self) -> Result<(), Error> {
        if self.done {
            return Ok(());
        }
        let n = self.out.len();
        let used = decode_block(&self.table, &mut self.x, self.words, self.out)?;
        self.advance(n, used);
        if self.x != [LOW; LANES] {
            return Err(Error::Rans("block does not end in its initial states"));
        }
        if self.plane.is_none() && !self.words.is_empty() {
            return Err(Error::Rans("block ends before the words it gives"));
        }
        self.done = true;
        Ok(())
    }
}

/// Decodes one block into `out` from states `x` and the words at the start of `input`;
/// returns the bytes of `input` used.
fn decode_block(t: &DecodeTable, x: &mut [u32; LANES], input: &[u8], out: &mut [u8]) -> Result<usize, Error> {
    let mut pos = 0;
    let mut groups = out.chunks_exact_mut(LANES);
    // While a whole group's words (at most one per byte) are there, read without checks.
    for group in &mut groups {
        let Some(words) = input.get(pos..pos + 2 * LANES) else {
            decode_checked(t, x, input, &mut pos, group)?;
            continue;
        };
        let words: &[u8; 2 * LANES] = words.try_into().expect("2 * LANES bytes");
        // Branch-free renormalization: the word is always loaded and taken or not by masks,
        // because whether a state needs one is a coin toss on skewed planes. The index masks
        // change nothing (k <= j < LANES) but spare the bounds checks.
        let mut k = 0;
        let mut xs = *x;
        for (b, lane) in group.iter_mut().zip(xs.iter_mut()) {
            let (s, v) = t.step(*lane);
            *b = s;
            let need = u32::from(v < LOW);
            let i = (2 * k) & (2 * LANES - 1);
            let word = u32::from(u16::from_le_bytes([words[i], words[i | 1]]));
            *lane = (v << (need << 4)) | (word & need.wrapping_neg());
            k += need as usize;
        }
        *x = xs;
        pos += 2 * k;
    }
    decode_checked(t, x, input, &mut pos, groups.into_remainder())?;
    Ok(pos)
}

/// Decodes `out` (at most one group: lane j decodes out[j]) checking every read.
fn decode_checked(
    t: &DecodeTable,
    x: &mut [u32; LANES],
    input: &[u8],
    pos: &mut usize,
    out: &mut [u8],
) -> Result<(), Error> {
    for (b, lane) in out.iter_mut().zip(x.iter_mut()) {
        let (s, mut v) = t.step(*lane);
        *b = s;
        if v < LOW {
            let w = input.get(*pos..*pos + 2).ok_or(Error::Truncated)?;
            v = (v << 16) | u32::from(u16::from_le_bytes([w[0], w[1]]));
            *pos += 2;
        }
        *lane = v;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_cover_every_length_and_tail() {
        let mut next = crate::codec::test_rng(5);
        let bytes: Vec<u8> = (0..1000).map(|_| (next() % 7) as u8 * 37).collect();
        for len in (0..=17).chain([999, 1000]) {
            let mut naive = [0u32; 256];
            for &b in &bytes[..len] {
                naive[b as usize] += 1;
            }
            assert_eq!(histogram(&bytes[..len]), naive, "{len} bytes");
        }
    }

    #[test]
    fn the_reciprocal_divides_exactly_at_every_frequency() {
        let mut seed = 7u64;
        for freq in (1..=TOTAL).filter(|f| f % 97 == 1 || *f < 70 || *f > TOTAL - 70) {
            let start = 5.min(TOTAL - freq); // a byte's slots end within the table
            let sym = EncSymbol::new(start, freq);
            let top = sym.bound.min(1 << 32) - 1;
            let mut xs = vec![LOW, LOW + 1, top as u32, (top - 1) as u32, (top / 2) as u32];
            for _ in 0..200 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                xs.push((LOW as u64 + (seed >> 11) % (top - LOW as u64)) as u32);
            }
            for x in xs {
                let exact =
                    ((u64::from(x) / u64::from(freq)) << SCALE) + u64::from(x) % u64::from(freq) + u64::from(start);
                assert_eq!(u64::from(sym.put(x)), exact, "x {x}, freq {freq}");
            }
        }
    }

    /// A small deterministic generator (xorshift), so tests need no dependency.
    fn noise(seed: u64, n: usize) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    /// Bytes with a skewed distribution, like the exponent plane of float weights.
    fn skewed(seed: u64, n: usize) -> Vec<u8> {
        noise(seed, n)
            .into_iter()
            .map(|b| 120u8.wrapping_add(b.trailing_zeros() as u8))
            .collect()
    }

    fn round_trip(plane: &[u8], block_log: u8) -> Vec<u8> {
        let mut coded = Vec::new();
        encode_with(plane, block_log, &mut coded);
        let mut out = vec![0xAA; plane.len()];
        decode(&coded, &mut out).unwrap();
        assert_eq!(out, plane, "{} bytes, block_log {block_log}", plane.len());
        coded
    }

    #[test]
    fn small_and_degenerate_planes_round_trip() {
        round_trip(&[], 16);
        round_trip(&[7], 16);
        round_trip(&[0; 100_000], 16);
        round_trip(&[255; 3], MIN_BLOCK_LOG);
        let equal = round_trip(&[42; 1 << 16], 16);
        assert!(
            equal.len() < 100,
            "one byte value costs its table and states: {}",
            equal.len()
        );
    }

    #[test]
    fn uniform_noise_stays_near_raw_and_skewed_bytes_shrink() {
        let noisy = noise(1, 300_000);
        let coded = round_trip(&noisy, 16);
        assert!(coded.len() <= noisy.len() + 16, "{}", coded.len());
        let sk = skewed(2, 300_000);
        let coded = round_trip(&sk, 16);
        let bits = entropy_bits(&histogram(&sk));
        let ideal = sk.len() as f64 * bits / 8.0;
        assert!(
            (coded.len() as f64) < ideal * 1.01 + 200.0,
            "{} vs {ideal}",
            coded.len()
        );
    }

    #[test]
    fn every_block_size_edge_round_trips() {
        let sk = skewed(3, 5000);
        for block_log in [MIN_BLOCK_LOG, 11, 12] {
            let b = 1usize << block_log;
            for n in [
                b - 1,
                b,
                b + 1,
                2 * b - 1,
                2 * b,
                2 * b + LANES - 1,
                2 * b + LANES,
                2 * b + LANES + 1,
            ] {
                round_trip(&sk[..n.min(sk.len())], block_log);
                round_trip(&noise(n as u64, n), block_log);
            }
        }
        for n in 0..3 * LANES {
            round_trip(&sk[..n], MIN_BLOCK_LOG);
        }
    }

    #[test]
    fn tables_change_between_blocks() {
        // Skewed, then uniform, then skewed around another value: new, raw and reused tables.
        let mut plane = skewed(4, 3000);
        plane.extend(noise(5, 2000));
        plane.extend(skewed(6, 3000).iter().map(|b| b ^ 0x55));
        plane.extend(skewed(7, 3000).iter().map(|b| b ^ 0x55));
        round_trip(&plane, MIN_BLOCK_LOG);
    }

    #[test]
    fn every_truncation_and_many_alterations_are_refused_without_panic() {
        let mut plane = skewed(8, 3000);
        plane.extend(noise(9, 1500));
        let mut coded = Vec::new();
        encode_with(&plane, MIN_BLOCK_LOG, &mut coded);
        let mut out = vec![0; plane.len()];
        for cut in 0..coded.len() {
            assert!(decode(&coded[..cut], &mut out).is_err(), "cut at {cut}");
        }
        let mut longer = coded.clone();
        longer.push(0);
        assert!(decode(&longer, &mut out).is_err());
        // Altered bytes may decode to other bytes (the chunk hash catches that) but never panic.
        for at in 0..coded.len() {
            for flip in [1u8, 0x80, 0xFF] {
                let mut bad = coded.clone();
                bad[at] ^= flip;
                let _ = decode(&bad, &mut out);
            }
        }
        // Garbage of every length, into planes of a few lengths.
        for n in [0, 1, 9, 1000, 5000] {
            let mut out = vec![0; n];
            for len in 0..200 {
                let _ = decode(&noise(len as u64, len), &mut out);
            }
        }
    }

    /// Planes of many shapes: skewed, near uniform, mixed (new, raw and reused tables), tiny
    /// and empty, each with its own block size; coded, and decoded `together` or not.
    fn assorted_planes() -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut mixed = skewed(21, 5000);
        mixed.extend(noise(22, 3000));
        mixed.extend(skewed(23, 9000).iter().map(|b| b ^ 0x55));
        let planes = [
            (skewed(11, 70_000), 14),
            (skewed(12, 70_000), 16),
            (mixed.clone(), MIN_BLOCK_LOG),
            (skewed(13, 1 << 15), 15),
            (noise(14, 20_000), 14),
            (skewed(15, 9), MIN_BLOCK_LOG),
            (Vec::new(), 16),
            (skewed(16, 8), MIN_BLOCK_LOG),
            (mixed, 12),
            (skewed(17, 123_457), 17),
            (skewed(18, 4001), MIN_BLOCK_LOG),
        ];
        // Every third plane in the first format, whose blocks do not give their length.
        planes
            .into_iter()
            .enumerate()
            .map(|(i, (plane, block_log))| {
                let mut coded = Vec::new();
                let mut plan = Plan::with_block_log(&plane, block_log);
                plan.sized = i % 3 != 1;
                plan.encode(&plane, &mut coded);
                (plane, coded)
            })
            .collect()
    }

    #[test]
    fn avx2_coding_gives_the_scalar_coders_bytes() {
        if !avx2::available() {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        let mut mixed = skewed(31, 5000);
        mixed.extend(noise(32, 3000));
        // One byte value taking the whole table (frequency 4096) next to the rest.
        let planes = [
            skewed(33, 100_003),
            noise(34, 65_536),
            mixed,
            vec![7; 40_000],
            skewed(35, 15),
            skewed(36, 8),
        ];
        for (i, plane) in planes.iter().enumerate() {
            for block_log in [MIN_BLOCK_LOG, 14, 17] {
                let mut plan = Plan::with_block_log(plane, block_log);
                let mut simd = Vec::new();
                plan.encode(plane, &mut simd);
                plan.simd = false;
                let mut scalar = Vec::new();
                plan.encode(plane, &mut scalar);
                assert!(simd == scalar, "plane {i}, blocks of 2^{block_log}");
                let mut back = vec![0; plane.len()];
                decode(&simd, &mut back).expect("a coded plane decodes");
                assert!(&back == plane, "plane {i}, blocks of 2^{block_log}");
            }
        }
    }

    #[test]
    fn blocks_without_their_length_still_decode() {
        let planes = assorted_planes();
        let first_format = planes.iter().enumerate().filter(|(i, _)| i % 3 == 1);
        let mut coded_blocks = 0;
        for (i, (plane, coded)) in first_format {
            let mut out = vec![0xAA; plane.len()];
            decode(coded, &mut out).expect("a plane of the first format decodes");
            assert!(&out == plane, "plane {i}");
            coded_blocks += usize::from(coded.get(1) == Some(&NEW));
        }
        assert!(
            coded_blocks >= 2,
            "some of them start with a coded block of the first format"
        );
    }

    fn decode_all(coded: &[&[u8]], lens: &[usize], together: bool) -> Result<Vec<Vec<u8>>, Error> {
        let mut outs: Vec<Vec<u8>> = lens.iter().map(|&n| vec![0xAA; n]).collect();
        let pairs = coded
            .iter()
            .copied()
            .zip(outs.iter_mut().map(Vec::as_mut_slice))
            .collect();
        decode_streams(pairs, together)?;
        Ok(outs)
    }

    #[test]
    fn planes_decoded_together_equal_each_decoded_alone() {
        let planes = assorted_planes();
        let lens: Vec<usize> = planes.iter().map(|(p, _)| p.len()).collect();
        let coded: Vec<&[u8]> = planes.iter().map(|(_, c)| c.as_slice()).collect();
        let modes: &[bool] = if avx2::available() { &[false, true] } else { &[false] };
        for &together in modes {
            // Every count of planes at once, up to more than one batch.
            for n in 1..=planes.len() {
                let outs = decode_all(&coded[..n], &lens[..n], together).expect("intact planes decode");
                for (i, (out, (plane, _))) in outs.iter().zip(&planes).enumerate() {
                    assert!(out == plane, "plane {i} of {n}, together {together}");
                }
            }
        }
    }

    #[test]
    fn a_damaged_plane_among_others_is_refused_without_panic() {
        let planes = assorted_planes();
        let lens: Vec<usize> = planes.iter().map(|(p, _)| p.len()).collect();
        let modes: &[bool] = if avx2::available() { &[false, true] } else { &[false] };
        for &together in modes {
            for victim in [0, 2, 9] {
                let good = &planes[victim].1;
                let step = (good.len() / 97).max(1);
                for cut in (0..good.len()).step_by(step) {
                    let mut coded: Vec<&[u8]> = planes.iter().map(|(_, c)| c.as_slice()).collect();
                    coded[victim] = &good[..cut];
                    assert!(
                        decode_all(&coded, &lens, together).is_err(),
                        "plane {victim} cut at {cut}, together {together}"
                    );
                }
                for at in (0..good.len()).step_by(step) {
                    let mut bad = good.clone();
                    bad[at] ^= 0x80;
                    let mut coded: Vec<&[u8]> = planes.iter().map(|(_, c)| c.as_slice()).collect();
                    coded[victim] = &bad;
                    let _ = decode_all(&coded, &lens, together);
                }
            }
        }
    }

    #[test]
    fn normalized_tables_sum_to_the_total() {
        let mut counts = [1u32; 256];
        counts[0] = 1_000_000;
        let f = normalize(&counts);
        assert_eq!(f.iter().sum::<u32>(), TOTAL);
        assert!(f.iter().all(|&f| f >= 1));
        let mut one = [0u32; 256];
        one[9] = 5;
        assert_eq!(normalize(&one)[9], TOTAL);
        let mut buf = Vec::new();
        write_table(&f, &mut buf);
        let (back, used) = read_table(&buf).unwrap();
        assert_eq!((back, used), (f, buf.len()));
    }

    /// The greedy that [`normalize`] runs with a heap, one linear scan per slot taken.
    fn normalize_by_scan(counts: &[u32; 256]) -> [u32; 256] {
        let n: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        let mut freq = [0u32; 256];
        for (f, &c) in freq.iter_mut().zip(counts) {
            if c > 0 {
                *f = ((u64::from(c) * u64::from(TOTAL) + n / 2) / n).max(1) as u32;
            }
        }
        let sum: u32 = freq.iter().sum();
        if sum < TOTAL {
            let top = (0..256).max_by_key(|&s| counts[s]).unwrap();
            freq[top] += TOTAL - sum;
        }
        for _ in TOTAL..sum {
            let s = (0..256)
                .filter(|&s| freq[s] > 1)
                .min_by(|&a, &b| {
                    (u64::from(counts[a]) * u64::from(freq[b])).cmp(&(u64::from(counts[b]) * u64::from(freq[a])))
                })
                .unwrap();
            freq[s] -= 1;
        }
        freq
    }

    #[test]
    fn normalizing_with_a_heap_takes_the_same_slots_and_table_sizes_are_exact() {
        let mut next = crate::codec::test_rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..300 {
            // Skewed, sparse and flat histograms, with many rare bytes that round up to 1.
            let mut counts = [0u32; 256];
            let present = 1 + next() as usize % 256;
            for (s, c) in counts.iter_mut().enumerate().take(present) {
                *c = match case % 3 {
                    0 => 1 + next() % 4,
                    1 => (1u32 << (next() % 20)) + next() % 7,
                    _ => 1_000_000 >> s.min(19),
                };
                if next().is_multiple_of(5) {
                    *c = 0;
                }
            }
            if counts.iter().all(|&c| c == 0) {
                counts[0] = 1;
            }
            let f = normalize(&counts);
            assert_eq!(f, normalize_by_scan(&counts), "case {case}");
            assert_eq!(f.iter().sum::<u32>(), TOTAL);
            let mut buf = Vec::new();
            write_table(&f, &mut buf);
            assert_eq!(table_bytes(&f), buf.len(), "case {case}");
        }
    }

    /// Encode and decode speed on the real base model's planes:
    /// `cargo test --release rans_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn rans_speed() {
        let path = std::env::var("HOME").unwrap() + "/.cache/sparse-testdata/base.safetensors";
        let bytes = std::fs::read(path).unwrap();
        // The fp32 tensors as 4 planes per 4 MiB chunk, like the chunk coder makes them.
        let data = &bytes[bytes.len() % 4..];
        let chunk = 4 << 20;
        let mut planes: [Vec<&[u8]>; 4] = Default::default();
        let mut split = vec![0u8; data.len()];
        for (src, dst) in data.chunks(chunk).zip(split.chunks_mut(chunk)) {
            crate::codec::planes::split(src, 4, dst);
        }
        for (src, dst) in data.chunks(chunk).zip(split.chunks(chunk)) {
            for (k, plane) in dst.chunks(src.len() / 4).enumerate() {
                planes[k].push(plane);
            }
        }
        let fixed = [None, Some(15u8), Some(16), Some(17), Some(18)];
        for (k, block_log) in (0..4).map(|k| (k, None)).chain(fixed.iter().map(|&b| (4, b))) {
            let set: Vec<&[u8]> = if k == 4 { planes.concat() } else { planes[k].clone() };
            let t = std::time::Instant::now();
            let coded: Vec<Vec<u8>> = set
                .iter()
                .map(|p| {
                    let mut c = Vec::new();
                    match block_log {
                        Some(b) => encode_with(p, b, &mut c),
                        None => encode(p, &mut c),
                    }
                    c
                })
                .collect();
            let enc = t.elapsed().as_secs_f64();
            let mut out = vec![0u8; 1 << 20];
            let t = std::time::Instant::now();
            for (c, p) in coded.iter().zip(&set) {
                decode(c, &mut out[..p.len()]).unwrap();
            }
            let dec = t.elapsed().as_secs_f64();
            let mut outs: Vec<Vec<u8>> = set.iter().map(|p| vec![1u8; p.len()]).collect();
            let t = std::time::Instant::now();
            for (c, o) in coded.chunks(STREAMS).zip(outs.chunks_mut(STREAMS)) {
                decode_many(
                    c.iter()
                        .map(Vec::as_slice)
                        .zip(o.iter_mut().map(Vec::as_mut_slice))
                        .collect(),
                )
                .unwrap();
            }
            let many = t.elapsed().as_secs_f64();
            assert!(outs.iter().zip(&set).all(|(o, p)| o == p));
            let raw: usize = set.iter().map(|p| p.len()).sum();
            let size: usize = coded.iter().map(Vec::len).sum();
            let mb = raw as f64 / 1e6;
            let which = if k == 4 {
                "all planes".to_string()
            } else {
                format!("plane {k}")
            };
            println!(
                "{which}, blocks {block_log:?}: {:.4} of raw, encode {:.0} MB/s, decode {:.0} MB/s, {STREAMS} at once {:.0} MB/s",
                size as f64 / raw as f64,
                mb / enc,
                mb / dec,
                mb / many
            );
        }
    }
}
