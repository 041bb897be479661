//! Lossy tiers for a float tensor coded against its parent: only when asked for, never chosen
//! by [`super::encode_best`]. A chunk decodes to `parent + approximate delta`, rounded to the
//! tensor's dtype; its recorded hash is that of the reconstruction, so checkout still checks
//! every chunk (docs/FORMAT.md, "Lossy chunks").
//!
//! - [`Tier::Int8`]: the delta in groups of [`GROUP`] elements, each an int8 multiple of the
//!   group's scale (its largest magnitude / 127).
//! - [`Tier::LowRank`]: the delta of the whole matrix as `A·B`, a truncated SVD of rank r
//!   ([`factors`], randomized for large matrices) with the singular values folded into `A`.
//!   A chunk holds the rows of `A` it needs; `B` (rank x columns) is one blob per tensor, named
//!   in the manifest and passed to [`decode`].
//!
//! Factors and scales are stored as bf16 and f32, and the reconstruction sums in f32 in a fixed
//! order, so decoding gives the same bytes on every machine.

use half::{bf16, f16};

use super::{entropy, Codec, Error};

/// Elements per int8 scale.
pub const GROUP: usize = 128;

const VERSION: u8 = 1;
const HEADER: usize = 12;
/// Bytes of a `lowrank` chunk besides its rows of `A`: the header, the rank, columns and first
/// element, and the plane's mode and length.
pub const LOWRANK_OVERHEAD: usize = HEADER + 16 + 9;
const T_INT8: u8 = 4;
const T_LOWRANK: u8 = 5;

/// A lossy tier, as asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Int8,
    /// Low rank, the same rank for every matrix.
    LowRank {
        rank: u32,
    },
    /// Low rank, each matrix's rank chosen so that the tensors fit `target` ([`allocate_ranks`]).
    LowRankWithin {
        target: Target,
    },
}

/// A size the tensors of a lossy add are to fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Bytes(u64),
    /// Millionths of the raw size of the tensors.
    Share {
        ppm: u32,
    },
}

impl Target {
    /// Parses `2%`, `0.5%`, `3000000`, `20MB`, `1.5GiB` (k, M, G are powers of 1000, Ki, Mi,
    /// Gi of 1024; a trailing `B` is optional).
    pub fn parse(s: &str) -> Result<Target, String> {
        let bad = || format!("{s:?} is not a size: give bytes (3000000, 20MB, 1.5GiB) or a share of the tensors (2%)");
        let t = s.trim();
        if let Some(pct) = t.strip_suffix('%') {
            let v: f64 = pct.trim().parse().map_err(|_| bad())?;
            return match v {
                v if v > 0.0 && v <= 100.0 => Ok(Target::Share {
                    ppm: ((v * 10_000.0).round() as u32).max(1),
                }),
                _ => Err(format!("{s:?}: a share is more than 0% and at most 100%")),
            };
        }
        let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
        let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
            Some(i) => t.split_at(i),
            None => (t, ""),
        };
        let unit: f64 = match unit.to_ascii_lowercase().as_str() {
            "" => 1.0,
            "k" => 1e3,
            "m" => 1e6,
            "g" => 1e9,
            "ki" => 1024.0,
            "mi" => 1024.0 * 1024.0,
            "gi" => 1024.0 * 1024.0 * 1024.0,
            _ => return Err(bad()),
        };
        let v: f64 = num.trim().parse().map_err(|_| bad())?;
        match v * unit {
            b if b >= 1.0 && b < u64::MAX as f64 => Ok(Target::Bytes(b.round() as u64)),
            _ => Err(bad()),
        }
    }

    /// The target in bytes, for tensors of `raw` bytes.
    pub fn bytes(self, raw: u64) -> u64 {
        match self {
            Target::Bytes(b) => b,
            Target::Share { ppm } => (raw as u128 * ppm as u128 / 1_000_000) as u64,
        }
    }
}

impl Tier {
    pub fn codec(self) -> Codec {
        match self {
            Tier::Int8 => Codec::Int8,
            Tier::LowRank { .. } | Tier::LowRankWithin { .. } => Codec::LowRank,
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tier::Int8 => f.write_str("int8"),
            Tier::LowRank { rank } => write!(f, "lowrank rank {rank}"),
            Tier::LowRankWithin { target } => match target {
                Target::Bytes(b) => write!(f, "lowrank within {b} bytes"),
                Target::Share { ppm } => write!(f, "lowrank within {}%", *ppm as f64 / 10_000.0),
            },
        }
    }
}

