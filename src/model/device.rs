//! Rebuilding a snapshot's tensors in device memory (feature `cuda`).
//!
//! Every chunk of every tensor is decoded on the host as far as its byte planes
//! ([`codec::chunk::decode_planes`], on all cores), into one of two page-locked stages; while
//! the device applies one stage's batch (a job per block of each chunk) against the parent's
//! tensors (already on the device), the host fills the other. A snapshot whose base is not on
//! the device is rebuilt on top of its base, rebuilt the same way first, down the chain. [`verify`] reads the tensors back in
//! stage-sized batches and checks every chunk against its blake3, which is also how checkout
//! to a directory writes them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::manifest::Segment;
use super::rebuild::{segment_name, with_buffer, Error, Mismatch};
use super::snapshot::Snapshot;
use crate::codec::{self, Codec, Transform};
use crate::gpu::{self, Buffer, Device, Job, Op, Stage};
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

/// Fails, before anything is allocated, when commit `commit` or a base down its chain (up to
/// `resident`) has chunks the device does not apply: the lossy tiers.
pub fn check_applicable(history: &History, commit: ObjectId, resident: Option<ObjectId>) -> Result<(), DeviceError> {
    let mut next = Some(commit);
    let mut depth = 0;
    while let Some(c) = next.filter(|&c| Some(c) != resident) {
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep(MAX_DEPTH).into());
        }
        let snap = Snapshot::load(history, history.commit_info(c).map_err(Error::from)?.tree).map_err(Error::from)?;
        for (file, m) in &snap.manifests {
            for (s, seg) in m.segments.iter().enumerate() {
                for (i, chunk) in seg.chunks.iter().enumerate() {
                    if let (true, Some(blob)) = (chunk.codec.is_lossy(), chunk.blob) {
                        return Err(lossy_refused(file, segment_name(m, s), i, blob).into());
                    }
                }
            }
        }
        next = snap.base().map_err(Error::from)?;
    }
    Ok(())
}

fn lossy_refused(file: &str, what: String, chunk: usize, blob: Key) -> Error {
    Error::Decode {
        file: file.to_string(),
        what,
        chunk,
        blob,
        source: codec::Error::Lossy("lossy chunks are rebuilt on the CPU only (use --device cpu)"),
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
    /// Device time spent in the kernels.
    pub kernels: Duration,
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
                out.push(Task {
                    file,
                    seg,
                    segment,
                    chunk,
                    tensor: &t.name,
                    start,
                    len: (end - start) as usize,
                });
            }
        }
    }
    out
}

/// Rebuilds commit `commit` on the device. A base on the way that is `resident` is used from
/// there; the others are rebuilt first and freed when the next level is done. `reuse` offers
/// device memory of an earlier result to write into (its tensors of equal name and size).
pub fn rebuild(
    device: &Device,
    stages: &mut Stages,
    history: &History,
    cas: &Cas,
    commit: ObjectId,
    resident: Option<&DeviceModel>,
    reuse: Option<DeviceModel>,
) -> Result<(DeviceModel, Stats), DeviceError> {
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
        let parent = match (&below, snap.base().map_err(Error::from)?) {
            (_, None) => None,
            (Some(b), Some(_)) => Some(b),
            (None, Some(_)) => resident,
        };
        let into = if levels.is_empty() { reuse.take() } else { None };
        let (model, s) = rebuild_level(device, stages, cas, c, snap, parent, into)?;
        stats.chunks += s.chunks;
        stats.bytes += s.bytes;
        stats.kernels += s.kernels;
        stats.decode += s.decode;
        stats.wait += s.wait;
        below = Some(model);
    }
    stats.wall = started.elapsed();
    Ok((below.expect("at least the commit itself"), stats))
}

