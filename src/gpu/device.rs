//! One CUDA device: its context and stream, the compiled kernels, device buffers, and batches
//! of decoded chunks ([`Stage`]) applied by [`Device::submit`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::sys::{CUdeviceptr, CUevent_flags};
use cudarc::driver::{
    result, CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};

use super::slots::{self, Slots};
use super::{driver, kernels, Error};

/// Elements per tile, one warp's share of a chunk: grouped (the default of
/// [`Device::set_grouped_tile`]), and any other (`PLAIN_TILE` in kernels/apply.cu).
const GROUPED_TILE: u64 = 8192;
const PLAIN_TILE: u64 = 2048;
/// Warps per block of `ctx_count` and `apply` (`WARPS_PER_BLOCK`).
const WARPS_PER_BLOCK: u32 = 4;
/// Most context bits counted in shared memory (`SHARED_BITS`): 2^11 u32 counters per warp.
const SHARED_BITS: u32 = 11;
/// The widest context a grouped job may have: the codec's (`codec::context::MAX_BITS`, which
/// this layer sits below). A tile holds at least 2^bits elements.
const MAX_CONTEXT_BITS: u32 = 16;
/// Threads of `ctx_scan`'s one block per job (`SCAN_THREADS`).
const SCAN_THREADS: u32 = 1024;
/// u64 words per job (`JOB_WORDS`).
const JOB_WORDS: usize = 11;

/// What a job does with its planes: the chunk transforms of `codec::chunk`, `Same`, and the
/// lossy tiers of `codec::lossy`, whose planes are the chunk's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Full,
    Xor,
    Sub,
    SubCtx {
        bits: u8,
    },
    /// The parent's chunk, unchanged (no planes).
    Same,
    /// The parent plus int8 multiples of a scale per group; `float` is the elements' format
    /// (1 f32, 2 bf16, 3 f16).
    Int8 {
        float: u8,
    },
    /// The parent plus rows of A (in the payload) times B, the tensor's factor (rank x cols
    /// bf16 at device address `factor`); `element` is the chunk's first element.
    LowRank {
        float: u8,
        rank: u32,
        cols: u64,
        element: u64,
        factor: u64,
    },
}

impl Op {
    fn code(self) -> (u64, u64) {
        match self {
            Op::Full => (0, 0),
            Op::Xor => (1, 0),
            Op::Sub => (2, 0),
            Op::SubCtx { bits } => (3, u64::from(bits)),
            Op::Same => (4, 0),
            Op::Int8 { float } => (5, u64::from(float)),
            Op::LowRank { float, .. } => (6, u64::from(float)),
        }
    }

    /// Whether the kernels apply this op to elements of `width` bytes.
    fn applies_to(self, width: usize) -> bool {
        let float_width = |float: u8| match float {
            1 => Some(4),
            2 | 3 => Some(2),
            _ => None,
        };
        match self {
            Op::SubCtx { bits } => {
                matches!(width, 2 | 4 | 8)
                    && (1..=MAX_CONTEXT_BITS).contains(&u32::from(bits))
                    && u32::from(bits) < 8 * width as u32
            }
            Op::Int8 { float } => float_width(float) == Some(width),
            Op::LowRank {
                float,
                rank,
                cols,
                factor,
                ..
            } => float_width(float) == Some(width) && cols >= 1 && u64::from(rank) <= cols && factor != 0,
            _ => matches!(width, 1 | 2 | 4 | 8),
        }
    }

    pub fn needs_parent(self) -> bool {
        self != Op::Full
    }
}

/// Where a job's slots (the scanned counts of its parent's keys) come from.
#[derive(Debug, Clone, Copy)]
enum Counts {
    /// Not a grouped job.
    None,
    /// Counted and scanned into the stage's counts.
    Stage,
    /// Counted and scanned into memory kept in the caller's [`Slots`].
    Keep(slots::Key),
    /// Kept from an earlier batch, at this device address.
    Kept(u64),
}

impl Counts {
    /// Launch order: jobs that count first, then those with kept slots, then the rest.
    fn order(&self) -> u8 {
        match self {
            Counts::Stage | Counts::Keep(_) => 0,
            Counts::Kept(_) => 1,
            Counts::None => 2,
        }
    }
}

/// Elements per tile of a job: one warp's share.
fn tile_of(op: Op, grouped_tile: u64) -> u64 {
    match op {
        Op::SubCtx { bits } => grouped_tile.max(1 << bits),
        _ => PLAIN_TILE,
    }
}