/// A matrix competing for a size budget ([`allocate_ranks`]).
#[derive(Debug, Clone)]
pub struct Contender {
    /// The singular values of its delta, largest first ([`spectrum`]): as many as it may take.
    pub spectrum: Vec<f32>,
    /// Bytes one more rank costs it (its factors' rows, as stored).
    pub rank_cost: u64,
    /// Bytes its first rank costs beyond `rank_cost`: what a matrix with no rank does not store
    /// (its chunks' headers: with no rank they keep the parent's bytes).
    pub first_cost: u64,
}

impl Contender {
    /// Bytes its rank step `k` (0 for the first) costs.
    fn step_cost(&self, k: u32) -> u64 {
        self.rank_cost + if k == 0 { self.first_cost } else { 0 }
    }

    /// Bytes it costs at `rank`: nothing at rank 0.
    pub fn cost(&self, rank: u32) -> u64 {
        if rank == 0 {
            0
        } else {
            self.first_cost + rank as u64 * self.rank_cost
        }
    }
}

/// A rank for each of `matrices` such that their ranks cost at most `budget` bytes and the
/// squared error they leave, the sum of the squares of the singular values not kept, is as
/// small as rank steps taken greedily make it: always the step that removes the most error per
/// byte. A matrix's steps remove less and less, so without first costs this is optimal up to
/// the last step. A first cost makes a matrix's first step look worse than the ones after it,
/// so a matrix with a flat spectrum and many chunks can get fewer ranks than it should; its
/// chunks' headers weigh tens of bytes where a rank of a real matrix weighs kilobytes.
pub fn allocate_ranks(matrices: &[Contender], budget: u64) -> Vec<u32> {
    use std::cmp::Ordering;
    use std::collections::BinaryHeap;
    /// A matrix's next rank step: the error it removes per byte.
    struct Step(f64, usize);
    impl PartialEq for Step {
        fn eq(&self, other: &Self) -> bool {
            self.cmp(other) == Ordering::Equal
        }
    }
    impl Eq for Step {}
    impl PartialOrd for Step {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Step {
        // Ties go to the earlier matrix, so that the result does not depend on the heap.
        fn cmp(&self, other: &Self) -> Ordering {
            self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
        }
    }
    let gain = |m: &Contender, k: u32| -> Option<f64> {
        let s = *m.spectrum.get(k as usize)? as f64;
        (s.is_finite() && s > 0.0).then(|| s * s / m.step_cost(k).max(1) as f64)
    };
    let mut ranks = vec![0u32; matrices.len()];
    let mut heap: BinaryHeap<Step> = matrices
        .iter()
        .enumerate()
        .filter_map(|(i, m)| gain(m, 0).map(|g| Step(g, i)))
        .collect();
    let mut left = budget;
    while let Some(Step(_, i)) = heap.pop() {
        let cost = matrices[i].step_cost(ranks[i]);
        if cost > left {
            // Its later steps cost as much (or its first, more): it grows no more.
            continue;
        }
        left -= cost;
        ranks[i] += 1;
        if let Some(g) = gain(&matrices[i], ranks[i]) {
            heap.push(Step(g, i));
        }
    }
    ranks
}

/// The float formats the lossy tiers code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Float {
    F32,
    Bf16,
    F16,
}

impl Float {
    /// The format of a safetensors dtype name, if it is one of these.
    pub fn of_dtype(dtype: &str) -> Option<Float> {
        match dtype {
            "F32" => Some(Float::F32),
            "BF16" => Some(Float::Bf16),
            "F16" => Some(Float::F16),
            _ => None,
        }
    }

    pub fn width(self) -> usize {
        match self {
            Float::F32 => 4,
            Float::Bf16 | Float::F16 => 2,
        }
    }

    /// The format's code in chunk headers and device jobs: 1 f32, 2 bf16, 3 f16.
    pub fn code(self) -> u8 {
        match self {
            Float::F32 => 1,
            Float::Bf16 => 2,
            Float::F16 => 3,
        }
    }

    fn from_code(c: u8) -> Option<Float> {
        match c {
            1 => Some(Float::F32),
            2 => Some(Float::Bf16),
            3 => Some(Float::F16),
            _ => None,
        }
    }

    /// Little-endian elements as f32 (exact for all three).
    pub fn to_f32(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Float::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect(),
            Float::Bf16 => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Float::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        }
    }

    /// Writes `v` as this format (rounding to nearest even) into `out`.
    fn store(self, v: f32, out: &mut [u8]) {
        match self {
            Float::F32 => out.copy_from_slice(&v.to_le_bytes()),
            Float::Bf16 => out.copy_from_slice(&bf16::from_f32(v).to_le_bytes()),
            Float::F16 => out.copy_from_slice(&f16::from_f32(v).to_le_bytes()),
        }
    }
}

