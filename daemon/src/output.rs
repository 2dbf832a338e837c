//! Human-readable output and the progress bar.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use shoal_api::{LsHead, LsLine, Progress, QueryResult};

/// `println!` that returns the write error instead of panicking, so a
/// closed pipe (`shoal ls X | head -1`) ends the command quietly.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*)?
    }};
}
pub(crate) use out;

/// Whether an error is stdout's reader having gone away.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> std::io::Result<()> {
    out!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Progress on stderr, only when it is a terminal, only after the operation
/// has run for a moment (quick adds print nothing extra).
pub struct Bar {
    bar: Option<ProgressBar>,
    enabled: bool,
    started: Instant,
    label: &'static str,
}

/// Operations shorter than this show no bar.
const BAR_DELAY: Duration = Duration::from_millis(500);

impl Bar {
    pub fn new(json: bool, label: &'static str) -> Self {
        Self {
            bar: None,
            enabled: !json && std::io::stderr().is_terminal(),
            started: Instant::now(),
            label,
        }
    }

    pub fn update(&mut self, p: Progress) {
        if !self.enabled || self.started.elapsed() < BAR_DELAY {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let b = ProgressBar::new(p.bytes_total);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {prefix}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_message(self.label);
            b
        });
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_done);
        if p.peers > 0 {
            bar.set_prefix(format!("from {} peers", p.peers));
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// How long ago unix second `t` was, roughly: "40s ago", "3h ago", "2d ago".
pub fn ago(t: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let d = now.saturating_sub(t);
    match d {
        0..120 => format!("{d}s ago"),
        120..7200 => format!("{}m ago", d / 60),
        7200..172_800 => format!("{}h ago", d / 3600),
        _ => format!("{}d ago", d / 86400),
    }
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prints a streamed listing as its lines arrive: text columns, or the
/// same JSON document `--json` always printed (root, counts, `entries`).
pub struct LsPrinter {
    json: bool,
    head: Option<LsHead>,
    printed: u64,
    ended: bool,
    pending: Option<String>,
}

impl LsPrinter {
    pub fn new(json: bool) -> Self {
        Self {
            json,
            head: None,
            printed: 0,
            ended: false,
            pending: None,
        }
    }

    pub fn line(&mut self, l: LsLine) -> anyhow::Result<()> {
        match l {
            LsLine::Head(h) => {
                if self.json {
                    let unixfs = match &h.unixfs {
                        Some(u) => format!("\n  \"unixfs\": {},", serde_json::to_string(u)?),
                        None => String::new(),
                    };
                    out!(
                        "{{\n  \"root\": {},\n  \"zarr_format\": {},\n  \"keys\": {},\n  \"bytes\": {},{unixfs}\n  \"entries\": [",
                        serde_json::to_string(&h.root)?,
                        h.zarr_format,
                        h.keys,
                        h.bytes,
                    );
                } else {
                    out!("{:<w$}  {:>12}  BLOCKS", "KEY", "SIZE", w = h.width.max(3));
                }
                self.head = Some(h);
            }
            LsLine::Entry(e) => {
                let Some(h) = &self.head else {
                    anyhow::bail!("unexpected reply from the daemon: a key before the listing's head");
                };
                if self.json {
                    // Each entry is printed when the next arrives: the
                    // last one takes no comma.
                    if let Some(prev) = self.pending.replace(serde_json::to_string(&e)?) {
                        out!("    {prev},");
                    }
                } else {
                    let blocks = if e.inline {
                        "inline".to_string()
                    } else {
                        e.blocks.to_string()
                    };
                    out!("{:<w$}  {:>12}  {blocks}", e.key, e.size, w = h.width.max(3));
                }
                self.printed += 1;
            }
            LsLine::End => self.ended = true,
            LsLine::Error(e) => return Err(shoal_api::client::Remote(e).into()),
        }
        Ok(())
    }

    pub fn finish(self) -> anyhow::Result<()> {
        let (Some(h), true) = (&self.head, self.ended) else {
            anyhow::bail!("the listing ended early (did the daemon stop?)");
        };
        if self.json {
            if let Some(last) = &self.pending {
                out!("    {last}");
            }
            out!("  ]\n}}");
        } else {
            out!(
                "{} of {} keys; dataset {} (zarr v{}, {})",
                self.printed,
                h.keys,
                h.root,
                h.zarr_format,
                human_bytes(h.bytes)
            );
        }
        Ok(())
    }
}

/// `how`: the grouping and weights as typed (", groupby time.month").
pub fn print_query(r: &QueryResult, out: Option<&std::path::Path>, selected: bool, how: &str) -> std::io::Result<()> {
    let kept = if r.dims.is_empty() {
        String::new()
    } else {
        format!(" ({})", r.dims.join(", "))
    };
    out!(
        "{} of {} over ({}){how} in {} ({}) -> float64{kept}, shape {:?}",
        r.op,
        r.array,
        r.reduced.join(", "),
        r.root,
        r.source_dtype,
        r.shape
    );
    if selected {
        let s: Vec<String> = r.selection.iter().map(|(d, a, b)| format!("{d}[{a}:{b}]")).collect();
        out!("selected (index ranges): {}", s.join(" "));
    }
    let vals: Vec<f64> = r.values.iter().flatten().copied().collect();
    let nan = r.values.len() - vals.len();
    if !vals.is_empty() {
        let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        out!("summary: min {min:.6}  max {max:.6}  mean {mean:.6}  NaN cells {nan}");
    }
    if r.values.len() <= 20 {
        let shown: Vec<String> = r
            .values
            .iter()
            .map(|v| v.map(|x| format!("{x}")).unwrap_or_else(|| "nan".into()))
            .collect();
        out!("values: [{}]", shown.join(", "));
    }
    let peers: Vec<String> = r.chunks_remote.iter().map(|(p, n)| format!("{n} on {p}")).collect();
    let remote = match (peers.is_empty(), r.peers_asked) {
        (true, 0) => String::new(),
        (true, n) => format!(", none on the {n} peers asked"),
        (false, n) => format!(", {} (of {n} peers asked)", peers.join(", ")),
    };
    out!(
        "ran: {} chunks: {} local{remote}, {} fetched, {} of the peers' checked here; {} crossed the network; {:.3}s",
        r.chunks,
        r.chunks_local,
        r.chunks_fetched,
        r.chunks_checked,
        human_bytes(r.network_bytes),
        r.seconds
    );
    if let Some(res) = &r.result {
        if r.cached {
            out!("result: kept earlier as {res} (nothing computed; --no-cache computes again)");
        } else {
            out!("result: kept as dataset {res}");
        }
    }
    for l in &r.liars {
        out!("warning: peer {l} answered partials that disagree with the same chunks computed here; its work was discarded and redone, and it is asked for no more compute");
    }
    if let Some(p) = out {
        out!("wrote {}", p.display());
    }
    Ok(())
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian).
pub fn utc(secs: u64) -> String {
    format!("{} UTC", shoal_core::text::iso_of_unix(secs).replacen('T', " ", 1))
}

#[cfg(test)]
mod utc_tests {
    #[test]
    fn dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::utc(1_795_685_041), "2026-11-26 09:24:01 UTC");
    }
}
