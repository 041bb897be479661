//! BLAKE3 of ranges of device memory, computed on the device (`kernels/blake3.cu`): a checkout
//! that keeps its result on the device checks every chunk without reading it back.

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::{driver, Device, Error};

/// u64 words per range (`RANGE_WORDS` in kernels/blake3.cu).
const RANGE_WORDS: usize = 4;
/// Bytes of BLAKE3's chunks (`CHUNK_LEN`).
const CHUNK_LEN: u64 = 1024;
/// Threads per block of the hashing kernels.
const THREADS: u32 = 128;

impl Device {
    /// The BLAKE3 hash of each `(device address, length)` range, as `blake3::hash` gives it
    /// for the same bytes. Waits for everything submitted before, and for the hashes.
    pub fn blake3(&self, ranges: &[(u64, usize)]) -> Result<Vec<[u8; 32]>, Error> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        self.ctx.bind_to_thread().map_err(driver("binding the context"))?;
        let mut words = Vec::with_capacity(ranges.len() * RANGE_WORDS);
        let mut values = 0u64;
        let mut widest = 1u64;
        for &(addr, len) in ranges {
            let chunks = (len as u64).div_ceil(CHUNK_LEN).max(1);
            words.extend_from_slice(&[addr, len as u64, values, chunks]);
            values += chunks;
            widest = widest.max(chunks);
        }
        let n = ranges.len() as u32;
        let table = self.stream.clone_htod(&words).map_err(driver("copying ranges"))?;
        // SAFETY: every value a kernel reads was written by the launch before it.
        let mut below =
            unsafe { self.stream.alloc::<u32>(values as usize * 8) }.map_err(driver("allocating hashes"))?;
        let mut above =
            unsafe { self.stream.alloc::<u32>(values as usize * 8) }.map_err(driver("allocating hashes"))?;
        let mut hashes = unsafe { self.stream.alloc::<u32>(ranges.len() * 8) }.map_err(driver("allocating hashes"))?;
        let grid = |threads: u64| LaunchConfig {
            grid_dim: (threads.div_ceil(u64::from(THREADS)) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let [chunks, parents, roots] = &self.hash;
        // SAFETY: the table's addresses are live device memory of `len` bytes each (the
        // caller's), the value buffers hold `values` chaining values, `hashes` one per range.
        unsafe {
            self.stream
                .launch_builder(chunks)
                .arg(&table)
                .arg(&n)
                .arg(&values)
                .arg(&mut below)
                .launch(grid(values))
                .map_err(driver("launching b3_chunks"))?;
            let mut level = 1u32;
            while (1u64 << (level - 1)) < widest {
                self.stream
                    .launch_builder(parents)
                    .arg(&table)
                    .arg(&n)
                    .arg(&values)
                    .arg(&level)
                    .arg(&below)
                    .arg(&mut above)
                    .launch(grid(values))
                    .map_err(driver("launching b3_parents"))?;
                std::mem::swap(&mut below, &mut above);
                level += 1;
            }
            self.stream
                .launch_builder(roots)
                .arg(&table)
                .arg(&n)
                .arg(&below)
                .arg(&mut hashes)
                .launch(grid(u64::from(n)))
                .map_err(driver("launching b3_roots"))?;
        }
        let words = self.stream.clone_dtoh(&hashes).map_err(driver("copying hashes"))?;
        self.stream.synchronize().map_err(driver("synchronizing"))?;
        Ok(words
            .chunks_exact(8)
            .map(|h| {
                let mut out = [0u8; 32];
                for (o, w) in out.chunks_exact_mut(4).zip(h) {
                    o.copy_from_slice(&w.to_le_bytes());
                }
                out
            })
            .collect())
    }
}
