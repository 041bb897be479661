//! Planning a text file against the file at the same path in its base: runs of records found
//! in the base's file, byte for byte, become pieces that copy its bytes; the rest are new
//! bytes, coded as plain bytes (a `records` manifest, [`crate::model::manifest::RecordsRef`]). Both files stream: the base's is read in windows of a chunk
//! and indexed by a 64-bit hash of each record (20 bytes a record in memory), the new one is
//! read from its mapping, whose pages are released as they are passed; every copy is then
//! checked against the base's bytes, so that a hash collision costs space, never correctness.

use super::encode::{Base, Error};
use super::source::SourceFile;
use super::Options;
use crate::codec::rows::{self, record_hash, Piece, Records, Splitter};
use crate::store::cas::Key;

/// The base's records: their hashes and start offsets in file order, and their indices sorted
/// by hash.
struct Index {
    hashes: Vec<u64>,
    starts: Vec<u64>,
    by_hash: Vec<u32>,
}

impl Index {
    /// The first record with hash `h`, if any.
    fn find(&self, h: u64) -> Option<usize> {
        let at = self.by_hash.partition_point(|&i| self.hashes[i as usize] < h);
        self.by_hash
            .get(at)
            .map(|&i| i as usize)
            .filter(|&i| self.hashes[i] == h)
    }
}

/// A text file as pieces of its base's file and of its own new bytes.
pub struct Planned {
    pub pieces: Vec<Piece>,
    /// Bytes of the new pieces.
    pub added: u64,
    /// blake3 of the whole file.
    pub hash: Key,
}

