//! Rebuilding a snapshot's tensors in device memory (feature `cuda`).
//!
//! Every chunk of every tensor is decoded on the host as far as its byte planes
//! ([`codec::chunk::decode_planes`], on all cores), into one of two page-locked stages; while
//! the device applies one stage's batch (a job per block of each chunk) against the parent's
//! tensors (already on the device), the host fills the other. A snapshot whose base is not on
//! the device is rebuilt on top of its base, rebuilt the same way first, down the chain.
//! [`check`] hashes every chunk on the device and compares it with its recorded blake3;
//! [`verify`] reads the tensors back in stage-sized batches and checks every chunk on the host,
//! which is how checkout to a directory writes them.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::manifest::Segment;
use super::rebuild::{segment_name, with_buffer, Error, Mismatch};
use super::snapshot::Snapshot;
use crate::codec::lossy::{self, Payload};
use crate::codec::{self, Codec, Transform};
use crate::gpu::{self, Buffer, Device, Job, Op, Slots, Stage};
use crate::store::cas::{Cas, Key};
use crate::store::history::{History, ObjectId};

/// Bytes of planes per batch (at least one chunk).
const STAGE_BYTES: usize = 128 << 20;

/// Deepest chain of bases followed (as [`super::rebuild`]).
const MAX_DEPTH: usize = 1000;

/// One tensor in device memory.
pub struct DeviceTensor {
    /// The safetensors file it belongs to.
    pub file: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub buffer: Buffer,
}

/// A tensor's key: its safetensors file and its name (names repeat across files).
pub type TensorKey = (String, String);

/// The tensors of one snapshot in device memory, by file and name.
pub struct DeviceModel {
    pub commit: ObjectId,
    pub snapshot: Snapshot,
    pub tensors: BTreeMap<TensorKey, DeviceTensor>,
}

impl DeviceModel {
    pub fn bytes(&self) -> u64 {
        self.tensors.values().map(|t| t.buffer.len() as u64).sum()
    }

    /// The tensor called `name`, when exactly one file has one.
    pub fn named(&self, name: &str) -> Option<&DeviceTensor> {
        let mut found = self.tensors.iter().filter(|((_, n), _)| n == name).map(|(_, t)| t);
        match (found.next(), found.next()) {
            (Some(t), None) => Some(t),
            _ => None,
        }
    }
}

/// Why a device rebuild failed: the device, or the stored data (named as in a CPU rebuild).
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("device: {0}")]
    Gpu(#[from] gpu::Error),
    #[error(transparent)]
    Rebuild(#[from] Box<Error>),
}

impl From<Error> for DeviceError {
    fn from(e: Error) -> Self {
        DeviceError::Rebuild(Box::new(e))
    }
}

/// What a rebuild or a check took.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub chunks: usize,
    pub bytes: u64,
    /// Wall time of the whole operation.
    pub wall: Duration,
    /// Device time spent in the kernels; of it, counting the grouped chunks' keys and
    /// scanning the counts.
    pub kernels: Duration,
    pub count: Duration,
    pub scan: Duration,
    /// Grouped blocks whose slots were counted on the device, and those that took kept ones.
    pub counted: usize,
    pub reused: usize,
    /// Wall time the host spent decoding planes, and waiting for the device to free a stage.
    pub decode: Duration,
    pub wait: Duration,
}

/// Two stages, filled in turn.
pub struct Stages {
    stages: [Stage; 2],
}

impl Stages {
    pub fn new(device: &Device) -> Result<Stages, gpu::Error> {
        Ok(Stages {
            stages: [device.stage(STAGE_BYTES)?, device.stage(STAGE_BYTES)?],
        })
    }

    /// Grows both stages to hold at least `len` bytes.
    fn reserve(&mut self, device: &Device, len: usize) -> Result<(), gpu::Error> {
        for s in &mut self.stages {
            if s.capacity() < len {
                *s = device.stage(len)?;
            }
        }
        Ok(())
    }
}

/// One chunk of a tensor: where it is in the snapshot and on the device.
struct Task<'s> {
    file: &'s str,
    seg: usize,
    segment: &'s Segment,
    chunk: usize,
    tensor: &'s str,
    start: u64,
    len: usize,
    /// Bytes of a stage its planes take: none for `same`, room for a lossy chunk's payload.
    slot: usize,
}

