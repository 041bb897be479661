//! Checkout into GPU memory (feature `cuda`), and a resident base that swaps fine-tunes in.
//!
//! [`Repository::checkout_device`] rebuilds a revision's tensors on a device and checks every
//! chunk against its blake3: hashed on the device, or, with a directory, read back to the host,
//! checked there and written into the files, byte for byte as the CPU checkout does.
//! [`Resident`] keeps a base's tensors on the device; [`Resident::swap_in`] rebuilds a model of
//! that family into a second set of device buffers (reused from swap to swap) from the
//! resident base, and [`Resident::swap_out`] returns to the base without reloading it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::checkout::{write_atomically, Error as CheckoutError};
use super::rev;
use super::Repository;
use crate::gpu::{Device, Slots};
use crate::model::device::{self, DeviceError, DeviceModel, Stages, Stats};
use crate::model::rebuild::{self, destination, output_file, Rebuilder};
use crate::model::snapshot;
use crate::store::copies::Copies;
use crate::store::history::{self, ObjectId};

/// Errors of device checkout and of swaps.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Rev(#[from] rev::Error),
    #[error(transparent)]
    History(#[from] history::Error),
    #[error("revision {rev}: {source}")]
    Snapshot { rev: String, source: snapshot::Error },
    #[error("revision {rev}: {source}")]
    Device { rev: String, source: DeviceError },
    #[error(transparent)]
    Checkout(#[from] CheckoutError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Timings in seconds, for reports.
#[derive(Debug, Serialize, Clone, Copy)]
pub struct Seconds {
    /// Wall time of rebuilding the tensors on the device (decode on the host included).
    pub rebuild: f64,
    /// Device time of the kernels that applied the chunks.
    pub kernels: f64,
    /// Of `kernels`: counting the grouped chunks' parent keys (`ctx_count`).
    pub count: f64,
    /// Of `kernels`: turning those counts into slots (`ctx_scan`).
    pub scan: f64,
    /// Wall time of reading every chunk back and checking its hash (and writing files).
    pub verify: f64,
    /// Of `rebuild`: the host decoding planes, and the host waiting for the device.
    pub decode: f64,
    pub wait: f64,
}

fn seconds(rebuilt: &Stats, verified: Option<&Stats>) -> Seconds {
    Seconds {
        rebuild: rebuilt.wall.as_secs_f64(),
        kernels: rebuilt.kernels.as_secs_f64(),
        count: rebuilt.count.as_secs_f64(),
        scan: rebuilt.scan.as_secs_f64(),
        verify: verified.map_or(0.0, |v| v.wall.as_secs_f64()),
        decode: rebuilt.decode.as_secs_f64(),
        wait: rebuilt.wait.as_secs_f64(),
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub commit: String,
    pub device: String,
    pub tensors: usize,
    pub bytes: u64,
    pub verified: bool,
    /// The lossy tier of the revision, if it stores tensors lossy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lossy: Option<String>,
    pub seconds: Seconds,
    /// The directory written, with `-o`.
    pub dir: Option<PathBuf>,
    pub files: usize,
}

impl Repository {
    /// Rebuilds revision `rev` on `device`, checks every chunk, and with `dir` writes every file
    /// of the revision there (tensors from the device, the rest as [`Repository::checkout`]).
    pub fn checkout_device(
        &self,
        rev: &str,
        device: &Device,
        dir: Option<&Path>,
        force: bool,
    ) -> Result<(DeviceModel, Report), Error> {
        let commit = self.resolve(rev)?;
        let dev_err = |source| Error::Device {
            rev: rev.into(),
            source,
        };
        if let Some(dir) = dir {
            if !force && dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
                return Err(CheckoutError::NotEmpty(dir.to_owned()).into());
            }
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        let mut stages = Stages::new(device).map_err(|e| dev_err(e.into()))?;
        let (model, rebuilt) =
            device::rebuild(device, &mut stages, &self.history, &self.cas, commit, None, None).map_err(dev_err)?;
        let (verified, files) = match dir {
            None => (device::check(device, &model).map_err(dev_err)?, 0),
            Some(dir) => self.write_files(rev, device, &mut stages, &model, dir)?,
        };
        let report = Report {
            commit: commit.to_string(),
            device: device.describe(),
            tensors: model.tensors.len(),
            bytes: model.bytes(),
            verified: true,
            lossy: model.snapshot.meta.lossy.clone(),
            seconds: seconds(&rebuilt, Some(&verified)),
            dir: dir.map(Path::to_owned),
            files,
        };
        Ok((model, report))
    }

    /// Writes every file of `model`'s snapshot into `dir`: tensors read back from the device
    /// (and checked), headers and other files rebuilt on the host.
    fn write_files(
        &self,
        rev: &str,
        device: &Device,
        stages: &mut Stages,
        model: &DeviceModel,
        dir: &Path,
    ) -> Result<(Stats, usize), Error> {
        let snap = &model.snapshot;
        let rebuild_err = |source: rebuild::Error| {
            Error::Checkout(CheckoutError::Rebuild {
                rev: rev.into(),
                source: Box::new(source),
            })
        };
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { path, source }
        };
        let base = snap.base().map_err(|source| Error::Snapshot {
            rev: rev.into(),
            source,
        })?;
        let copies = Copies::new(&self.layout);
        let rebuilder = Rebuilder::new(&self.history, &self.cas, base)
            .map_err(rebuild_err)?
            .with_copies(&copies);
        // Safetensors files: opened first, filled by the check of the tensors below.
        let mut open = Vec::new();
        for entry in &snap.meta.files {
            let dest = destination(dir, &entry.path).map_err(rebuild_err)?;
            let parent = dest.parent().expect("inside dir");
            std::fs::create_dir_all(parent).map_err(io(parent))?;
            let manifest = snap.manifests.get(&entry.path);
            match manifest {
                Some(m) if m.kind == "safetensors" => {
                    let tmp = output_file(parent).map_err(io(&dest))?;
                    tmp.as_file().set_len(m.size).map_err(io(&dest))?;
                    for (s, seg) in m.segments.iter().enumerate().filter(|(_, s)| s.tensor.is_none()) {
                        for c in 0..seg.chunks.len() {
                            let (start, end) = seg.chunk_range(c);
                            let mut buf = vec![0; (end - start) as usize];
                            rebuilder
                                .chunk(snap, &entry.path, s, c, &mut buf)
                                .map_err(rebuild_err)?;
                            tmp.as_file()
                                .write_all_at(&buf, seg.offset + start)
                                .map_err(io(&dest))?;
                        }
                    }
                    open.push((entry.path.clone(), dest, tmp));
                }
                Some(_) => {
                    rebuilder
                        .write_file(snap, &entry.path, &dest, &|_| {})
                        .map_err(rebuild_err)?;
                }
                None => {
                    let content = self.history.read_blob(snap.blobs[&entry.path])?;
                    write_atomically(&dest, &content).map_err(io(&dest))?;
                }
            }
        }
        let files: std::collections::HashMap<&str, &File> = open
            .iter()
            .map(|(path, _, tmp)| (path.as_str(), tmp.as_file()))
            .collect();
        let sink = |file: &str, offset: u64, bytes: &[u8]| {
            files[file]
                .write_all_at(bytes, offset)
                .map_err(|source| rebuild::Error::Io {
                    path: dir.join(file),
                    source,
                })
        };
        let verified = device::verify(device, stages, model, &sink).map_err(|source| Error::Device {
            rev: rev.into(),
            source,
        })?;
        for (path, dest, tmp) in open {
            tmp.persist(&dest).map_err(|e| io(&dest)(e.error))?;
            let _ = copies.record(&snap.tree.to_string(), &path, &dest);
        }
        Ok((verified, snap.meta.files.len()))
    }

    /// Loads revision `rev` onto `device` as a resident base.
    pub fn resident<'d>(&self, rev: &str, device: &'d Device) -> Result<Resident<'d>, Error> {
        let (base, report) = self.checkout_device(rev, device, None, false)?;
        let stages = Stages::new(device).map_err(|e| Error::Device {
            rev: rev.into(),
            source: e.into(),
        })?;
        let slots = Slots::new(base.bytes() / SLOTS_SHARE);
        Ok(Resident {
            device,
            stages,
            base,
            slots,
            live: None,
            spare: None,
            loaded: report,
        })
    }
}

