//! Text for people, or one JSON object for programs.

use serde::Serialize;

pub struct Output {
    pub json: bool,
}

impl Output {
    /// Prints `report` as JSON when asked, else the text `text` makes of it.
    pub fn emit<T: Serialize>(&self, report: &T, text: impl FnOnce(&T) -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(report).expect("reports serialize"));
        } else {
            let t = text(report);
            if !t.is_empty() {
                println!("{}", t.trim_end());
            }
        }
    }
}

/// Bytes in binary units, e.g. `86.7 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `stored / raw` as a ratio, e.g. `0.412`.
pub fn ratio(stored: u64, raw: u64) -> String {
    if raw == 0 {
        "-".into()
    } else {
        format!("{:.3}", stored as f64 / raw as f64)
    }
}

pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