/// Every chunk of every tensor of `snap`'s safetensors files, in file and offset order.
fn tasks(snap: &Snapshot) -> Vec<Task<'_>> {
    let mut files: Vec<_> = snap.manifests.iter().filter(|(_, m)| m.kind == "safetensors").collect();
    files.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::new();
    for (file, m) in files {
        for (seg, segment) in m.segments.iter().enumerate() {
            let Some(t) = &segment.tensor else { continue };
            for chunk in 0..segment.chunks.len() {
                let (start, end) = segment.chunk_range(chunk);
                let len = (end - start) as usize;
                let codec = segment.chunks[chunk].codec;
                let slot = match codec {
                    Codec::Same => 0,
                    Codec::Int8 => lossy::int8_payload_len(len / segment.width as usize),
                    Codec::LowRank => {
                        let rank = segment.lossy.as_ref().and_then(|l| l.rank).unwrap_or(0);
                        lossy::lowrank_payload_room(len / segment.width as usize, t.matrix().1, rank as usize)
                    }
                    _ => len,
                };
                out.push(Task {
                    file,
                    seg,
                    segment,
                    chunk,
                    tensor: &t.name,
                    start,
                    len,
                    slot,
                });
            }
        }
    }
    out
}

/// Rebuilds commit `commit` on the device. A base on the way that is `resident` is used from
/// there, with the slots of its grouped chunks kept in the [`Slots`] beside it; the others are
/// rebuilt first and freed when the next level is done. `reuse` offers device memory of an
/// earlier result to write into (its tensors of equal name and size).
pub fn rebuild(
    device: &Device,
    stages: &mut Stages,
    history: &History,
    cas: &Cas,
    commit: ObjectId,
    resident: Option<(&DeviceModel, &mut Slots)>,
    reuse: Option<DeviceModel>,
) -> Result<(DeviceModel, Stats), DeviceError> {
    let (resident, mut slots) = resident.unzip();
    let started = Instant::now();
    let mut levels = Vec::new();
    let mut next = Some(commit);
    while let Some(c) = next {
        if levels.len() >= MAX_DEPTH {
            return Err(Error::TooDeep(MAX_DEPTH).into());
        }
        let snap = Snapshot::load(history, history.commit_info(c).map_err(Error::from)?.tree).map_err(Error::from)?;
        next = snap.base().map_err(Error::from)?;
        levels.push((c, snap));
        if next.is_some() && resident.is_some_and(|r| Some(r.commit) == next) {
            break;
        }
    }
    let mut stats = Stats::default();
    let mut below: Option<DeviceModel> = None;
    let mut reuse = reuse;
    while let Some((c, snap)) = levels.pop() {
        let (parent, slots) = match (&below, snap.base().map_err(Error::from)?) {
            (_, None) => (None, None),
            (Some(b), Some(_)) => (Some(b), None),
            (None, Some(_)) => (resident, slots.as_deref_mut()),
        };
        let into = if levels.is_empty() { reuse.take() } else { None };
        let (model, s) = rebuild_level(device, stages, cas, c, snap, parent, slots, into)?;
        stats.chunks += s.chunks;
        stats.bytes += s.bytes;
        stats.kernels += s.kernels;
        stats.count += s.count;
        stats.scan += s.scan;
        stats.counted += s.counted;
        stats.reused += s.reused;
        stats.decode += s.decode;
        stats.wait += s.wait;
        below = Some(model);
    }
    stats.wall = started.elapsed();
    Ok((below.expect("at least the commit itself"), stats))
}