fn header(transform: u8, float: Float, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 9 + n / 4);
    out.extend_from_slice(&[VERSION, transform, float.width() as u8, float.code()]);
    out.extend_from_slice(&(n as u64).to_le_bytes());
    out
}

/// Appends `payload` as the chunk's one plane, entropy-coded.
fn push_plane(out: &mut Vec<u8>, payload: &[u8], level: i32) {
    let at = out.len();
    out.extend_from_slice(&[0u8; 9]);
    let mode = entropy::compress(payload, level, out);
    let stored = (out.len() - at - 9) as u64;
    out[at] = mode as u8;
    out[at + 1..at + 9].copy_from_slice(&stored.to_le_bytes());
}

/// Codes `data` against `parent` (same length, elements of `float`) as int8 deltas.
pub fn encode_int8(data: &[u8], parent: &[u8], float: Float, level: i32) -> Vec<u8> {
    assert_eq!(data.len(), parent.len(), "a delta of equal lengths");
    let new = float.to_f32(data);
    let old = float.to_f32(parent);
    let groups = new.len().div_ceil(GROUP);
    let mut payload = Vec::with_capacity(groups * 4 + new.len());
    let mut q = Vec::with_capacity(new.len());
    for (n, o) in new.chunks(GROUP).zip(old.chunks(GROUP)) {
        let delta: Vec<f32> = n.iter().zip(o).map(|(a, b)| a - b).collect();
        let top = delta.iter().fold(0f32, |m, d| if d.abs() > m { d.abs() } else { m });
        let scale = if top.is_finite() && top > 0.0 { top / 127.0 } else { 0.0 };
        payload.extend_from_slice(&scale.to_le_bytes());
        q.extend(delta.iter().map(|d| match scale {
            0.0 => 0u8,
            s => (d / s).round().clamp(-127.0, 127.0) as i8 as u8,
        }));
    }
    payload.extend_from_slice(&q);
    let mut out = header(T_INT8, float, data.len());
    push_plane(&mut out, &payload, level);
    out
}

/// The low-rank factors of a matrix delta: `a` is rows x rank, `b` rank x cols, row-major,
/// both rounded to bf16 as they are stored.
#[derive(Debug, Clone)]
pub struct Factors {
    pub rows: usize,
    pub cols: usize,
    pub rank: usize,
    pub a: Vec<bf16>,
    pub b: Vec<bf16>,
}