/// Each job of `jobs` (but those of no bytes) with where its counts come from, in launch
/// order: grouped jobs that count first (their tiles are the first warps, all that `ctx_count`
/// and `ctx_scan` launch), then grouped jobs whose slots `slots` keeps, then the rest. Grouped
/// jobs not kept yet are kept while the budget of `slots` lasts.
fn plan<'j>(jobs: &'j [Job], grouped_tile: u64, slots: Option<&Slots>) -> Result<Vec<(&'j Job, Counts)>, Error> {
    let mut kept_bytes = 0u64;
    let mut planned = Vec::with_capacity(jobs.len());
    for job in jobs.iter().filter(|j| j.len > 0) {
        if !job.op.applies_to(job.width) {
            return Err(Error::Unsupported {
                width: job.width,
                op: job.op,
            });
        }
        let counts = match (job.op, slots) {
            (Op::SubCtx { bits }, Some(slots)) if u32::from(bits) <= SHARED_BITS => {
                let key = slots::Key {
                    parent: job.parent,
                    elements: (job.len / job.width) as u64,
                    width: job.width,
                    bits,
                    tile: tile_of(job.op, grouped_tile),
                };
                let bytes = 4 * (key.elements.div_ceil(key.tile) << bits);
                match slots.get(&key) {
                    Some(addr) => Counts::Kept(addr),
                    None if slots.fits(kept_bytes + bytes) => {
                        kept_bytes += bytes;
                        Counts::Keep(key)
                    }
                    None => Counts::Stage,
                }
            }
            // Larger contexts use their counts as cursors, so they are never kept.
            (Op::SubCtx { .. }, _) => Counts::Stage,
            _ => Counts::None,
        };
        planned.push((job, counts));
    }
    planned.sort_by_key(|(_, c)| c.order());
    Ok(planned)
}

/// The job table of a planned batch (`JOB_WORDS` words a job, see kernels/apply.cu), with
/// what its launches need.
#[derive(Debug)]
struct Table {
    words: Vec<u64>,
    /// Warps of all jobs (`apply`), of the jobs that count (`ctx_count`), and those jobs.
    warps: u64,
    counting_warps: u64,
    counting_jobs: u32,
    /// u32 counts the counting jobs need in the stage, and in memory for slots to keep.
    staged: u64,
    kept: u64,
    /// Each job's first count in the stage's or the kept memory (grouped jobs that count).
    count_at: Vec<u64>,
}

impl Table {
    /// The table of `planned` (in launch order, from [`plan`]), its planes in the stage's
    /// device memory at `planes_addr`; every counts address left for [`Table::place_counts`].
    fn new(planned: &[(&Job, Counts)], grouped_tile: u64, planes_addr: u64) -> Table {
        let mut t = Table {
            words: Vec::with_capacity(planned.len() * JOB_WORDS),
            warps: 0,
            counting_warps: 0,
            counting_jobs: planned.iter().take_while(|(_, c)| c.order() == 0).count() as u32,
            staged: 0,
            kept: 0,
            count_at: Vec::with_capacity(planned.len()),
        };
        for (job, counts) in planned {
            let n = (job.len / job.width) as u64;
            let tile = tile_of(job.op, grouped_tile);
            let tiles = n.div_ceil(tile);
            let at = match counts {
                Counts::Stage => Some(&mut t.staged),
                Counts::Keep(_) => Some(&mut t.kept),
                _ => None,
            };
            match (at, job.op) {
                (Some(at), Op::SubCtx { bits }) => {
                    t.count_at.push(*at);
                    *at += tiles << bits;
                    t.counting_warps += tiles;
                }
                _ => t.count_at.push(0),
            }
            let (transform, bits) = job.op.code();
            let (factor, rank, cols, element) = match job.op {
                Op::LowRank {
                    factor,
                    rank,
                    cols,
                    element,
                    ..
                } => (factor, u64::from(rank), cols, element),
                _ => (0, 0, 0, 0),
            };
            t.words.extend_from_slice(&[
                job.out,
                job.parent,
                planes_addr + job.planes as u64,
                factor,
                n,
                job.width as u64 | transform << 8 | bits << 16 | rank << 24,
                tiles,
                t.warps,
                cols,
                element,
                tile,
            ]);
            t.warps += tiles;
        }
        t
    }