/// Rebuilds one snapshot on the device against `parent`, its base's tensors on the device
/// (with `slots` kept for them, if they stay there).
#[allow(clippy::too_many_arguments)]
fn rebuild_level(
    device: &Device,
    stages: &mut Stages,
    cas: &Cas,
    commit: ObjectId,
    snap: Snapshot,
    parent: Option<&DeviceModel>,
    mut slots: Option<&mut Slots>,
    mut reuse: Option<DeviceModel>,
) -> Result<(DeviceModel, Stats), DeviceError> {
    let mut tensors = BTreeMap::new();
    for (file, m) in snap.manifests.iter().filter(|(_, m)| m.kind == "safetensors") {
        for segment in &m.segments {
            let Some(t) = &segment.tensor else { continue };
            let key = (file.clone(), t.name.clone());
            let recycled = reuse
                .as_mut()
                .and_then(|r| r.tensors.remove(&key))
                .filter(|old| old.buffer.len() == segment.len as usize);
            let buffer = match recycled {
                Some(old) => old.buffer,
                None => device.alloc(segment.len as usize)?,
            };
            tensors.insert(
                key,
                DeviceTensor {
                    file: file.clone(),
                    dtype: t.dtype.clone(),
                    shape: t.shape.clone(),
                    buffer,
                },
            );
        }
    }
    drop(reuse);
    let factors = load_factors(device, cas, &snap)?;
    let all = tasks(&snap);
    let largest = all.iter().map(|t| t.slot).max().unwrap_or(0);
    stages.reserve(device, largest)?;
    // The parent tensor of each segment, checked to pair up chunk by chunk.
    let parent_of = |task: &Task| -> Result<Option<&Buffer>, Error> {
        let Some(pref) = &task.segment.parent else {
            return Ok(None);
        };
        let what = || segment_name(&snap.manifests[task.file], task.seg);
        let base = snap.base()?.map(|b| b.to_string()).unwrap_or_default();
        let missing = || Error::MissingParent {
            file: task.file.to_string(),
            what: what(),
            tensor: pref.tensor.clone(),
            base: base.clone(),
        };
        let parent = parent.ok_or_else(missing)?;
        let (pm, pseg) = parent.snapshot.find(pref).ok_or_else(missing)?;
        let ps = &pm.segments[pseg];
        let s = task.segment;
        if ps.len != s.len || ps.chunk_size != s.chunk_size || ps.width != s.width {
            return Err(missing());
        }
        let key = (pref.file.clone(), pref.tensor.clone());
        let buffer = &parent.tensors.get(&key).ok_or_else(missing)?.buffer;
        if buffer.len() as u64 != s.len {
            return Err(missing());
        }
        Ok(Some(buffer))
    };

    let mut stats = Stats {
        chunks: all.len(),
        bytes: all.iter().map(|t| t.len as u64).sum(),
        ..Stats::default()
    };
    let capacity = stages.stages[0].capacity();
    let mut batch: Vec<&Task> = Vec::new();
    let mut used = 0;
    let mut turn = 0;
    let (mut decode, mut wait) = (Duration::ZERO, Duration::ZERO);
    let mut flush = |batch: &mut Vec<&Task>, used: &mut usize| -> Result<(), DeviceError> {
        let stage = &mut stages.stages[turn % 2];
        turn += 1;
        let t = Instant::now();
        stage.host()?;
        wait += t.elapsed();
        let t = Instant::now();
        let jobs = decode_batch(cas, &snap, batch, stage, &tensors, &factors, &parent_of)?;
        decode += t.elapsed();
        device.submit(stage, *used, &jobs, slots.as_deref_mut())?;
        batch.clear();
        *used = 0;
        Ok(())
    };
    for task in &all {
        if used + task.slot > capacity {
            flush(&mut batch, &mut used)?;
        }
        batch.push(task);
        used += task.slot;
    }
    if !batch.is_empty() {
        flush(&mut batch, &mut used)?;
    }
    let t = Instant::now();
    let timing = device.synchronize()?;
    stats.kernels = timing.kernels;
    stats.count = timing.count;
    stats.scan = timing.scan;
    stats.counted = timing.counted;
    stats.reused = timing.reused;
    stats.wait = wait + t.elapsed();
    stats.decode = decode;
    Ok((
        DeviceModel {
            commit,
            snapshot: snap,
            tensors,
        },
        stats,
    ))
}

/// The B factors of a snapshot's low-rank tensors on the device, by file and segment.
type Factors<'s> = HashMap<(&'s str, usize), Buffer>;

fn load_factors<'s>(device: &Device, cas: &Cas, snap: &'s Snapshot) -> Result<Factors<'s>, DeviceError> {
    let mut factors = HashMap::new();
    for (file, m) in snap.manifests.iter().filter(|(_, m)| m.kind == "safetensors") {
        for (seg, segment) in m.segments.iter().enumerate() {
            let Some(key) = segment.lossy.as_ref().and_then(|l| l.factor) else {
                continue;
            };
            let bytes = cas.get(&key).map_err(|source| Error::Factor {
                file: file.clone(),
                what: segment_name(m, seg),
                source: Box::new(source),
            })?;
            let buffer = device.alloc(bytes.len())?;
            device.write(&buffer, 0, &bytes)?;
            factors.insert((file.as_str(), seg), buffer);
        }
    }
    Ok(factors)
}

