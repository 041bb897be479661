//! A JSON array of records (`[{...}, {...}]`) read one element at a time, so that converting it
//! to another format holds one record in memory, not the file.

use std::io::BufRead;

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use arrow::json::reader::Decoder;

/// The elements of a JSON array, each as its bytes.
pub struct Elements<R> {
    reader: R,
    started: bool,
    ended: bool,
    /// Bytes consumed so far: where an error is.
    offset: u64,
    /// Where the last element read starts.
    last: u64,
}

impl<R: BufRead> Elements<R> {
    pub fn new(reader: R) -> Self {
        Elements {
            reader,
            started: false,
            ended: false,
            offset: 0,
            last: 0,
        }
    }

    /// Reads the next element into `out` (cleared first); false after the last one. An error
    /// says what is wrong and at which byte.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> Result<bool, String> {
        out.clear();
        if self.ended {
            return Ok(false);
        }
        if !self.started {
            match self.skip_whitespace()? {
                Some(b'[') => self.consume(1),
                _ => return Err(format!("byte {}: not a JSON array", self.offset)),
            }
            self.started = true;
            if self.skip_whitespace()? == Some(b']') {
                self.consume(1);
                return self.end().map(|()| false);
            }
        }
        self.skip_whitespace()?;
        let start = self.offset;
        self.last = start;
        let (mut depth, mut in_string, mut escaped) = (0u32, false, false);
        'element: loop {
            let buf = self
                .reader
                .fill_buf()
                .map_err(|e| format!("byte {}: {e}", self.offset))?;
            if buf.is_empty() {
                return Err(format!("byte {}: the array is not closed", self.offset));
            }
            for (i, &b) in buf.iter().enumerate() {
                if in_string {
                    match b {
                        _ if escaped => escaped = false,
                        b'\\' => escaped = true,
                        b'"' => in_string = false,
                        _ => {}
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => depth -= 1,
                    b']' | b',' if depth == 0 => {
                        out.extend_from_slice(&buf[..i]);
                        self.ended = b == b']';
                        self.consume(i + 1);
                        break 'element;
                    }
                    b'}' => return Err(format!("byte {}: an unmatched '}}'", self.offset + i as u64)),
                    _ => {}
                }
            }
            out.extend_from_slice(buf);
            let n = buf.len();
            self.consume(n);
        }
        while out.last().is_some_and(u8::is_ascii_whitespace) {
            out.pop();
        }
        if out.is_empty() {
            return Err(format!("byte {start}: an empty element"));
        }
        if self.ended {
            self.end()?;
        }
        Ok(true)
    }

    /// The byte offset of the element [`Elements::next_into`] read last.
    pub fn last_start(&self) -> u64 {
        self.last
    }

    fn consume(&mut self, n: usize) {
        self.reader.consume(n);
        self.offset += n as u64;
    }

    /// Skips whitespace; the next byte, if any, without consuming it.
    fn skip_whitespace(&mut self) -> Result<Option<u8>, String> {
        loop {
            let buf = self
                .reader
                .fill_buf()
                .map_err(|e| format!("byte {}: {e}", self.offset))?;
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            let n = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
            if n == 0 {
                return Ok(Some(first));
            }
            self.consume(n);
        }
    }

    /// After the closing bracket: nothing but whitespace.
    fn end(&mut self) -> Result<(), String> {
        self.ended = true;
        match self.skip_whitespace()? {
            None => Ok(()),
            Some(_) => Err(format!("byte {}: more after the array's end", self.offset)),
        }
    }
}

/// Record batches of `rows` rows from a JSON array's elements, each element one row.
pub struct Batches<R> {
    elements: Elements<R>,
    decoder: Decoder,
    rows: usize,
    element: Vec<u8>,
    done: bool,
}

impl<R: BufRead> Batches<R> {
    pub fn new(elements: Elements<R>, decoder: Decoder, rows: usize) -> Self {
        Batches {
            elements,
            decoder,
            rows,
            element: Vec::new(),
            done: false,
        }
    }
}

impl<R: BufRead> Iterator for Batches<R> {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done || self.decoder.len() >= self.rows {
                return self.decoder.flush().transpose();
            }
            match self.elements.next_into(&mut self.element) {
                Ok(true) => match self.decoder.decode(&self.element) {
                    Ok(n) if n == self.element.len() => {}
                    Ok(_) => return Some(Err(ArrowError::JsonError("an element is more than one value".into()))),
                    Err(e) => return Some(Err(e)),
                },
                Ok(false) => self.done = true,
                Err(why) => return Some(Err(ArrowError::JsonError(why))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements(text: &str) -> Result<Vec<String>, String> {
        // A tiny buffer, so that elements and strings cross buffer boundaries.
        let mut e = Elements::new(std::io::BufReader::with_capacity(3, text.as_bytes()));
        let mut out = Vec::new();
        let mut all = Vec::new();
        while e.next_into(&mut out)? {
            all.push(String::from_utf8(out.clone()).unwrap());
        }
        Ok(all)
    }

    #[test]
    fn elements_are_cut_at_top_level_commas_only() {
        let text = " [ {\"a\": [1, 2], \"b\": \"x,]}\\\"\"} ,\n{\"a\": {\"c\": null}} ]\n";
        assert_eq!(
            elements(text).unwrap(),
            ["{\"a\": [1, 2], \"b\": \"x,]}\\\"\"}", "{\"a\": {\"c\": null}}"]
        );
        assert_eq!(elements("[]").unwrap(), Vec::<String>::new());
        assert_eq!(elements(" [ ] ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn broken_arrays_are_errors_with_their_byte() {
        for (text, says) in [
            ("{\"a\": 1}", "byte 0: not a JSON array"),
            ("[{\"a\": 1},", "not closed"),
            ("[{\"a\": 1}, ]", "an empty element"),
            ("[{\"a\": 1}] x", "more after the array's end"),
            ("[{\"a\": 1}}]", "unmatched"),
            ("", "not a JSON array"),
        ] {
            let err = elements(text).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }
}