impl Factors {
    /// `b` as stored in its blob: rank x cols bf16, little-endian, row-major.
    pub fn b_bytes(&self) -> Vec<u8> {
        self.b.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// Bytes one rank of these factors takes once coded, on average: `A` and `B` each coded as
    /// one plane at `level`, over the rank. Without a rank, what a rank takes uncoded.
    pub fn coded_rank_cost(&self, level: i32) -> u64 {
        if self.rank == 0 {
            return 2 * (self.rows + self.cols) as u64;
        }
        let a: Vec<u8> = self.a.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut coded = Vec::new();
        entropy::compress(&a, level, &mut coded);
        entropy::compress(&self.b_bytes(), level, &mut coded);
        (coded.len() as u64).div_ceil(self.rank as u64).max(1)
    }
}

/// Columns of random projection beyond the rank, and power iterations, of the randomized SVD.
const OVERSAMPLE: usize = 8;
const POWER_ITERATIONS: usize = 2;

/// U (rows x r), the singular values (r) and V (cols x r) of a rank-r truncated SVD of
/// `delta`, r the least of `rank`, `rows` and `cols`: exact for small matrices, randomized when
/// the rank plus oversampling is well below both sides. A matrix the SVD fails on (not finite)
/// gives zeros.
fn truncated_svd(
    delta: &[f32],
    rows: usize,
    cols: usize,
    rank: usize,
    seed: u64,
) -> (faer::Mat<f32>, Vec<f32>, faer::Mat<f32>) {
    use faer::Mat;
    assert_eq!(delta.len(), rows * cols, "a rows x cols matrix");
    let rank = rank.min(rows).min(cols);
    let d = Mat::<f32>::from_fn(rows, cols, |i, j| delta[i * cols + j]);
    let sketch = rank + OVERSAMPLE;
    if rank == 0 {
        (Mat::<f32>::zeros(rows, 0), Vec::new(), Mat::<f32>::zeros(cols, 0))
    } else if 2 * sketch >= rows.min(cols) {
        match d.thin_svd() {
            Ok(svd) => (
                svd.U().get(.., ..rank).to_owned(),
                (0..rank).map(|k| svd.S().column_vector()[k]).collect(),
                svd.V().get(.., ..rank).to_owned(),
            ),
            Err(_) => (Mat::zeros(rows, rank), vec![0.0; rank], Mat::zeros(cols, rank)),
        }
    } else {
        let mut rng = Gauss::new(seed);
        let omega = Mat::<f32>::from_fn(cols, sketch, |_, _| rng.next());
        let mut q = (&d * &omega).qr().compute_thin_Q();
        for _ in 0..POWER_ITERATIONS {
            let z = (d.transpose() * &q).qr().compute_thin_Q();
            q = (&d * &z).qr().compute_thin_Q();
        }
        let small = q.transpose() * &d;
        match small.thin_svd() {
            Ok(svd) => (
                &q * svd.U().get(.., ..rank),
                (0..rank).map(|k| svd.S().column_vector()[k]).collect(),
                svd.V().get(.., ..rank).to_owned(),
            ),
            Err(_) => (Mat::zeros(rows, rank), vec![0.0; rank], Mat::zeros(cols, rank)),
        }
    }
}

/// A rank-`rank` approximation of the `rows` x `cols` row-major matrix `delta` by truncated SVD:
/// exact for small matrices, randomized (a seeded Gaussian sketch with power iterations) when
/// the rank plus oversampling is well below both sides.
pub fn factors(delta: &[f32], rows: usize, cols: usize, rank: usize, seed: u64) -> Factors {
    factors_and_spectrum(delta, rows, cols, rank, seed).0
}

/// [`factors`], and the singular values they were made from, largest first.
pub fn factors_and_spectrum(delta: &[f32], rows: usize, cols: usize, rank: usize, seed: u64) -> (Factors, Vec<f32>) {
    let (u, s, v) = truncated_svd(delta, rows, cols, rank, seed);
    let rank = s.len();
    let finite = |x: f32| if x.is_finite() { x } else { 0.0 };
    let a = (0..rows)
        .flat_map(|i| (0..rank).map(move |k| (i, k)))
        .map(|(i, k)| bf16::from_f32(finite(u[(i, k)] * s[k])))
        .collect();
    let b = (0..rank)
        .flat_map(|k| (0..cols).map(move |j| (k, j)))
        .map(|(k, j)| bf16::from_f32(finite(v[(j, k)])))
        .collect();
    (Factors { rows, cols, rank, a, b }, s)
}

/// Codes elements `first ..` of a matrix (the chunk, `data.len()` bytes) as the rows of
/// `factors.a` that cover them; the decoder gets `factors.b` from its blob.
pub fn encode_lowrank(data_len: usize, first: u64, factors: &Factors, float: Float, level: i32) -> Vec<u8> {
    let count = (data_len / float.width()) as u64;
    let cols = factors.cols as u64;
    let (r0, r1) = if count == 0 {
        (0, 0)
    } else {
        (first / cols, (first + count - 1) / cols + 1)
    };
    let mut payload = Vec::with_capacity((r1 - r0) as usize * factors.rank * 2);
    for row in r0..r1 {
        let at = row as usize * factors.rank;
        for v in &factors.a[at..at + factors.rank] {
            payload.extend_from_slice(&v.to_le_bytes());
        }
    }
    let mut out = header(T_LOWRANK, float, data_len);
    out.extend_from_slice(&(factors.rank as u32).to_le_bytes());
    out.extend_from_slice(&(factors.cols as u32).to_le_bytes());
    out.extend_from_slice(&first.to_le_bytes());
    push_plane(&mut out, &payload, level);
    out
}

/// What a lossy chunk adds to its parent, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// A scale (f32) per group of [`GROUP`] elements, then an int8 per element.
    Int8,
    /// The rows of `A` (bf16, `rank` each) covering elements `first ..` of a matrix of
    /// `cols` columns; `B` is the tensor's factor blob.
    LowRank { rank: usize, cols: usize, first: u64 },
}

/// A lossy chunk's header, checked against the chunk's length.
struct Parsed<'a> {
    float: Float,
    payload: Payload,
    mode: entropy::Mode,
    stored: &'a [u8],
}