/// Decodes the planes of `batch` into `stage` (in parallel) and describes each block of each
/// chunk (see [`codec::chunk`]) as a job; a lossy chunk's payload is one job.
fn decode_batch<'p>(
    cas: &Cas,
    snap: &Snapshot,
    batch: &[&Task],
    stage: &mut Stage,
    tensors: &BTreeMap<TensorKey, DeviceTensor>,
    factors: &Factors<'_>,
    parent_of: &(dyn Fn(&Task) -> Result<Option<&'p Buffer>, Error> + Sync),
) -> Result<Vec<Job>, DeviceError> {
    let host = stage.host()?;
    // Each chunk's share of the stage, in batch order.
    let mut slices: Vec<&mut [u8]> = Vec::with_capacity(batch.len());
    let mut offsets = Vec::with_capacity(batch.len());
    let mut rest: &mut [u8] = host;
    let mut at = 0;
    for task in batch {
        let (mine, tail) = std::mem::take(&mut rest).split_at_mut(task.slot);
        slices.push(mine);
        offsets.push(at);
        at += task.slot;
        rest = tail;
    }
    batch
        .par_iter()
        .zip(slices)
        .zip(offsets)
        .map(|((task, planes), at)| {
            let chunk = &task.segment.chunks[task.chunk];
            let what = || segment_name(&snap.manifests[task.file], task.seg);
            let width = task.segment.width as usize;
            let read_blob = |coded: &mut Vec<u8>, blob: Key| {
                cas.read_unverified(&blob, coded).map_err(|source| Error::Blob {
                    file: task.file.to_string(),
                    what: what(),
                    chunk: task.chunk,
                    source: Box::new(source),
                })
            };
            let decode_err = |blob: Key| {
                move |source| Error::Decode {
                    file: task.file.to_string(),
                    what: what(),
                    chunk: task.chunk,
                    blob,
                    source,
                }
            };
            let out = tensors[&(task.file.to_string(), task.tensor.to_string())]
                .buffer
                .addr(task.start);
            let parent = parent_of(task)?.map(|p| p.addr(task.start));
            let (op, blocks) = match (chunk.codec, chunk.blob) {
                (Codec::Same, _) => (Op::Same, vec![task.len]),
                (c, Some(blob)) if c.is_lossy() => {
                    let factor = factors.get(&(task.file, task.seg));
                    let (float, payload, _) = with_buffer(|coded| {
                        let body = read_blob(coded, blob)?;
                        lossy::decode_payload(&coded[body], width, task.len, factor.map(Buffer::len), planes)
                            .map_err(decode_err(blob))
                    })?;
                    let op = match payload {
                        Payload::Int8 => Op::Int8 { float: float.code() },
                        Payload::LowRank { rank, cols, first } => Op::LowRank {
                            float: float.code(),
                            rank: rank as u32,
                            cols: cols as u64,
                            element: first,
                            factor: factor
                                .expect("a low-rank payload is checked against its factor")
                                .addr(0),
                        },
                    };
                    (op, vec![task.len])
                }
                (_, Some(blob)) => {
                    let (transform, blocks) = with_buffer(|coded| {
                        let body = read_blob(coded, blob)?;
                        codec::chunk::decode_planes(&coded[body], width, planes).map_err(decode_err(blob))
                    })?;
                    let op = match transform {
                        Transform::Full => Op::Full,
                        Transform::Xor => Op::Xor,
                        Transform::Sub => Op::Sub,
                        Transform::SubCtx { bits } => Op::SubCtx { bits },
                    };
                    (op, blocks)
                }
                (_, None) => unreachable!("validated: only `same` chunks have no blob"),
            };
            if op.needs_parent() && parent.is_none() {
                return Err(Error::NoBase {
                    file: task.file.to_string(),
                    what: what(),
                });
            }
            // Block i's planes lie where the block lies in the chunk.
            let mut start = 0;
            let jobs = blocks.into_iter().map(|len| {
                let job = Job {
                    op,
                    width,
                    len,
                    out: out + start as u64,
                    parent: parent.map_or(0, |p| p + start as u64),
                    planes: at + start,
                };
                start += len;
                job
            });
            Ok(jobs.collect::<Vec<Job>>())
        })
        .collect::<Result<Vec<Vec<Job>>, Error>>()
        .map(|jobs| jobs.into_iter().flatten().collect())
        .map_err(DeviceError::from)
}

/// Bytes of chunks hashed by one call of [`Device::blake3`] in [`check`] (its device memory
/// for chaining values is 1/32 of this, twice).
const CHECK_BYTES: u64 = 1 << 30;

