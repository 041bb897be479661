//! Plain files, whose format sparse does not parse (a Tesseract `.traineddata`, a pickle, an
//! ONNX graph): cut into runs of whole elements where the bytes hold arrays of numbers
//! ([`crate::codec::layout`]), each run a segment coded against the bytes at the same offsets
//! of the base's file of the same path or, where the base has none, of the base's file of the
//! same extension and nearest size (a fine-tune saved under another name). A fine-tune of such
//! a file keeps its base's layout, so the same offsets pair each weight with its base value.

use std::path::Path;

use rayon::prelude::*;

use super::encode::{plain, Base};
use super::manifest::{ParentRef, Segment};
use super::source::SourceFile;
use super::Options;
use crate::codec::layout::{self, Lay, Run};

/// Windows per file at most: a larger file gets larger windows, so that a manifest stays small.
const MAX_WINDOWS: u64 = 4096;

/// The segments of plain file `file` (its bytes `bytes`), with parents in `base` where it has
/// a file to pair with. `release(lo, hi)` is called for each range of `bytes` read, once read,
/// so that a large file's pages do not stay mapped.
pub fn plan(
    file: &SourceFile,
    bytes: &[u8],
    opts: &Options,
    base: Option<&Base<'_>>,
    release: &(dyn Fn(usize, usize) + Sync),
) -> Vec<Segment> {
    let len = bytes.len() as u64;
    let window = (layout::WINDOW as u64).max(len.div_ceil(MAX_WINDOWS));
    let lays: Vec<Lay> = (0..len.div_ceil(window))
        .into_par_iter()
        .map(|i| {
            let at = i * window;
            let end = (at + window).min(len);
            let lay = layout::choose(at, &bytes[at as usize..end as usize]);
            release(at as usize, end.min(at + layout::SCORED as u64) as usize);
            lay
        })
        .collect();
    let parent = base.and_then(|b| pair(file, b));
    let mut segments = Vec::new();
    for Run { offset, len, width } in layout::runs(&lays, window, len) {
        // The part of the run the parent file covers, in whole elements, has the parent.
        let w = width as u64;
        let covered = parent.map_or(0, |(_, size)| size.saturating_sub(offset).min(len) / w * w);
        if covered > 0 {
            let (name, _) = parent.expect("a parent covers part of the run");
            let mut segment = plain(offset, covered, width, opts, None, None);
            segment.parent = Some(ParentRef {
                file: name.to_string(),
                tensor: String::new(),
                offset: Some(offset),
            });
            segments.push(segment);
        }
        if covered < len {
            segments.push(plain(offset + covered, len - covered, width, opts, None, None));
        }
    }
    segments
}

/// The file of `base` that `file` is coded against, and its size: the one at the same path,
/// else the one of the same extension whose size is nearest (the first by path on a tie).
/// Tables are rebuilt whole, never read by range, so they are never paired.
fn pair<'a>(file: &SourceFile, base: &'a Base<'_>) -> Option<(&'a str, u64)> {
    let files = &base.snapshot.manifests;
    let readable =
        |(path, m): (&'a String, &'a super::manifest::Manifest)| m.table.is_none().then_some((path.as_str(), m.size));
    if let Some(same) = files.get_key_value(&file.path).and_then(readable) {
        return Some(same);
    }
    let extension = |path: &str| Path::new(path).extension().map(|e| e.to_owned());
    let ours = extension(&file.path)?;
    files
        .iter()
        .filter_map(readable)
        .filter(|(path, _)| extension(path).as_ref() == Some(&ours))
        .min_by_key(|&(path, size)| (size.abs_diff(file.size), path))
}
