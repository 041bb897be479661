//! The CUDA sources of `kernels/`, embedded in the binary and compiled by NVRTC when a device
//! is opened (no nvcc at build time).

use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions, Ptx};

use super::Error;

/// `kernels/apply.cu`: joins decoded byte planes and undoes each chunk transform in place.
pub const APPLY: &str = include_str!("../../kernels/apply.cu");

/// Kernel functions of [`APPLY`].
pub const FUNCTIONS: [&str; 3] = ["ctx_count", "ctx_scan", "apply"];

/// Whether the NVRTC library can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to open the library by its usual names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles [`APPLY`] to PTX for compute capability `major.minor`.
pub fn compile(major: i32, minor: i32) -> Result<Ptx, Error> {
    if !nvrtc_present() {
        return Err(Error::NoNvrtc);
    }
    let opts = CompileOptions {
        options: vec![
            format!("--gpu-architecture=compute_{major}{minor}"),
            "-std=c++17".into(),
        ],
        name: Some("apply.cu".into()),
        ..Default::default()
    };
    compile_ptx_with_opts(APPLY, opts).map_err(|e| Error::Compile {
        file: "apply.cu",
        log: match e {
            CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => format!("{other:?}"),
        },
    })
}