/// Checks every chunk of `model`'s tensors against its blake3 in `model.snapshot`, hashing
/// on the device: nothing but the hashes is read back.
pub fn check(device: &Device, model: &DeviceModel) -> Result<Stats, DeviceError> {
    let started = Instant::now();
    let snap = &model.snapshot;
    let all = tasks(snap);
    let mut from = 0;
    while from < all.len() {
        let mut bytes = 0;
        let mut to = from;
        while to < all.len() && (to == from || bytes + all[to].len as u64 <= CHECK_BYTES) {
            bytes += all[to].len as u64;
            to += 1;
        }
        let batch = &all[from..to];
        let ranges: Vec<(u64, usize)> = batch
            .iter()
            .map(|task| {
                let tensor = &model.tensors[&(task.file.to_string(), task.tensor.to_string())];
                (tensor.buffer.addr(task.start), task.len)
            })
            .collect();
        let found = device.blake3(&ranges)?;
        for (task, found) in batch.iter().zip(found) {
            let chunk = &task.segment.chunks[task.chunk];
            let found = Key(found);
            if found != chunk.hash {
                return Err(mismatch(snap, task, found).into());
            }
        }
        from = to;
    }
    Ok(Stats {
        chunks: all.len(),
        bytes: all.iter().map(|t| t.len as u64).sum(),
        wall: started.elapsed(),
        ..Stats::default()
    })
}

fn mismatch(snap: &Snapshot, task: &Task, found: Key) -> Error {
    let chunk = &task.segment.chunks[task.chunk];
    Error::Hash {
        file: task.file.to_string(),
        what: segment_name(&snap.manifests[task.file], task.seg),
        chunk: task.chunk,
        mismatch: Box::new(Mismatch {
            blob: chunk.blob,
            found,
            expected: chunk.hash,
        }),
    }
}

/// Where [`verify`] hands each checked chunk: (file, offset in the file, bytes).
pub type Sink<'a> = dyn Fn(&str, u64, &[u8]) -> Result<(), Error> + Sync + 'a;

/// Reads every chunk of `model`'s tensors back from the device and checks it against its
/// blake3 in `model.snapshot`; `sink` gets each checked chunk (file, offset in the file,
/// bytes), in no particular order.
pub fn verify(
    device: &Device,
    stages: &mut Stages,
    model: &DeviceModel,
    sink: &Sink<'_>,
) -> Result<Stats, DeviceError> {
    let started = Instant::now();
    let snap = &model.snapshot;
    let all = tasks(snap);
    let largest = all.iter().map(|t| t.len).max().unwrap_or(0);
    stages.reserve(device, largest)?;
    let capacity = stages.stages[0].capacity();
    let mut batches: Vec<Vec<&Task>> = vec![Vec::new()];
    let mut used = 0;
    for task in &all {
        if used + task.len > capacity {
            batches.push(Vec::new());
            used = 0;
        }
        batches.last_mut().expect("one at least").push(task);
        used += task.len;
    }
    let check = |stage: &mut Stage, batch: &[&Task]| -> Result<(), DeviceError> {
        let host = stage.host()?;
        let mut at = 0;
        let mut pieces = Vec::with_capacity(batch.len());
        for task in batch {
            pieces.push((task, &host[at..at + task.len]));
            at += task.len;
        }
        pieces
            .into_par_iter()
            .try_for_each(|(task, bytes)| {
                let found = Key::of(bytes);
                if found != task.segment.chunks[task.chunk].hash {
                    return Err(mismatch(snap, task, found));
                }
                sink(task.file, task.segment.offset + task.start, bytes)
            })
            .map_err(DeviceError::from)
    };
    for (k, batch) in batches.iter().enumerate() {
        let stage = &mut stages.stages[k % 2];
        stage.host()?;
        let mut at = 0;
        for task in batch {
            device.read_into(
                &model.tensors[&(task.file.to_string(), task.tensor.to_string())].buffer,
                task.start as usize,
                stage,
                at,
                task.len,
            )?;
            at += task.len;
        }
        if k > 0 {
            check(&mut stages.stages[(k - 1) % 2], &batches[k - 1])?;
        }
    }
    if let Some(last) = batches.len().checked_sub(1) {
        check(&mut stages.stages[last % 2], &batches[last])?;
    }
    Ok(Stats {
        chunks: all.len(),
        bytes: all.iter().map(|t| t.len as u64).sum(),
        wall: started.elapsed(),
        ..Stats::default()
    })
}