fn parse(coded: &[u8], width: usize, len: usize) -> Result<Parsed<'_>, Error> {
    let h = coded.get(..HEADER).ok_or(Error::Truncated)?;
    if h[0] != VERSION {
        return Err(Error::Version(h[0]));
    }
    let float = Float::from_code(h[3]).ok_or(Error::Transform(h[1]))?;
    if h[2] as usize != width || float.width() != width {
        return Err(Error::Width {
            width: h[2] as usize,
            expected: width,
        });
    }
    let n = u64::from_le_bytes(h[4..12].try_into().expect("8 bytes"));
    if n != len as u64 || !len.is_multiple_of(width) {
        return Err(Error::Length {
            found: n,
            expected: len,
        });
    }
    // The plane, after a low-rank chunk's rank, columns and first element.
    let (payload, fields) = match h[1] {
        T_INT8 => (Payload::Int8, 0),
        T_LOWRANK => {
            let f = coded.get(HEADER..HEADER + 16).ok_or(Error::Truncated)?;
            let payload = Payload::LowRank {
                rank: u32::from_le_bytes(f[0..4].try_into().expect("4 bytes")) as usize,
                cols: u32::from_le_bytes(f[4..8].try_into().expect("4 bytes")) as usize,
                first: u64::from_le_bytes(f[8..16].try_into().expect("8 bytes")),
            };
            (payload, 16)
        }
        t => return Err(Error::Transform(t)),
    };
    let rest = coded.get(HEADER + fields..).ok_or(Error::Truncated)?;
    if rest.len() < 9 {
        return Err(Error::Truncated);
    }
    let mode = entropy::Mode::from_byte(rest[0])?;
    let m = u64::from_le_bytes(rest[1..9].try_into().expect("8 bytes"));
    if m != (rest.len() - 9) as u64 {
        return Err(Error::Truncated);
    }
    Ok(Parsed {
        float,
        payload,
        mode,
        stored: &rest[9..],
    })
}

/// Bytes of the payload of a chunk of `count` elements; for a low-rank chunk also checks its
/// fields against its factor's length, `b_len` bytes (rank x cols bf16).
fn payload_len(payload: Payload, count: usize, b_len: Option<usize>) -> Result<usize, Error> {
    match payload {
        Payload::Int8 => Ok(int8_payload_len(count)),
        Payload::LowRank { rank, cols, first } => {
            let b_len = b_len.ok_or(Error::Lossy("a low-rank chunk needs its tensor's factor"))?;
            // rank <= cols and b's length bound the rows' bytes by 2 * (count + 2 * cols).
            if cols == 0 || rank > cols || rank.checked_mul(cols).and_then(|x| x.checked_mul(2)) != Some(b_len) {
                return Err(Error::Lossy("the low-rank factor does not match the chunk"));
            }
            let cols = cols as u64;
            let (r0, r1) = match (count as u64).checked_add(first) {
                _ if count == 0 => (0, 0),
                Some(end) => (first / cols, (end - 1) / cols + 1),
                None => return Err(Error::Lossy("the chunk's first element is out of range")),
            };
            Ok((r1 - r0) as usize * rank * 2)
        }
    }
}

/// Bytes of an int8 chunk's payload for `count` elements: a scale per group, a byte each.
pub fn int8_payload_len(count: usize) -> usize {
    count.div_ceil(GROUP) * 4 + count
}

/// The most payload bytes a valid low-rank chunk of `count` elements can have in a matrix of
/// `cols` columns stored at rank `rank` or less: the rows of A it touches (at most
/// count / cols + 2, and never more values than count + 2 * cols since rank <= cols), two
/// bytes a value. Room to decode it with [`decode_payload`].
pub fn lowrank_payload_room(count: usize, cols: usize, rank: usize) -> usize {
    let rows = (count / cols.max(1)).saturating_add(2);
    let values = rows
        .saturating_mul(rank)
        .min(count.saturating_add(cols.saturating_mul(2)));
    values.saturating_mul(2)
}

/// Decodes a lossy chunk of `len` bytes as far as its payload, into the front of `out`:
/// what a device adds to the parent (`kernels/apply.cu`). Returns the chunk's float format,
/// its payload and the payload's length. `b_len` is the length of a low-rank chunk's factor.
pub fn decode_payload(
    coded: &[u8],
    width: usize,
    len: usize,
    b_len: Option<usize>,
    out: &mut [u8],
) -> Result<(Float, Payload, usize), Error> {
    let p = parse(coded, width, len)?;
    let n = payload_len(p.payload, len / width, b_len)?;
    let room = out.len();
    let into = out.get_mut(..n).ok_or(Error::Length {
        found: n as u64,
        expected: room,
    })?;
    entropy::decompress(p.mode, p.stored, into)?;
    Ok((p.float, p.payload, n))
}