/// The pieces of `bytes` (the text file `file`) copying what it shares with its base's file of
/// the same path; None when there is no such file, either is not text, or most bytes are new.
/// `release(lo, hi)` is called for each range of `bytes` that planning no longer needs.
pub fn plan(
    file: &SourceFile,
    bytes: &[u8],
    opts: &Options,
    base: Option<&Base<'_>>,
    release: &dyn Fn(usize, usize),
) -> Result<Option<Planned>, Error> {
    let Some(b) = base else { return Ok(None) };
    let Some(parent) = b.snapshot.manifests.get(&file.path) else {
        return Ok(None);
    };
    if !rows::is_text(bytes) || parent.table.is_some() {
        return Ok(None);
    }
    let records = Records::for_path(&file.path);
    let parent_err = |e| Error::Parent {
        path: file.abs.clone(),
        source: Box::new(e),
    };
    let window = opts.chunk_size.clamp(64 << 10, 16 << 20) as usize;
    let mut buf = vec![0u8; window];
    let read = |at: u64, out: &mut [u8]| -> Result<(), Error> {
        match b
            .rebuilder
            .read_range(b.snapshot, &file.path, at, out)
            .map_err(parent_err)?
        {
            true => Ok(()),
            false => Err(parent_err(crate::model::rebuild::Error::BadPath {
                path: file.path.clone(),
                why: "shorter than its manifest says".into(),
            })),
        }
    };

    // 1. The base's records, hashed as they stream by.
    let mut index = Index {
        hashes: Vec::new(),
        starts: Vec::new(),
        by_hash: Vec::new(),
    };
    let mut splitter = Splitter::new(records);
    let mut hasher = blake3::Hasher::new();
    let mut start = 0u64;
    let mut at = 0u64;
    while at < parent.size {
        let n = (parent.size - at).min(window as u64) as usize;
        read(at, &mut buf[..n])?;
        if at == 0 && !rows::is_text(&buf[..n]) {
            return Ok(None);
        }
        let mut from = 0;
        splitter.feed(&buf[..n], |end| {
            hasher.update(&buf[from..end]);
            index.hashes.push(first_u64(&hasher.finalize()));
            index.starts.push(start);
            hasher.reset();
            start = at + end as u64;
            from = end;
        });
        hasher.update(&buf[from..n]);
        at += n as u64;
    }
    if start < parent.size {
        index.hashes.push(first_u64(&hasher.finalize()));
        index.starts.push(start);
    }
    if index.hashes.len() > u32::MAX as usize {
        return Ok(None);
    }
    index.by_hash = (0..index.hashes.len() as u32).collect();
    index.by_hash.sort_by_key(|&i| (index.hashes[i as usize], i));

    // 2. The new file's records, looked up; a run continues while the next record matches the
    //    base's next one.
    let mut pieces: Vec<Piece> = Vec::new();
    let mut push = |p: Piece| match (pieces.last_mut(), p) {
        (Some(Piece::New { len }), Piece::New { len: more }) => *len += more,
        (Some(Piece::Copy { from, len }), Piece::Copy { from: f, len: more }) if *from + *len == f => *len += more,
        _ => pieces.push(p),
    };
    let mut next: Option<usize> = None;
    let mut visit = |lo: usize, hi: usize| {
        let record = &bytes[lo..hi];
        let h = record_hash(record);
        let j = match next {
            Some(j) if index.hashes.get(j) == Some(&h) => Some(j),
            _ => index.find(h),
        };
        match j {
            Some(j) => {
                push(Piece::Copy {
                    from: index.starts[j],
                    len: record.len() as u64,
                });
                next = Some(j + 1);
            }
            None => {
                push(Piece::New {
                    len: record.len() as u64,
                });
                next = None;
            }
        }
    };
    let mut splitter = Splitter::new(records);
    let mut whole = blake3::Hasher::new();
    let mut last = 0;
    let mut released = 0;
    for lo in (0..bytes.len()).step_by(window) {
        let hi = (lo + window).min(bytes.len());
        whole.update(&bytes[lo..hi]);
        splitter.feed(&bytes[lo..hi], |end| {
            visit(last, lo + end);
            last = lo + end;
        });
        // Pages before the current record are done with.
        let done = last / PAGE * PAGE;
        if done > released {
            release(released, done);
            released = done;
        }
    }
    if last < bytes.len() {
        visit(last, bytes.len());
    }
    drop(index);

    // 3. Every copy checked against the base's bytes; what differs (a hash collision) is new.
    let copied: u64 = pieces
        .iter()
        .map(|p| match p {
            Piece::Copy { len, .. } => *len,
            Piece::New { .. } => 0,
        })
        .sum();
    if copied * 2 < bytes.len() as u64 {
        return Ok(None);
    }
    let mut checked = Vec::with_capacity(pieces.len());
    let mut theirs = Vec::new();
    let mut at = 0u64;
    for p in pieces {
        if let Piece::Copy { from, len } = p {
            // In windows, so that a long run never needs more than a window of memory.
            let mut done = 0;
            while done < len {
                let n = (len - done).min(window as u64);
                let (lo, hi) = ((at + done) as usize, (at + done + n) as usize);
                theirs.resize(n as usize, 0);
                read(from + done, &mut theirs)?;
                checked.push(match bytes[lo..hi] == theirs[..] {
                    true => Piece::Copy {
                        from: from + done,
                        len: n,
                    },
                    false => Piece::New { len: n },
                });
                release(lo / PAGE * PAGE, hi / PAGE * PAGE);
                done += n;
            }
        } else {
            checked.push(p);
        }
        at += p.len();
    }
    // Pieces split into windows above join again.
    let mut pieces: Vec<Piece> = Vec::with_capacity(checked.len());
    for p in checked {
        match (pieces.last_mut(), p) {
            (Some(Piece::New { len }), Piece::New { len: more }) => *len += more,
            (Some(Piece::Copy { from, len }), Piece::Copy { from: f, len: more }) if *from + *len == f => *len += more,
            _ => pieces.push(p),
        }
    }
    let added = pieces
        .iter()
        .filter(|p| matches!(p, Piece::New { .. }))
        .map(Piece::len)
        .sum();
    Ok(Some(Planned {
        pieces,
        added,
        hash: Key(*whole.finalize().as_bytes()),
    }))
}

/// The unit in which pages of the new file are released.
const PAGE: usize = 4096;

fn first_u64(h: &blake3::Hash) -> u64 {
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}
