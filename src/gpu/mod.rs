//! The device side of GPU checkout (cargo feature `cuda`): device memory, the kernels of
//! `kernels/` compiled at run time by NVRTC, and batches of decoded chunks applied in place.
//!
//! Nothing here knows about snapshots or manifests: the caller decodes chunks' byte planes into
//! a [`Stage`] and describes each with a [`Job`]; [`Device::submit`] copies the planes to the
//! device and applies them against their parents, which are already there. The CUDA driver and
//! NVRTC are loaded when a device is opened, so a build with this feature runs (on the CPU)
//! where neither exists.

mod device;
mod hash;
pub mod kernels;
mod slots;

pub use device::{Buffer, Device, Job, Op, Stage, Timing};
pub use slots::Slots;

/// Why the device could not be used or a device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no CUDA driver (libcuda) could be loaded")]
    NoDriver,
    #[error("no NVRTC library (libnvrtc) could be loaded; put its directory on LD_LIBRARY_PATH")]
    NoNvrtc,
    #[error("device cuda:{ordinal} does not exist ({count} found)")]
    NoSuchDevice { ordinal: usize, count: i32 },
    #[error("compiling kernels/{file} with NVRTC failed: {log}")]
    Compile { file: &'static str, log: String },
    #[error("CUDA {what}: {source}")]
    Driver {
        what: &'static str,
        source: cudarc::driver::DriverError,
    },
    #[error("a chunk of {width}-byte elements coded as {op:?} cannot be applied on the device")]
    Unsupported { width: usize, op: Op },
}

/// Wraps a driver error with what was being done.
pub(crate) fn driver(what: &'static str) -> impl FnOnce(cudarc::driver::DriverError) -> Error {
    move |source| Error::Driver { what, source }
}
