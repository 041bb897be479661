//! Tokens of `sparse serve --token-file F`: one per line, `read TOKEN` or `write TOKEN`
//! (write allows reading too); blank lines and lines starting with `#` are ignored. Tokens are
//! kept as their blake3 hashes and compared as such.

use std::path::{Path, PathBuf};

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
}

#[derive(Debug, thiserror::Error)]
#[error("token file {path}: {why}")]
pub struct Error {
    pub path: PathBuf,
    pub why: String,
}

/// The tokens a server accepts, and whether reading needs one.
#[derive(Debug, Default)]
pub struct Tokens {
    hashes: Vec<([u8; 32], Scope)>,
    pub anonymous_read: bool,
}

/// Why a request is refused: no token or an unknown one (401), or a token without the scope
/// (403).
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    Unauthenticated(&'static str),
    Forbidden(&'static str),
}

impl Tokens {
    pub fn load(path: &Path, anonymous_read: bool) -> Result<Tokens, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
        let mut hashes = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| Error {
                path: path.to_owned(),
                why: format!("line {}: {why}", n + 1),
            };
            let (scope, token) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("expected `read TOKEN` or `write TOKEN`"))?;
            let scope = match scope {
                "read" => Scope::Read,
                "write" => Scope::Write,
                _ => return Err(bad("the scope must be `read` or `write`")),
            };
            let token = token.trim();
            if token.is_empty() || token.contains(char::is_whitespace) {
                return Err(bad("a token is one word"));
            }
            hashes.push((*blake3::hash(token.as_bytes()).as_bytes(), scope));
        }
        Ok(Tokens { hashes, anonymous_read })
    }

    /// No tokens: only anonymous reads, when allowed.
    pub fn none(anonymous_read: bool) -> Tokens {
        Tokens {
            hashes: Vec::new(),
            anonymous_read,
        }
    }

    /// Checks an `Authorization` header's value (if any) against the scope a request needs.
    pub fn check(&self, header: Option<&str>, need: Scope) -> Result<(), Denied> {
        let Some(header) = header else {
            if need == Scope::Read && self.anonymous_read {
                return Ok(());
            }
            return Err(Denied::Unauthenticated("a bearer token is required"));
        };
        let token = header.strip_prefix("Bearer ").ok_or(Denied::Unauthenticated(
            "the Authorization header is not `Bearer TOKEN`",
        ))?;
        let hash = blake3::hash(token.trim().as_bytes());
        // blake3::Hash compares in constant time.
        let scope = self
            .hashes
            .iter()
            .filter(|(h, _)| blake3::Hash::from_bytes(*h) == hash)
            .map(|(_, s)| *s)
            .max()
            .ok_or(Denied::Unauthenticated("unknown token"))?;
        if scope >= need {
            Ok(())
        } else {
            Err(Denied::Forbidden("this token may only read"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_anonymous_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# comment\nread r-token\n\nwrite w-token\n").unwrap();
        let t = Tokens::load(&path, false).unwrap();
        assert_eq!(t.check(Some("Bearer r-token"), Scope::Read), Ok(()));
        assert!(matches!(
            t.check(Some("Bearer r-token"), Scope::Write),
            Err(Denied::Forbidden(_))
        ));
        assert_eq!(t.check(Some("Bearer w-token"), Scope::Write), Ok(()));
        assert!(matches!(
            t.check(Some("Bearer nope"), Scope::Read),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(t.check(None, Scope::Read), Err(Denied::Unauthenticated(_))));
        assert!(matches!(
            t.check(Some("Basic w-token"), Scope::Read),
            Err(Denied::Unauthenticated(_))
        ));
        let anon = Tokens::load(&path, true).unwrap();
        assert_eq!(anon.check(None, Scope::Read), Ok(()));
        assert!(anon.check(None, Scope::Write).is_err());
        std::fs::write(&path, "admin x\n").unwrap();
        assert!(Tokens::load(&path, false).unwrap_err().to_string().contains("line 1"));
    }
}