/// Decodes a lossy chunk into `out` (its exact length): `parent` plus the coded delta. A
/// low-rank chunk needs its tensor's `b` factor blob.
pub fn decode(coded: &[u8], parent: &[u8], width: usize, out: &mut [u8], b: Option<&[u8]>) -> Result<Codec, Error> {
    let p = parse(coded, width, out.len())?;
    if parent.len() != out.len() {
        return Err(Error::Length {
            found: parent.len() as u64,
            expected: out.len(),
        });
    }
    let count = out.len() / width;
    let mut payload = vec![0u8; payload_len(p.payload, count, b.map(<[u8]>::len))?];
    entropy::decompress(p.mode, p.stored, &mut payload)?;
    let float = p.float;
    let old = float.to_f32(parent);
    match p.payload {
        Payload::Int8 => {
            let groups = count.div_ceil(GROUP);
            let (scales, q) = payload.split_at(groups * 4);
            for (i, (o, p)) in out.chunks_exact_mut(width).zip(&old).enumerate() {
                let g = 4 * (i / GROUP);
                let s = f32::from_le_bytes(scales[g..g + 4].try_into().expect("4 bytes"));
                float.store(p + f32::from(q[i] as i8) * s, o);
            }
            Ok(Codec::Int8)
        }
        Payload::LowRank { rank, cols, first } => {
            let b = b.expect("payload_len checked the factor");
            let a: Vec<f32> = payload
                .chunks_exact(2)
                .map(|v| bf16::from_le_bytes([v[0], v[1]]).to_f32())
                .collect();
            let bf: Vec<f32> = b
                .chunks_exact(2)
                .map(|v| bf16::from_le_bytes([v[0], v[1]]).to_f32())
                .collect();
            let cols64 = cols as u64;
            let r0 = first / cols64;
            for (i, (o, p)) in out.chunks_exact_mut(width).zip(&old).enumerate() {
                let e = first + i as u64;
                let row = (e / cols64 - r0) as usize;
                let col = (e % cols64) as usize;
                let mut acc = 0f32;
                for k in 0..rank {
                    acc += a[row * rank + k] * bf[k * cols + col];
                }
                float.store(p + acc, o);
            }
            Ok(Codec::LowRank)
        }
    }
}

/// Standard normal numbers from a seeded xorshift generator (Box-Muller).
struct Gauss(u64);

