//! Record-aligned deltas for text tables and line files: which runs of a file's records appear,
//! byte for byte and in the same order, in its parent, and which are new.
//!
//! A record is a line (its `\n` included), or for CSV and TSV a line outside quotes, so that a
//! quoted field may hold newlines. Records are compared by their exact bytes, so a file is
//! rebuilt byte for byte from copies of the parent's bytes and its own new bytes: what a new
//! version of a dataset that fixes and extends the last one really is.

use std::collections::HashMap;

/// How a file is cut into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Records {
    /// One record per line.
    Lines,
    /// CSV or TSV: one record per line, except inside a double-quoted field.
    Quoted,
}

impl Records {
    /// The record kind for a file name: CSV and TSV by extension, lines otherwise.
    pub fn for_path(path: &str) -> Records {
        let lower = path.to_ascii_lowercase();
        match lower.rsplit('.').next() {
            Some("csv" | "tsv") => Records::Quoted,
            _ => Records::Lines,
        }
    }

    /// The end offsets of the records of `bytes` (the last record may lack its newline).
    pub fn ends(self, bytes: &[u8]) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut quoted = false;
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'"' if self == Records::Quoted => quoted = !quoted,
                b'\n' if !quoted => ends.push(i + 1),
                _ => {}
            }
        }
        if ends.last().copied().unwrap_or(0) < bytes.len() {
            ends.push(bytes.len());
        }
        ends
    }
}