/// Rebuilds one snapshot on the device against `parent`, its base's tensors on the device.
fn rebuild_level(
    device: &Device,
    stages: &mut Stages,
    cas: &Cas,
    commit: ObjectId,
    snap: Snapshot,
    parent: Option<&DeviceModel>,
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
    let all = tasks(&snap);
    let largest = all.iter().map(|t| t.len).max().unwrap_or(0);
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
        let jobs = decode_batch(cas, &snap, batch, stage, &tensors, &parent_of)?;
        decode += t.elapsed();
        device.submit(stage, *used, &jobs)?;
        batch.clear();
        *used = 0;
        Ok(())
    };
    for task in &all {
        let planes = if task.segment.chunks[task.chunk].codec == Codec::Same {
            0
        } else {
            task.len
        };
        if used + planes > capacity {
            flush(&mut batch, &mut used)?;
        }
        batch.push(task);
        used += planes;
    }
    if !batch.is_empty() {
        flush(&mut batch, &mut used)?;
    }
    let t = Instant::now();
    stats.kernels = device.synchronize()?.kernels;
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

/// Decodes the planes of `batch` into `stage` (in parallel) and describes each block of each
/// chunk (see [`codec::chunk`]) as a job.
fn decode_batch<'p>(
    cas: &Cas,
    snap: &Snapshot,
    batch: &[&Task],
    stage: &mut Stage,
    tensors: &BTreeMap<TensorKey, DeviceTensor>,
    parent_of: &(dyn Fn(&Task) -> Result<Option<&'p Buffer>, Error> + Sync),
) -> Result<Vec<Job>, DeviceError> {
    let host = stage.host()?;
    // Each chunk's share of the stage, in batch order.
    let mut slices: Vec<&mut [u8]> = Vec::with_capacity(batch.len());
    let mut offsets = Vec::with_capacity(batch.len());
    let mut rest: &mut [u8] = host;
    let mut at = 0;
    for task in batch {
        let n = match task.segment.chunks[task.chunk].codec {
            Codec::Same => 0,
            _ => task.len,
        };
        let (mine, tail) = std::mem::take(&mut rest).split_at_mut(n);
        slices.push(mine);
        offsets.push(at);
        at += n;
        rest = tail;
    }
    batch
        .par_iter()
        .zip(slices)
        .zip(offsets)
        .map(|((task, planes), at)| {
            let chunk = &task.segment.chunks[task.chunk];
            let what = || segment_name(&snap.manifests[task.file], task.seg);
            let out = tensors[&(task.file.to_string(), task.tensor.to_string())]
                .buffer
                .addr(task.start);
            let parent = parent_of(task)?.map(|p| p.addr(task.start));
            let (op, blocks) = match (chunk.codec, chunk.blob) {
                (Codec::Same, _) => (Op::Same, vec![task.len]),
                (c, Some(blob)) if c.is_lossy() => return Err(lossy_refused(task.file, what(), task.chunk, blob)),
                (_, Some(blob)) => {
                    let (transform, blocks) = with_buffer(|coded| {
                        let body = cas.read_unverified(&blob, coded).map_err(|source| Error::Blob {
                            file: task.file.to_string(),
                            what: what(),
                            chunk: task.chunk,
                            source: Box::new(source),
                        })?;
                        codec::chunk::decode_planes(&coded[body], task.segment.width as usize, planes).map_err(
                            |source| Error::Decode {
                                file: task.file.to_string(),
                                what: what(),
                                chunk: task.chunk,
                                blob,
                                source,
                            },
                        )
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
                    width: task.segment.width as usize,
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
                let chunk = &task.segment.chunks[task.chunk];
                let found = Key::of(bytes);
                if found != chunk.hash {
                    return Err(Error::Hash {
                        file: task.file.to_string(),
                        what: segment_name(&snap.manifests[task.file], task.seg),
                        chunk: task.chunk,
                        mismatch: Box::new(Mismatch {
                            blob: chunk.blob,
                            found,
                            expected: chunk.hash,
                        }),
                    });
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