impl Gauss {
    fn new(seed: u64) -> Gauss {
        Gauss(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn next(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|f| f.to_le_bytes()).collect()
    }

    #[test]
    fn int8_reconstructs_within_half_a_step() {
        let old: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.1).sin() * 0.05).collect();
        let new: Vec<f32> = old
            .iter()
            .enumerate()
            .map(|(i, o)| o + (i as f32 * 0.37).cos() * 1e-3)
            .collect();
        let coded = encode_int8(&floats(&new), &floats(&old), Float::F32, 3);
        let mut out = vec![0; 4000];
        assert_eq!(decode(&coded, &floats(&old), 4, &mut out, None).unwrap(), Codec::Int8);
        let back = Float::F32.to_f32(&out);
        for (b, n) in back.iter().zip(&new) {
            assert!((b - n).abs() <= 1e-3 / 127.0 * 0.5 + 1e-7, "{b} vs {n}");
        }
    }

    #[test]
    fn lowrank_recovers_a_low_rank_delta() {
        let (rows, cols) = (60, 40);
        // A rank-2 delta.
        let delta: Vec<f32> = (0..rows * cols)
            .map(|e| {
                let (i, j) = ((e / cols) as f32, (e % cols) as f32);
                1e-2 * ((i * 0.3).sin() * (j * 0.2).cos() + 0.5 * (i * 0.05).cos() * (j * 0.7).sin())
            })
            .collect();
        let f = factors(&delta, rows, cols, 4, 1);
        let old = vec![0.5f32; rows * cols];
        let new: Vec<f32> = old.iter().zip(&delta).map(|(o, d)| o + d).collect();
        let b = f.b_bytes();
        // Two chunks that cut a row in half.
        let mut back = Vec::new();
        for (lo, hi) in [(0usize, 1010usize), (1010, rows * cols)] {
            let coded = encode_lowrank((hi - lo) * 4, lo as u64, &f, Float::F32, 3);
            let mut out = vec![0; (hi - lo) * 4];
            decode(&coded, &floats(&old[lo..hi]), 4, &mut out, Some(&b)).unwrap();
            back.extend(Float::F32.to_f32(&out));
        }
        let err: f32 = back.iter().zip(&new).map(|(a, b)| (a - b).powi(2)).sum::<f32>().sqrt();
        let norm: f32 = delta.iter().map(|d| d * d).sum::<f32>().sqrt();
        assert!(err < 0.01 * norm, "relative error {}", err / norm);
        let coded = encode_lowrank(400, 0, &f, Float::F32, 3);
        let mut out = vec![0; 400];
        assert!(
            decode(&coded, &floats(&old[..100]), 4, &mut out, None).is_err(),
            "needs b"
        );
    }

    /// The payload of every valid chunk fits the room a device stage gives it, and one byte
    /// less than the payload is refused, not overrun: chunks smaller than a row, cutting rows,
    /// whole matrices, ranks clipped by the matrix.
    #[test]
    fn payloads_fit_their_room() {
        for (rows, cols, rank) in [
            (1usize, 1usize, 1usize),
            (7, 3, 16),
            (3, 50, 2),
            (33, 17, 4),
            (64, 48, 3),
        ] {
            let delta: Vec<f32> = (0..rows * cols).map(|e| (e as f32 * 0.37).sin() * 1e-2).collect();
            let f = factors(&delta, rows, cols, rank, 1);
            let b = f.b_bytes();
            let n = rows * cols;
            for (lo, hi) in [(0, n), (0, 1.min(n)), (n / 3, n / 3 + cols.min(n - n / 3)), (n / 2, n)] {
                let count = hi - lo;
                let width = 2;
                let coded = encode_lowrank(count * width, lo as u64, &f, Float::Bf16, 3);
                let room = lowrank_payload_room(count, cols, rank);
                let mut out = vec![0u8; room];
                let (_, _, used) = decode_payload(&coded, width, count * width, Some(b.len()), &mut out)
                    .unwrap_or_else(|e| panic!("{rows}x{cols} rank {rank}, {lo}..{hi}: {e}"));
                assert!(
                    decode_payload(
                        &coded,
                        width,
                        count * width,
                        Some(b.len()),
                        &mut out[..used.saturating_sub(1)]
                    )
                    .is_err()
                        || used == 0
                );
                let old = vec![0u8; count * width];
                let data: Vec<u8> = (0..count * width).map(|i| i as u8).collect();
                let coded = encode_int8(&data, &old, Float::Bf16, 3);
                let mut out = vec![0u8; int8_payload_len(count)];
                decode_payload(&coded, width, count * width, None, &mut out).unwrap();
            }
        }
    }

    #[test]
    fn hostile_lowrank_fields_are_refused() {
        let f = factors(&[0.0; 12], 3, 4, 1, 1);
        let mut coded = encode_lowrank(48, 0, &f, Float::F32, 3);
        let parent = vec![0u8; 48];
        let mut out = vec![0u8; 48];
        // rank = cols = 2^31: their product overflows; a factor of any length is refused.
        coded[HEADER..HEADER + 4].copy_from_slice(&(1u32 << 31).to_le_bytes());
        coded[HEADER + 4..HEADER + 8].copy_from_slice(&(1u32 << 31).to_le_bytes());
        for b in [&[][..], &f.b_bytes()[..]] {
            assert!(decode(&coded, &parent, 4, &mut out, Some(b)).is_err());
        }
        // A first element so large that the chunk's end overflows.
        let mut coded = encode_lowrank(48, 0, &f, Float::F32, 3);
        coded[HEADER + 8..HEADER + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&coded, &parent, 4, &mut out, Some(&f.b_bytes())).is_err());
    }

    #[test]
    fn targets_parse_as_bytes_or_a_share() {
        assert_eq!(Target::parse("3000000"), Ok(Target::Bytes(3_000_000)));
        assert_eq!(Target::parse("20MB"), Ok(Target::Bytes(20_000_000)));
        assert_eq!(Target::parse("1.5GiB"), Ok(Target::Bytes(1_610_612_736)));
        assert_eq!(Target::parse("64k"), Ok(Target::Bytes(64_000)));
        assert_eq!(Target::parse("2%"), Ok(Target::Share { ppm: 20_000 }));
        assert_eq!(Target::parse("0.25 %"), Ok(Target::Share { ppm: 2_500 }));
        assert_eq!(Target::Share { ppm: 20_000 }.bytes(1_000_000), 20_000);
        for bad in [
            "",
            "MB",
            "-3",
            "0",
            "12XB",
            "0%",
            "101%",
            "nan%",
            "1e30",
            "99999999999GiB",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn contender(rank_cost: u64, spectrum: &[f32]) -> Contender {
        Contender {
            spectrum: spectrum.to_vec(),
            rank_cost,
            first_cost: 0,
        }
    }

    #[test]
    fn a_first_rank_pays_for_what_a_matrix_without_one_does_not_store() {
        // The first matrix's first rank costs 40 + 100: it removes 16 for 140 bytes, a little
        // more a byte than the second's 4 for 40; its second rank, 9 for 40, is the best step
        // after it. Below 140 bytes the first matrix gets nothing.
        let m = [
            Contender {
                first_cost: 100,
                ..contender(40, &[4.0, 3.0])
            },
            contender(40, &[2.0, 2.0]),
        ];
        assert_eq!(allocate_ranks(&m, 80), vec![0, 2]);
        assert_eq!(allocate_ranks(&m, 139), vec![0, 2]);
        assert_eq!(allocate_ranks(&m, 140), vec![1, 0]);
        assert_eq!(allocate_ranks(&m, 220), vec![2, 1]);
    }

    #[test]
    fn ranks_go_where_a_byte_removes_the_most_error() {
        // Two matrices whose ranks cost 40 bytes: the first's steps remove 16, 9, 1; the
        // second's 4, 4, 4. Greedy by error removed a byte: 16, 9, then 4 (the second's, ahead
        // of the first's 1), 4.
        let m = [contender(40, &[4.0, 3.0, 1.0]), contender(40, &[2.0, 2.0, 2.0])];
        assert_eq!(allocate_ranks(&m, 160), vec![2, 2]);
        assert_eq!(allocate_ranks(&m, 199), vec![2, 2]);
        assert_eq!(allocate_ranks(&m, 80), vec![2, 0]);
        assert_eq!(allocate_ranks(&m, 0), vec![0, 0]);
        // Everything fits: every singular value is taken, and no more.
        assert_eq!(allocate_ranks(&m, 10_000), vec![3, 3]);
        // Equal steps: the earlier matrix first.
        let tied = [contender(40, &[2.0]), contender(40, &[2.0])];
        assert_eq!(allocate_ranks(&tied, 40), vec![1, 0]);
        // A cheaper rank wins per byte: 9 for 20 bytes beats 16 for 40.
        let shapes = [contender(40, &[4.0]), contender(20, &[3.0, 3.0])];
        assert_eq!(allocate_ranks(&shapes, 40), vec![0, 2]);
        // A step that no longer fits does not stop a cheaper one that does: after the first
        // matrix's first step, 20 bytes are left, too few for its second, enough for the other.
        let shapes = [contender(40, &[5.0, 5.0]), contender(20, &[2.0])];
        assert_eq!(allocate_ranks(&shapes, 60), vec![1, 1]);
        // Zero and non-finite singular values remove nothing and are not taken.
        let odd = [contender(40, &[0.0]), contender(40, &[f32::NAN])];
        assert_eq!(allocate_ranks(&odd, 1000), vec![0, 0]);
    }

    #[test]
    fn randomized_svd_matches_the_exact_one_on_a_tall_matrix() {
        let (rows, cols) = (400, 120);
        let mut g = Gauss::new(5);
        // Rank 3 plus a little noise.
        let u: Vec<f32> = (0..rows * 3).map(|_| g.next()).collect();
        let v: Vec<f32> = (0..cols * 3).map(|_| g.next()).collect();
        let delta: Vec<f32> = (0..rows * cols)
            .map(|e| {
                let (i, j) = (e / cols, e % cols);
                (0..3)
                    .map(|k| u[i * 3 + k] * v[j * 3 + k] * (3 - k) as f32)
                    .sum::<f32>()
                    + 1e-3 * g.next()
            })
            .collect();
        let f = factors(&delta, rows, cols, 3, 9);
        let rec = |i: usize, j: usize| {
            (0..3)
                .map(|k| f.a[i * 3 + k].to_f32() * f.b[k * cols + j].to_f32())
                .sum::<f32>()
        };
        let err: f32 = (0..rows * cols)
            .map(|e| (rec(e / cols, e % cols) - delta[e]).powi(2))
            .sum::<f32>()
            .sqrt();
        let norm: f32 = delta.iter().map(|d| d * d).sum::<f32>().sqrt();
        assert!(err < 0.02 * norm, "relative error {}", err / norm);
    }
}
