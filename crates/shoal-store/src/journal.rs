//! The roots journal: every change to what the store keeps (user and
//! mirror pins, names, UnixFS views, replica targets), one line each,
//! appended and synced before the index commits it.
//!
//! The index holds the same facts; the journal is what survives losing it.
//! With the self-describing segments it is enough to rebuild the index
//! ([`crate::rebuild`]). Cache pins are not journaled: read-through cache
//! is disposable. The file is rewritten from the index when it grows past
//! twice what the index holds.
//!
//! ```text
//! shoal-roots 1
//! pin user bafy...
//! unpin mirror bafy...
//! name sst bafy...
//! unname sst
//! view bafy...(dataset) bafy...(view)
//! replica bafy... 3 1764810000 [author peer id, hex]
//! unreplica bafy...
//! ```

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use shoal_core::{cid, Cid};

use crate::error::{Error, Result};
use crate::pin::PinKind;

pub const FILE: &str = "roots.journal";
const HEADER: &str = "shoal-roots 1";

/// One change to what the store keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Pin(PinKind, Cid),
    Unpin(PinKind, Cid),
    Name(String, Cid),
    Unname(String),
    View(Cid, Cid),
    Replica {
        root: Cid,
        copies: u8,
        set_at: u64,
        author: Option<Vec<u8>>,
    },
    Unreplica(Cid),
}

fn kind_str(k: PinKind) -> &'static str {
    match k {
        PinKind::User => "user",
        PinKind::Mirror => "mirror",
        PinKind::Cache => "cache",
    }
}

impl Entry {
    /// Whether the entry is worth keeping (cache pins are not).
    pub fn journaled(&self) -> bool {
        !matches!(self, Entry::Pin(PinKind::Cache, _) | Entry::Unpin(PinKind::Cache, _))
    }

    fn line(&self) -> String {
        match self {
            Entry::Pin(k, c) => format!("pin {} {c}", kind_str(*k)),
            Entry::Unpin(k, c) => format!("unpin {} {c}", kind_str(*k)),
            Entry::Name(n, c) => format!("name {n} {c}"),
            Entry::Unname(n) => format!("unname {n}"),
            Entry::View(r, v) => format!("view {r} {v}"),
            Entry::Replica {
                root,
                copies,
                set_at,
                author,
            } => match author {
                Some(a) => format!("replica {root} {copies} {set_at} {}", hex(a)),
                None => format!("replica {root} {copies} {set_at}"),
            },
            Entry::Unreplica(r) => format!("unreplica {r}"),
        }
    }

    fn parse(line: &str) -> Option<Entry> {
        let f: Vec<&str> = line.split(' ').collect();
        let c = |s: &str| cid::parse(s).ok();
        let kind = |s: &str| match s {
            "user" => Some(PinKind::User),
            "mirror" => Some(PinKind::Mirror),
            "cache" => Some(PinKind::Cache),
            _ => None,
        };
        Some(match f.as_slice() {
            ["pin", k, r] => Entry::Pin(kind(k)?, c(r)?),
            ["unpin", k, r] => Entry::Unpin(kind(k)?, c(r)?),
            ["name", n, r] => Entry::Name(n.to_string(), c(r)?),
            ["unname", n] => Entry::Unname(n.to_string()),
            ["view", r, v] => Entry::View(c(r)?, c(v)?),
            ["replica", r, n, at, rest @ ..] => Entry::Replica {
                root: c(r)?,
                copies: n.parse().ok()?,
                set_at: at.parse().ok()?,
                author: match rest {
                    [] => None,
                    [a] => Some(unhex(a)?),
                    _ => return None,
                },
            },
            ["unreplica", r] => Entry::Unreplica(c(r)?),
            _ => return None,
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The open journal, appended to under the store's lock.
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Lines in the file, and entries it held when last rewritten (it is
    /// rewritten when it has grown past twice that).
    pub lines: u64,
    kept: u64,
}

impl Journal {
    /// Opens (creating) the journal in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        let lines = match File::open(&path) {
            Ok(f) => BufReader::new(f).lines().count() as u64,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        if lines == 0 {
            writeln!(file, "{HEADER}").map_err(|e| Error::io(&path, e))?;
            file.sync_data().map_err(|e| Error::io(&path, e))?;
        }
        Ok(Self {
            path,
            file,
            lines: lines.max(1),
            kept: lines,
        })
    }

    /// Whether the journal has grown past twice what it held when last
    /// rewritten (and past a small floor).
    pub fn grown(&self) -> bool {
        self.lines > 2 * self.kept + 1024
    }

    /// Appends and syncs entries (those worth keeping).
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        let mut text = String::new();
        for e in entries.iter().filter(|e| e.journaled()) {
            text.push_str(&e.line());
            text.push('\n');
        }
        if text.is_empty() {
            return Ok(());
        }
        let n = text.lines().count() as u64;
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))?;
        self.lines += n;
        Ok(())
    }

    /// Replaces the journal with `entries` (the index's current state):
    /// written beside it, synced, renamed over it.
    pub fn rewrite(&mut self, entries: &[Entry]) -> Result<()> {
        let tmp = self.path.with_extension("journal.tmp");
        let mut text = format!("{HEADER}\n");
        for e in entries.iter().filter(|e| e.journaled()) {
            text.push_str(&e.line());
            text.push('\n');
        }
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            Ok(())
        };
        write().map_err(|e| Error::io(&self.path, e))?;
        if let Some(dir) = self.path.parent() {
            crate::segment::sync_dir(dir)?;
        }
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        self.lines = text.lines().count() as u64;
        self.kept = self.lines;
        Ok(())
    }
}

/// Every entry of the journal in `dir`, in order; lines that do not parse
/// (a torn last line) are skipped and counted.
pub fn read(dir: &Path) -> Result<(Vec<Entry>, u64)> {
    let path = dir.join(FILE);
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let mut out = Vec::new();
    let mut bad = 0;
    for line in BufReader::new(f).lines() {
        let line = line.map_err(|e| Error::io(&path, e))?;
        if line == HEADER || line.is_empty() {
            continue;
        }
        match Entry::parse(&line) {
            Some(e) => out.push(e),
            None => bad += 1,
        }
    }
    Ok((out, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_reads_back_as_written() {
        let a = cid::cid_of(cid::RAW, b"a");
        let b = cid::cid_of(cid::RAW, b"b");
        let entries = vec![
            Entry::Pin(PinKind::User, a),
            Entry::Unpin(PinKind::Mirror, b),
            Entry::Name("sst.v2".into(), a),
            Entry::Unname("x_y".into()),
            Entry::View(a, b),
            Entry::Replica {
                root: a,
                copies: 3,
                set_at: 17,
                author: Some(vec![0, 1, 254]),
            },
            Entry::Replica {
                root: b,
                copies: 0,
                set_at: 18,
                author: None,
            },
            Entry::Unreplica(a),
        ];
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(&entries).unwrap();
        j.append(&[Entry::Pin(PinKind::Cache, a)]).unwrap();
        // A torn last line is skipped, not fatal.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap()
            .write_all(b"pin us")
            .unwrap();
        let (back, bad) = read(dir.path()).unwrap();
        assert_eq!(back, entries);
        assert_eq!(bad, 1);
        j.rewrite(&entries[..2]).unwrap();
        assert_eq!(read(dir.path()).unwrap().0, entries[..2].to_vec());
        assert_eq!(j.lines, 3);
    }
}