/// The default budget of a resident base's [`Slots`]: this share of the base's bytes. A
/// grouped block's slots take a u32 per tile and key (tiles of 8192 elements): a sixteenth of
/// its bytes for bf16 (grouped by 8 bits), a thirty-second for f32 by 8 bits and a quarter by
/// 11. The Llama-2-7B-shaped family of benches/gpu.sh keeps 265.7 MB of slots, 1.9% of its base.
const SLOTS_SHARE: u64 = 8;

/// A base model kept on the device, and the model swapped in on top of it, if any.
pub struct Resident<'d> {
    device: &'d Device,
    stages: Stages,
    base: DeviceModel,
    /// The slots of the grouped chunks counted against the base so far (they depend on the
    /// base alone, so every later swap skips counting them).
    slots: Slots,
    live: Option<DeviceModel>,
    /// Device memory of the last model swapped out, reused by the next swap.
    spare: Option<DeviceModel>,
    /// How the base was loaded.
    pub loaded: Report,
}

/// What one swap took.
#[derive(Debug, Serialize)]
pub struct Swap {
    pub commit: String,
    pub tensors: usize,
    pub bytes: u64,
    pub verified: bool,
    pub seconds: Seconds,
    /// Grouped blocks whose slots this swap counted on the device, and those that took the
    /// ones the base keeps.
    pub slots_counted: usize,
    pub slots_reused: usize,
}