    /// Points every grouped job at its counts: in the stage's at `counts_addr`, kept ones
    /// where they are, new ones to keep in the memory at `keep_addr`; returns the new ones
    /// with their addresses.
    fn place_counts(
        &mut self,
        planned: &[(&Job, Counts)],
        counts_addr: u64,
        keep_addr: Option<u64>,
    ) -> Vec<(slots::Key, u64)> {
        let mut new_slots = Vec::new();
        for (j, (at, &(_, counts))) in self.count_at.iter().zip(planned).enumerate() {
            let addr = match counts {
                Counts::None => continue,
                Counts::Stage => counts_addr + at * 4,
                Counts::Kept(addr) => addr,
                Counts::Keep(key) => {
                    let addr = keep_addr.expect("memory for the slots to keep") + at * 4;
                    new_slots.push((key, addr));
                    addr
                }
            };
            self.words[j * JOB_WORDS + 3] = addr;
        }
        new_slots
    }
}

/// One chunk to rebuild on the device: `len` bytes at device address `out`, from the planes at
/// `planes` bytes into the stage (none for [`Op::Same`]) and the parent's chunk at `parent`.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub op: Op,
    pub width: usize,
    pub len: usize,
    pub out: u64,
    pub parent: u64,
    pub planes: usize,
}

/// Device memory holding one tensor (or any bytes).
pub struct Buffer {
    /// Owns the memory: freed when the buffer is dropped.
    _slice: CudaSlice<u8>,
    addr: u64,
    /// Bytes asked for (the allocation holds at least one).
    len: usize,
}

