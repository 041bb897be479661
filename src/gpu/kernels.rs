//! The CUDA sources of `kernels/`, embedded in the binary and compiled by NVRTC when a device
//! is opened (no nvcc at build time).

use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions, Ptx};

use super::Error;

/// One source file of `kernels/` and the kernel functions it defines.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub file: &'static str,
    pub text: &'static str,
    pub functions: &'static [&'static str],
}

/// `kernels/apply.cu`: joins decoded byte planes and undoes each chunk transform in place.
pub const APPLY: Source = Source {
    file: "apply.cu",
    text: include_str!("../../kernels/apply.cu"),
    functions: &["ctx_count", "ctx_scan", "apply"],
};

/// `kernels/blake3.cu`: BLAKE3 hashes of ranges of device memory.
pub const HASH: Source = Source {
    file: "blake3.cu",
    text: include_str!("../../kernels/blake3.cu"),
    functions: &["b3_chunks", "b3_parents", "b3_roots"],
};

/// Every source, in the order [`super::Device::open`] loads them.
pub const SOURCES: [Source; 2] = [APPLY, HASH];

/// Whether the NVRTC library can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to open the library by its usual names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles `source` to PTX for compute capability `major.minor`.
pub fn compile(source: &Source, major: i32, minor: i32) -> Result<Ptx, Error> {
    if !nvrtc_present() {
        return Err(Error::NoNvrtc);
    }
    let opts = CompileOptions {
        options: vec![
            format!("--gpu-architecture=compute_{major}{minor}"),
            "-std=c++17".into(),
        ],
        name: Some(source.file.into()),
        ..Default::default()
    };
    compile_ptx_with_opts(source.text, opts).map_err(|e| Error::Compile {
        file: source.file,
        log: match e {
            CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => format!("{other:?}"),
        },
    })
}