impl Resident<'_> {
    /// The model on the device now: the one swapped in, or the base.
    pub fn model(&self) -> &DeviceModel {
        self.live.as_ref().unwrap_or(&self.base)
    }

    pub fn base(&self) -> &DeviceModel {
        &self.base
    }

    /// The slots kept for the base's grouped chunks.
    pub fn slots(&self) -> &Slots {
        &self.slots
    }

    /// Keeps at most `bytes` of device memory of slots from now on (by default an eighth of
    /// the base's size; 0 keeps none, and every swap counts its grouped chunks afresh). Slots
    /// kept so far are dropped.
    pub fn set_slots_budget(&mut self, bytes: u64) {
        self.slots = Slots::new(bytes);
    }

    /// Rebuilds revision `rev` (a model coded against the resident base, directly or down a
    /// chain) on the device from the resident base, leaving the base as it is. With `verify`,
    /// every chunk is hashed on the device and checked against its recorded hash.
    pub fn swap_in(&mut self, repo: &Repository, rev: &str, verify: bool) -> Result<Swap, Error> {
        let commit: ObjectId = repo.resolve(rev)?;
        let dev_err = |source| Error::Device {
            rev: rev.into(),
            source,
        };
        // A failure from here on (a damaged blob) leaves the base on the device and no model
        // swapped in.
        let reuse = self.live.take().or_else(|| self.spare.take());
        let (model, rebuilt) = device::rebuild(
            self.device,
            &mut self.stages,
            &repo.history,
            &repo.cas,
            commit,
            Some((&self.base, &mut self.slots)),
            reuse,
        )
        .map_err(|e| {
            // Slots of a batch that failed may never have been counted.
            self.slots.clear();
            dev_err(e)
        })?;
        let verified = match verify {
            true => Some(device::check(self.device, &model).map_err(|e| {
                // Wrong slots would fail every later swap alike: count them again.
                self.slots.clear();
                dev_err(e)
            })?),
            false => None,
        };
        let swap = Swap {
            commit: commit.to_string(),
            tensors: model.tensors.len(),
            bytes: model.bytes(),
            verified: verify,
            seconds: seconds(&rebuilt, verified.as_ref()),
            slots_counted: rebuilt.counted,
            slots_reused: rebuilt.reused,
        };
        self.live = Some(model);
        Ok(swap)
    }

    /// Returns to the base: the swapped-in model's memory is kept for the next swap.
    pub fn swap_out(&mut self) {
        if let Some(live) = self.live.take() {
            self.spare = Some(live);
        }
    }
}