impl Buffer {
    /// The device address of byte `offset`.
    pub fn addr(&self, offset: u64) -> u64 {
        self.addr + offset
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Page-locked host memory for decoded planes, with the device memory they are copied to.
pub struct Stage {
    host: *mut u8,
    capacity: usize,
    /// Page-locked memory for the job table, `table_words` u64 long.
    table: *mut u64,
    table_words: usize,
    planes: CudaSlice<u8>,
    jobs: CudaSlice<u64>,
    counts: CudaSlice<u32>,
    /// Recorded after the last use of `host` by the device; waited on before refilling it.
    done: CudaEvent,
    ctx: Arc<CudaContext>,
}

// SAFETY: the host pointer is owned by the stage (freed on drop) and only reached through
// `&mut self`, so a stage moves between threads like a Vec.
unsafe impl Send for Stage {}

impl Stage {
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The host memory, once the device no longer reads it.
    pub fn host(&mut self) -> Result<&mut [u8], Error> {
        self.done.synchronize().map_err(driver("waiting for a copy"))?;
        // SAFETY: `host` points to `capacity` bytes allocated by cuMemHostAlloc, owned by the
        // stage, and no device operation uses them any more.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.host, self.capacity) })
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = self.done.synchronize();
        let _ = self.ctx.bind_to_thread();
        // SAFETY: allocated by cuMemHostAlloc in `Device::stage` and not used after this.
        let _ = unsafe { result::free_host(self.host.cast()) };
        // SAFETY: as above, allocated in `Device::stage` or `Device::submit`.
        let _ = unsafe { result::free_host(self.table.cast()) };
    }
}

/// Time the device spent in the kernels of the batches submitted since the last reset.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timing {
    pub kernels: Duration,
    /// Of `kernels`: counting the grouped chunks' keys (`ctx_count`), and turning the counts
    /// into slots (`ctx_scan`).
    pub count: Duration,
    pub scan: Duration,
    pub batches: usize,
    /// Grouped jobs whose slots were counted, and those that took kept ones.
    pub counted: usize,
    pub reused: usize,
}

/// An opened CUDA device with the kernels loaded.
pub struct Device {
    pub(super) ctx: Arc<CudaContext>,
    pub(super) stream: Arc<CudaStream>,
    count: CudaFunction,
    scan: CudaFunction,
    apply: CudaFunction,
    /// The kernels of `kernels/blake3.cu` (`b3_chunks`, `b3_parents`, `b3_roots`).
    pub(super) hash: [CudaFunction; 3],
    ordinal: usize,
    name: String,
    /// Elements per tile of a grouped chunk, at least.
    grouped_tile: AtomicU64,
    /// Each submitted batch: its events (its start, after `ctx_count`, after `ctx_scan`, and
    /// its end) and its grouped jobs counted and reused; read by [`Device::synchronize`].
    events: std::sync::Mutex<Vec<([CudaEvent; 4], usize, usize)>>,
}

impl Device {
    /// Opens device `ordinal`: loads the driver, compiles the kernels for it with NVRTC.
    pub fn open(ordinal: usize) -> Result<Device, Error> {
        // SAFETY: only tries to open the library by its usual names.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::NoDriver);
        }
        if !kernels::nvrtc_present() {
            return Err(Error::NoNvrtc);
        }
        let count = CudaContext::device_count().map_err(driver("listing devices"))?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::NoSuchDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal).map_err(driver("creating a context"))?;
        // One stream orders everything: no cross-stream event tracking needed.
        // SAFETY: every device buffer of this context is used on `stream` only.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver("reading the compute capability"))?;
        let load = |source: &kernels::Source| -> Result<Vec<CudaFunction>, Error> {
            let ptx = kernels::compile(source, major, minor)?;
            let module = ctx.load_module(ptx).map_err(driver("loading the kernels"))?;
            source
                .functions
                .iter()
                .map(|name| module.load_function(name).map_err(driver("finding a kernel")))
                .collect()
        };
        let [count, scan, apply]: [CudaFunction; 3] =
            load(&kernels::APPLY)?.try_into().expect("apply.cu's three kernels");
        let hash: [CudaFunction; 3] = load(&kernels::HASH)?.try_into().expect("blake3.cu's three kernels");
        let name = ctx.name().unwrap_or_else(|_| "unknown device".into());
        Ok(Device {
            stream: ctx.default_stream(),
            count,
            scan,
            apply,
            hash,
            ctx,
            ordinal,
            name,
            grouped_tile: AtomicU64::new(GROUPED_TILE),
            events: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Sets the elements per tile of a grouped chunk (default 8192). A tile is one warp's
    /// walk, in order, through its elements: shorter tiles run more walks at once, but each
    /// tile keeps a count per context key, so a tile holds at least 2^bits elements whatever
    /// this says. For benchmarks, and for tests that reach tile edges with small chunks.
    pub fn set_grouped_tile(&self, elements: u64) {
        self.grouped_tile.store(elements.max(1), Ordering::Relaxed);
    }

    pub fn grouped_tile(&self) -> u64 {
        self.grouped_tile.load(Ordering::Relaxed)
    }

    /// `cuda:N (name)`.
    pub fn describe(&self) -> String {
        format!("cuda:{} ({})", self.ordinal, self.name)
    }

    /// Device memory of `len` bytes, contents unspecified.
    pub fn alloc(&self, len: usize) -> Result<Buffer, Error> {
        // SAFETY: u8 has no invalid bit patterns; every byte is written before it is read.
        let slice = unsafe { self.stream.alloc::<u8>(len.max(1)) }.map_err(driver("allocating device memory"))?;
        let addr = slice.device_ptr(&self.stream).0;
        Ok(Buffer {
            _slice: slice,
            addr,
            len,
        })
    }

    /// A stage of `capacity` bytes of page-locked host memory.
    pub fn stage(&self, capacity: usize) -> Result<Stage, Error> {
        self.ctx.bind_to_thread().map_err(driver("binding the context"))?;
        // SAFETY: plain page-locked allocation, freed by the stage.
        let host = unsafe { result::malloc_host(capacity.max(1), 0) }.map_err(driver("allocating pinned memory"))?;
        let table_words = 4096 * JOB_WORDS;
        // SAFETY: as above.
        let table = unsafe { result::malloc_host(table_words * 8, 0) }.map_err(driver("allocating pinned memory"))?;
        let alloc = |what| driver(what);
        Ok(Stage {
            host: host.cast(),
            capacity,
            table: table.cast(),
            table_words,
            // SAFETY: written by the copies of `submit` before the kernels read them.
            planes: unsafe { self.stream.alloc::<u8>(capacity.max(1)) }.map_err(alloc("allocating planes"))?,
            jobs: unsafe { self.stream.alloc::<u64>(JOB_WORDS) }.map_err(alloc("allocating jobs"))?,
            counts: unsafe { self.stream.alloc::<u32>(1) }.map_err(alloc("allocating counts"))?,
            done: self
                .ctx
                .new_event(Some(CUevent_flags::CU_EVENT_BLOCKING_SYNC))
                .map_err(driver("creating an event"))?,
            ctx: Arc::clone(&self.ctx),
        })
    }

    /// Copies the first `used` bytes of `stage`'s host memory to the device and applies `jobs`
    /// (each job's planes at its offset in them), asynchronously: [`Device::synchronize`] or
    /// the next [`Stage::host`] waits for it. With `slots`, the grouped jobs take their slots
    /// from there where it has them, and those counted here are kept in it while its budget
    /// lasts: every parent of `jobs` must then be memory that keeps its bytes as long as
    /// `slots` lives (a resident base).
    pub fn submit(&self, stage: &mut Stage, used: usize, jobs: &[Job], slots: Option<&mut Slots>) -> Result<(), Error> {
        // Read once: the slots kept are keyed by the tile they were counted for.
        let grouped_tile = self.grouped_tile();
        let mut planned = plan(jobs, grouped_tile, slots.as_deref())?;
        if planned.is_empty() {
            return Ok(());
        }
        let reused_jobs = planned.iter().filter(|(_, c)| matches!(c, Counts::Kept(_))).count();
        self.ctx.bind_to_thread().map_err(driver("binding the context"))?;
        let planes_addr = stage.planes.device_ptr(&self.stream).0;
        let mut table = Table::new(&planned, grouped_tile, planes_addr);
        // The memory for slots to keep, or, where there is none to spare, their counting in
        // the stage as without `slots`.
        let keep = match table.kept {
            0 => None,
            kept => match self.alloc(kept as usize * 4) {
                Ok(buffer) => Some(buffer),
                Err(_) => {
                    for (_, c) in planned.iter_mut() {
                        if matches!(c, Counts::Keep(_)) {
                            *c = Counts::Stage;
                        }
                    }
                    table = Table::new(&planned, grouped_tile, planes_addr);
                    None
                }
            },
        };
        if stage.counts.len() < table.staged as usize {
            // SAFETY: zeroed or written by `ctx_count` before `ctx_scan` reads them.
            stage.counts =
                unsafe { self.stream.alloc::<u32>(table.staged as usize) }.map_err(driver("allocating counts"))?;
        }
        let counts_addr = stage.counts.device_ptr(&self.stream).0;
        let new_slots = table.place_counts(&planned, counts_addr, keep.as_ref().map(|b| b.addr(0)));
        let Table {
            words,
            warps,
            counting_jobs,
            counting_warps,
            staged,
            ..
        } = table;
        let counted_jobs = counting_jobs as usize;
        if stage.jobs.len() < words.len() {
            // SAFETY: written by the copy below before any kernel reads it.
            stage.jobs = unsafe { self.stream.alloc::<u64>(words.len()) }.map_err(driver("allocating jobs"))?;
        }
        let stream = self.stream.cu_stream();
        let jobs_addr: CUdeviceptr = stage.jobs.device_ptr(&self.stream).0;
        // The table goes through page-locked memory, so that its copy is as asynchronous as
        // the planes' (a copy from pageable memory waits for the stream first).
        stage.done.synchronize().map_err(driver("waiting for a copy"))?;
        if stage.table_words < words.len() {
            // SAFETY: the new table is allocated before the old one, no longer used (`done`
            // completed), is freed; the stage owns it from then on.
            unsafe {
                let table = result::malloc_host(words.len() * 8, 0).map_err(driver("allocating pinned memory"))?;
                let old = std::mem::replace(&mut stage.table, table.cast());
                stage.table_words = words.len();
                result::free_host(old.cast()).map_err(driver("freeing pinned memory"))?;
            }
        }
        // SAFETY: `host` holds `capacity` >= `used` bytes and `table` holds `table_words` >=
        // `words.len()` words, both untouched until `done` (recorded below) completes.
        unsafe {
            let host = std::slice::from_raw_parts(stage.host, used.min(stage.capacity));
            if !host.is_empty() {
                result::memcpy_htod_async(planes_addr, host, stream).map_err(driver("copying planes"))?;
            }
            let table = std::slice::from_raw_parts_mut(stage.table, words.len());
            table.copy_from_slice(&words);
            result::memcpy_htod_async(jobs_addr, table, stream).map_err(driver("copying jobs"))?;
            // Counts kept in shared memory are written whole by `ctx_count`; larger contexts
            // count straight into these.
            let global = planned
                .iter()
                .any(|(j, _)| matches!(j.op, Op::SubCtx { bits } if u32::from(bits) > SHARED_BITS));
            if global {
                result::memset_d8_async(counts_addr, 0, staged as usize * 4, stream)
                    .map_err(driver("zeroing counts"))?;
            }
        }
        stage.done.record(&self.stream).map_err(driver("recording an event"))?;
        let start = self.event()?;
        let njobs = planned.len() as u32;
        let threads = 32 * WARPS_PER_BLOCK;
        // Per-warp counters for the largest context that fits in shared memory.
        let shared_bits = planned
            .iter()
            .filter_map(|(j, _)| match j.op {
                Op::SubCtx { bits } if u32::from(bits) <= SHARED_BITS => Some(u32::from(bits)),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let tiles = |warps: u64| LaunchConfig {
            grid_dim: (warps.div_ceil(u64::from(WARPS_PER_BLOCK)) as u32, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: WARPS_PER_BLOCK * (4 << shared_bits),
        };
        let per_job = LaunchConfig {
            grid_dim: (counting_jobs, 1, 1),
            block_dim: (SCAN_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the kernels read the job table just written, whose addresses point into
        // live buffers (the stage's planes and counts, and the caller's `out` and `parent`
        // buffers, which the caller keeps alive until the device is synchronized).
        let (counted, scanned) = unsafe {
            if counting_warps > 0 {
                self.stream
                    .launch_builder(&self.count)
                    .arg(&stage.jobs)
                    // Its warps are the counting jobs' tiles: it searches those jobs alone.
                    .arg(&counting_jobs)
                    .arg(&counting_warps)
                    .arg(&shared_bits)
                    .launch(tiles(counting_warps))
                    .map_err(driver("launching ctx_count"))?;
            }
            let counted = self.event()?;
            if counting_warps > 0 {
                self.stream
                    .launch_builder(&self.scan)
                    .arg(&stage.jobs)
                    .arg(&njobs)
                    .launch(per_job)
                    .map_err(driver("launching ctx_scan"))?;
            }
            let scanned = self.event()?;
            self.stream
                .launch_builder(&self.apply)
                .arg(&stage.jobs)
                .arg(&njobs)
                .arg(&warps)
                .arg(&shared_bits)
                .launch(tiles(warps))
                .map_err(driver("launching apply"))?;
            (counted, scanned)
        };
        let end = self.event()?;
        self.events.lock().expect("no panics while holding it").push((
            [start, counted, scanned, end],
            counted_jobs,
            reused_jobs,
        ));
        if let (Some(slots), Some(buffer)) = (slots, keep) {
            slots.keep(buffer, new_slots);
        }
        Ok(())
    }

    fn event(&self) -> Result<CudaEvent, Error> {
        self.stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(driver("recording an event"))
    }

    /// Waits for everything submitted, and returns the kernel time of the batches since the
    /// last call.
    pub fn synchronize(&self) -> Result<Timing, Error> {
        self.stream.synchronize().map_err(driver("synchronizing"))?;
        let events = std::mem::take(&mut *self.events.lock().expect("no panics while holding it"));
        let mut timing = Timing {
            batches: events.len(),
            ..Timing::default()
        };
        let between = |a: &CudaEvent, b: &CudaEvent| -> Result<Duration, Error> {
            let ms = a.elapsed_ms(b).map_err(driver("reading an event"))?;
            Ok(Duration::from_secs_f64(f64::from(ms.max(0.0)) / 1e3))
        };
        for ([start, counted, scanned, end], counted_jobs, reused_jobs) in &events {
            timing.kernels += between(start, end)?;
            timing.count += between(start, counted)?;
            timing.scan += between(counted, scanned)?;
            timing.counted += counted_jobs;
            timing.reused += reused_jobs;
        }
        Ok(timing)
    }

    /// Copies `out.len()` bytes of `buffer` from `offset` into host memory and waits for them.
    pub fn read(&self, buffer: &Buffer, offset: usize, out: &mut [u8]) -> Result<(), Error> {
        assert!(offset + out.len() <= buffer.len(), "a read inside the buffer");
        if out.is_empty() {
            return Ok(());
        }
        self.ctx.bind_to_thread().map_err(driver("binding the context"))?;
        // SAFETY: the source range lies inside the buffer; the copy completes before return.
        unsafe {
            result::memcpy_dtoh_async(out, buffer.addr(offset as u64), self.stream.cu_stream())
                .map_err(driver("copying to the host"))?;
        }
        self.stream.synchronize().map_err(driver("synchronizing"))
    }

    /// Copies `bytes` into `buffer` at `offset` and waits for the copy.
    pub fn write(&self, buffer: &Buffer, offset: usize, bytes: &[u8]) -> Result<(), Error> {
        assert!(offset + bytes.len() <= buffer.len(), "a write inside the buffer");
        if bytes.is_empty() {
            return Ok(());
        }
        self.ctx.bind_to_thread().map_err(driver("binding the context"))?;
        // SAFETY: the destination range lies inside the buffer; the copy completes before return.
        unsafe {
            result::memcpy_htod_async(buffer.addr(offset as u64), bytes, self.stream.cu_stream())
                .map_err(driver("copying to the device"))?;
        }
        self.stream.synchronize().map_err(driver("synchronizing"))
    }

    /// Copies `len` bytes of `buffer` from `offset` into `stage`'s host memory at `at`,
    /// asynchronously: the next [`Stage::host`] waits for them.
    pub fn read_into(
        &self,
        buffer: &Buffer,
        offset: usize,
        stage: &mut Stage,
        at: usize,
        len: usize,
    ) -> Result<(), Error> {
        assert!(
            at + len <= stage.capacity && offset + len <= buffer.len(),
            "a read inside both"
        );
        if len == 0 {
            return Ok(());
        }
        self.ctx.bind_to_thread().map_err(driver("binding the context"))?;
        // SAFETY: `host` holds `capacity` >= `at + len` bytes, not touched until `done` completes.
        unsafe {
            let host = std::slice::from_raw_parts_mut(stage.host.add(at), len);
            result::memcpy_dtoh_async(host, buffer.addr(offset as u64), self.stream.cu_stream())
                .map_err(driver("copying to the host"))?;
        }
        stage.done.record(&self.stream).map_err(driver("recording an event"))
    }

    /// Copies `len` bytes between device buffers, asynchronously.
    pub fn copy(&self, from: &Buffer, to: &Buffer, len: usize) -> Result<(), Error> {
        assert!(len <= from.len() && len <= to.len(), "a copy inside both");
        // SAFETY: both ranges lie inside live buffers.
        unsafe { result::memcpy_dtod_async(to.addr(0), from.addr(0), len, self.stream.cu_stream()) }
            .map_err(driver("copying on the device"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(op: Op, width: usize, len: usize, parent: u64) -> Job {
        Job {
            op,
            width,
            len,
            out: 0x9000_0000,
            parent,
            planes: 0,
        }
    }

    fn kinds(planned: &[(&Job, Counts)]) -> Vec<(u64, &'static str)> {
        planned
            .iter()
            .map(|(j, c)| {
                let kind = match c {
                    Counts::None => "none",
                    Counts::Stage => "stage",
                    Counts::Keep(_) => "keep",
                    Counts::Kept(_) => "kept",
                };
                (j.parent, kind)
            })
            .collect()
    }

    #[test]
    fn without_slots_grouped_jobs_count_first_in_their_order() {
        let jobs = [
            job(Op::Sub, 2, 64, 1),
            job(Op::SubCtx { bits: 8 }, 2, 64, 2),
            job(Op::Full, 4, 0, 3),
            job(Op::SubCtx { bits: 12 }, 4, 64, 4),
            job(Op::Same, 1, 8, 5),
        ];
        let planned = plan(&jobs, 8192, None).expect("supported jobs");
        assert_eq!(kinds(&planned), [(2, "stage"), (4, "stage"), (1, "none"), (5, "none")]);
    }

    #[test]
    fn slots_kept_are_reused_and_new_ones_kept_within_the_budget() {
        let key = |parent: u64, bits: u8| slots::Key {
            parent,
            elements: 16384,
            width: 2,
            bits,
            tile: 8192,
        };
        // Two tiles of 8192 elements: 2 x 256 counts of 8 bits, 2 x 2048 of 11.
        let (small, large) = (2 * 256 * 4, 2 * 2048 * 4);
        let slots = Slots::pretend(1_000_000, 1_000_000 - small - large, &[(key(10, 8), 0xabc)]);
        let jobs = [
            job(Op::Xor, 2, 32768, 1),
            job(Op::SubCtx { bits: 8 }, 2, 32768, 10),
            job(Op::SubCtx { bits: 11 }, 2, 32768, 10),
            job(Op::SubCtx { bits: 8 }, 2, 32768, 11),
            job(Op::SubCtx { bits: 8 }, 2, 32768, 12),
            job(Op::SubCtx { bits: 12 }, 2, 32768, 13),
        ];
        let planned = plan(&jobs, 8192, Some(&slots)).expect("supported jobs");
        // Parent 10 at 8 bits is kept; 11 bits of it and parent 11 fit the budget exactly;
        // parent 12 does not; 12-bit contexts are never kept.
        assert_eq!(
            kinds(&planned),
            [
                (10, "keep"),
                (11, "keep"),
                (12, "stage"),
                (13, "stage"),
                (10, "kept"),
                (1, "none")
            ]
        );
        assert!(matches!(planned[4].1, Counts::Kept(0xabc)));
        assert!(matches!(planned[0].1, Counts::Keep(k) if k == key(10, 11)));
        // A smaller tile is another key: counted again.
        let planned = plan(&jobs[1..2], 4096, Some(&slots)).expect("supported jobs");
        assert_eq!(kinds(&planned), [(10, "keep")]);
        // No budget, nothing kept.
        let planned = plan(&jobs[3..4], 8192, Some(&Slots::new(0))).expect("supported jobs");
        assert_eq!(kinds(&planned), [(11, "stage")]);
    }

    /// The table of a batch with jobs of every kind: warps numbered in launch order, the
    /// counting jobs' counts side by side without overlap in the stage's and the kept memory,
    /// kept slots used where they are, a low-rank job's factor left in its word.
    #[test]
    fn the_table_gives_every_job_its_warps_and_its_own_counts() {
        let key = |parent: u64| slots::Key {
            parent,
            elements: 20000,
            width: 4,
            bits: 8,
            tile: 8192,
        };
        let slots = Slots::pretend(1 << 30, 0, &[(key(20), 0x7000)]);
        let lowrank = Op::LowRank {
            float: 1,
            rank: 2,
            cols: 100,
            element: 0,
            factor: 0xfac,
        };
        let jobs = [
            job(lowrank, 4, 40000, 1),
            job(Op::SubCtx { bits: 8 }, 4, 80000, 20),
            job(Op::SubCtx { bits: 12 }, 4, 80000, 21),
            job(Op::SubCtx { bits: 11 }, 4, 80000, 22),
            job(Op::Sub, 2, 5000, 2),
            job(Op::SubCtx { bits: 8 }, 4, 80000, 23),
            job(Op::SubCtx { bits: 15 }, 2, 100000, 24),
        ];
        let planned = plan(&jobs, 8192, Some(&slots)).expect("supported jobs");
        let mut table = Table::new(&planned, 8192, 0x1000);
        let new = table.place_counts(&planned, 0x100_0000, Some(0x200_0000));
        let word = |j: usize, w: usize| table.words[j * JOB_WORDS + w];
        assert_eq!(table.words.len(), jobs.len() * JOB_WORDS);
        // Warps: each job's first is the sum of the tiles before it; the counting jobs first.
        let mut warps = 0;
        for j in 0..jobs.len() {
            assert_eq!(word(j, 7), warps, "job {j}");
            warps += word(j, 6);
        }
        assert_eq!(table.warps, warps);
        assert_eq!(table.counting_jobs, 4);
        let counting: u64 = (0..4).map(|j| word(j, 6)).sum();
        assert_eq!(table.counting_warps, counting);
        // 20000 elements in tiles of 8192: 3 tiles; 50000 at 15 bits, in tiles of 2^15: 2.
        assert_eq!((word(0, 6), word(2, 6), word(3, 6)), (3, 3, 2));
        // Counts: the stage's (12 and 15 bits) and the kept memory's (11 and 8 bits) ranges,
        // each job's tiles x 2^bits counts after the one before.
        let range = |j: usize| {
            let bits = (word(j, 5) >> 16) & 0xff;
            (word(j, 3), word(j, 3) + 4 * (word(j, 6) << bits))
        };
        let stage: Vec<_> = (0..4).map(range).filter(|r| r.0 < 0x200_0000).collect();
        let kept: Vec<_> = (0..4).map(range).filter(|r| r.0 >= 0x200_0000).collect();
        assert_eq!(
            stage,
            [
                (0x100_0000, 0x100_0000 + 4 * (3 << 12)),
                (0x100_c000, 0x100_c000 + 4 * (2 << 15))
            ]
        );
        assert_eq!(
            kept,
            [
                (0x200_0000, 0x200_0000 + 4 * (3 << 11)),
                (0x200_6000, 0x200_6000 + 4 * (3 << 8))
            ]
        );
        assert_eq!(
            (table.staged, table.kept),
            ((3 << 12) + (2 << 15), (3 << 11) + (3 << 8))
        );
        assert_eq!(
            new.iter().map(|(k, a)| (k.parent, *a)).collect::<Vec<_>>(),
            [(22, 0x200_0000), (23, 0x200_6000)]
        );
        // The kept slots of parent 20, after the counting jobs; the plain and low-rank last.
        assert_eq!((word(4, 1), word(4, 3)), (20, 0x7000));
        assert_eq!((word(5, 1), word(6, 1)), (1, 2));
        assert_eq!(word(5, 3), 0xfac);
        assert_eq!(word(6, 3), 0);
        // Planes where the stage's device memory holds them.
        assert_eq!(word(6, 2), 0x1000);
    }

    #[test]
    fn a_job_the_kernels_cannot_apply_is_refused() {
        let jobs = [job(Op::SubCtx { bits: 8 }, 1, 64, 1)];
        assert!(matches!(
            plan(&jobs, 8192, None),
            Err(Error::Unsupported { width: 1, .. })
        ));
    }
}