impl Piece {
    pub fn len(&self) -> u64 {
        match *self {
            Piece::Copy { len, .. } | Piece::New { len } => len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Finds record ends in a stream of bytes fed piece by piece (the quote state of CSV carries
/// over from one piece to the next).
#[derive(Debug, Clone)]
pub struct Splitter {
    records: Records,
    quoted: bool,
}

impl Splitter {
    pub fn new(records: Records) -> Splitter {
        Splitter { records, quoted: false }
    }

    /// Calls `end(i)` for every record that ends in `piece`, with the index just past its last
    /// byte.
    pub fn feed(&mut self, piece: &[u8], mut end: impl FnMut(usize)) {
        match self.records {
            Records::Lines => {
                for (i, &b) in piece.iter().enumerate() {
                    if b == b'\n' {
                        end(i + 1);
                    }
                }
            }
            Records::Quoted => {
                for (i, &b) in piece.iter().enumerate() {
                    match b {
                        b'"' => self.quoted = !self.quoted,
                        b'\n' if !self.quoted => end(i + 1),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// The 64-bit hash records are looked up by (equal hashes are then checked byte for byte).
pub fn record_hash(bytes: &[u8]) -> u64 {
    let h = blake3::hash(bytes);
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// A run of a new file's bytes: copied from the parent, or its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// `len` bytes equal to the parent's bytes at `from`.
    Copy { from: u64, len: u64 },
    /// `len` bytes of the new file, stored.
    New { len: u64 },
}

/// The piece table of a records manifest (docs/FORMAT.md, "Records"): per piece, a LEB128
/// varint of `len << 1 | copy`, and for a copy the zigzag varint of how far its `from` lies
/// from the end of the previous copy (0 when a run of the base simply goes on).
pub fn encode_pieces(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pieces.len() * 4);
    let mut next = 0u64;
    for p in pieces {
        match *p {
            Piece::Copy { from, len } => {
                varint(len << 1 | 1, &mut out);
                let delta = from.wrapping_sub(next) as i64;
                varint(((delta << 1) ^ (delta >> 63)) as u64, &mut out);
                next = from + len;
            }
            Piece::New { len } => varint(len << 1, &mut out),
        }
    }
    out
}

/// Decodes a piece table of `count` pieces; None if it is malformed or does not cover exactly
/// `size` bytes.
pub fn decode_pieces(bytes: &[u8], count: u64, size: u64) -> Option<Vec<Piece>> {
    let mut rest = bytes;
    let mut pieces = Vec::with_capacity(count.min(1 << 24) as usize);
    let mut next = 0u64;
    let mut total = 0u64;
    for _ in 0..count {
        let head = read_varint(&mut rest)?;
        let len = head >> 1;
        total = total.checked_add(len)?;
        if head & 1 == 1 {
            let z = read_varint(&mut rest)?;
            let delta = ((z >> 1) as i64) ^ -((z & 1) as i64);
            let from = next.wrapping_add(delta as u64);
            next = from.checked_add(len)?;
            pieces.push(Piece::Copy { from, len });
        } else {
            pieces.push(Piece::New { len });
        }
    }
    (rest.is_empty() && total == size).then_some(pieces)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(rest: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, tail) = rest.split_first()?;
        *rest = tail;
        v |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Whether `bytes` looks like text: no NUL byte in its first 64 KiB.
pub fn is_text(bytes: &[u8]) -> bool {
    !bytes[..bytes.len().min(64 << 10)].contains(&0)
}

/// The pieces that rebuild `new` from `old`, in order, record by record: every run of records
/// of `new` that follows a run of identical records in `old` becomes one copy.
pub fn diff(new: &[u8], old: &[u8], records: Records) -> Vec<Piece> {
    let (new_ends, old_ends) = (records.ends(new), records.ends(old));
    let starts = |ends: &[usize], i: usize| if i == 0 { 0 } else { ends[i - 1] };
    let record = |ends: &[usize], i: usize| starts(ends, i)..ends[i];
    let mut first: HashMap<&[u8], usize> = HashMap::with_capacity(old_ends.len());
    for i in (0..old_ends.len()).rev() {
        first.insert(&old[record(&old_ends, i)], i);
    }
    let mut pieces: Vec<Piece> = Vec::new();
    let mut push = |p: Piece| match (pieces.last_mut(), p) {
        (Some(Piece::New { len }), Piece::New { len: more }) => *len += more,
        (Some(Piece::Copy { from, len }), Piece::Copy { from: f, len: more }) if *from + *len == f => *len += more,
        _ => pieces.push(p),
    };
    let mut next_old: Option<usize> = None;
    for i in 0..new_ends.len() {
        let r = record(&new_ends, i);
        let bytes = &new[r];
        // The record after the last one copied, if it matches, keeps the run going.
        let at = match next_old {
            Some(j) if j < old_ends.len() && &old[record(&old_ends, j)] == bytes => Some(j),
            _ => first.get(bytes).copied(),
        };
        match at {
            Some(j) => {
                push(Piece::Copy {
                    from: starts(&old_ends, j) as u64,
                    len: bytes.len() as u64,
                });
                next_old = Some(j + 1);
            }
            None => {
                push(Piece::New {
                    len: bytes.len() as u64,
                });
                next_old = None;
            }
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rebuilds `new` from the pieces and `old`, as checkout does.
    fn apply(pieces: &[Piece], new: &[u8], old: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            match *p {
                Piece::Copy { from, len } => out.extend_from_slice(&old[from as usize..(from + len) as usize]),
                Piece::New { len } => {
                    let at = out.len();
                    out.extend_from_slice(&new[at..at + len as usize]);
                }
            }
        }
        out
    }

    #[test]
    fn piece_tables_round_trip_and_refuse_damage() {
        let pieces = [
            Piece::Copy { from: 0, len: 4 },
            Piece::New { len: 2 },
            Piece::Copy { from: 6, len: 300 },
            Piece::Copy { from: 2, len: 1 },
            Piece::New { len: 1 << 40 },
        ];
        let size = pieces
            .iter()
            .map(|p| match p {
                Piece::Copy { len, .. } | Piece::New { len } => len,
            })
            .sum();
        let bytes = encode_pieces(&pieces);
        assert_eq!(decode_pieces(&bytes, 5, size).unwrap(), pieces);
        assert!(decode_pieces(&bytes, 5, size + 1).is_none(), "wrong size");
        assert!(decode_pieces(&bytes, 4, size).is_none(), "trailing bytes");
        for cut in 0..bytes.len() {
            assert!(decode_pieces(&bytes[..cut], 5, size).is_none(), "cut at {cut}");
        }
        assert!(decode_pieces(&[0xff; 12], 1, 0).is_none(), "an endless varint");
    }

    #[test]
    fn records_are_lines_or_quoted_csv_rows() {
        assert_eq!(Records::Lines.ends(b"a\nb\n\nc"), [2, 4, 5, 6]);
        assert_eq!(Records::Lines.ends(b""), Vec::<usize>::new());
        let csv = b"id,text\r\n1,\"two\nlines\"\r\n2,\"say \"\"hi\"\"\"\n";
        assert_eq!(Records::Quoted.ends(csv), [9, 24, 39]);
        assert_eq!(Records::for_path("data/train.CSV"), Records::Quoted);
        assert_eq!(Records::for_path("cmudict.dict"), Records::Lines);
    }

    #[test]
    fn a_fixed_and_extended_version_is_mostly_copies() {
        let old = b"h\na\nb\nc\nd\ne\n";
        let new = b"h\na\nB\nc\nd\ne\nf\n";
        let pieces = diff(new, old, Records::Lines);
        assert_eq!(
            pieces,
            [
                Piece::Copy { from: 0, len: 4 },
                Piece::New { len: 2 },
                Piece::Copy { from: 6, len: 6 },
                Piece::New { len: 2 },
            ]
        );
        assert_eq!(apply(&pieces, new, old), new);
    }

    #[test]
    fn reordered_duplicated_and_unterminated_records_rebuild_exactly() {
        let old = b"x\ny\nz\ny\nlast";
        for new in [&b"z\ny\nx\nx\nlast"[..], b"", b"last", b"y\nz\ny\nz\n", b"new\r\nx\n"] {
            let pieces = diff(new, old, Records::Lines);
            assert_eq!(apply(&pieces, new, old), new, "{:?}", String::from_utf8_lossy(new));
        }
        let csv_old = b"a,\"1\n2\"\nb,3\n";
        let csv_new = b"b,3\na,\"1\n2\"\n";
        let pieces = diff(csv_new, csv_old, Records::Quoted);
        assert!(pieces.iter().all(|p| matches!(p, Piece::Copy { .. })), "{pieces:?}");
        assert_eq!(apply(&pieces, csv_new, csv_old), csv_new);
    }
}
