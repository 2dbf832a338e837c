//! Selection by coordinate label, as xarray's `.sel` does it: `DIM=A:B`
//! keeps the positions whose coordinate lies in `[A, B]` (both ends
//! inclusive, ascending or descending coordinates), `DIM=V` the position
//! equal to `V`. CF time coordinates (`units: "<unit> since <date>"`) take
//! dates and datetimes in the calendars cftime decodes; a date given to
//! day (month, year) resolution covers that whole day (month, year), as
//! pandas' and cftime's partial-string indexing do.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One label selection as the user wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelSel {
    pub dim: String,
    /// `A:B` (either end may be empty: open), or one value `V`.
    pub lo: Option<String>,
    pub hi: Option<String>,
    pub exact: bool,
}

impl std::str::FromStr for LabelSel {
    type Err = String;

    /// `DIM=A:B`, `DIM=A:`, `DIM=:B` or `DIM=V`. Dates carry no `:` before
    /// their time part, so the first `:` that is not inside a time (a
    /// digit pair after `T` or a space) splits the range.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (dim, rest) = s
            .split_once('=')
            .filter(|(d, r)| !d.is_empty() && !r.is_empty())
            .ok_or_else(|| format!("{s:?}: expected DIM=A:B or DIM=VALUE"))?;
        let dim = dim.to_string();
        let opt = |x: &str| (!x.is_empty()).then(|| x.to_string());
        match split_range(rest) {
            Some((a, b)) => {
                if a.is_empty() && b.is_empty() {
                    return Err(format!("{s:?}: give at least one end of the range"));
                }
                Ok(LabelSel {
                    dim,
                    lo: opt(a),
                    hi: opt(b),
                    exact: false,
                })
            }
            None => Ok(LabelSel {
                dim,
                lo: Some(rest.to_string()),
                hi: Some(rest.to_string()),
                exact: true,
            }),
        }
    }
}

/// Splits `A:B` at the colon that separates the ends (times of day have
/// colons too): the first split whose two sides are both numbers or both
/// dates with a 4-digit year (either side may be empty).
fn split_range(s: &str) -> Option<(&str, &str)> {
    let num = |x: &str| x.is_empty() || x.trim().parse::<f64>().is_ok();
    let date = |x: &str| {
        x.is_empty()
            || (x
                .trim_start_matches('-')
                .split(['-', 'T', ' '])
                .next()
                .is_some_and(|y| y.len() >= 4)
                && parse_stamp(x).is_ok())
    };
    s.match_indices(':')
        .map(|(i, _)| (&s[..i], &s[i + 1..]))
        .find(|(a, b)| !(a.is_empty() && b.is_empty()) && ((num(a) && num(b)) || (date(a) && date(b))))
        .or_else(|| (s == ":").then_some(("", "")))
}

/// A 1-D coordinate, decoded to float64, with what is needed to read
/// labels against it.
#[derive(Debug, Clone)]
pub struct Coordinate {
    /// CF-decoded values (what labels are compared with).
    pub values: Vec<f64>,
    /// The stored values as float64 (what a result dataset writes back,
    /// with `attrs`, so readers decode it as they decode the source).
    pub raw: Vec<f64>,
    /// The coordinate's attributes (units, calendar, ...).
    pub attrs: serde_json::Map<String, serde_json::Value>,
    /// Stored as float32: an exact label is compared at that precision.
    pub f32: bool,
    /// CF time: the units and calendar attributes.
    pub time: Option<(String, String)>,
}

/// The half-open index range `sel` keeps on coordinate `c` of `dim`.
pub fn index_range(sel: &LabelSel, c: &Coordinate) -> Result<Range<u64>> {
    let n = c.values.len();
    let bad = |why: String| Error::Selection(format!("{}: {why}", sel.dim));
    if n == 0 {
        return Err(bad("the coordinate is empty".into()));
    }
    if c.values.iter().any(|v| v.is_nan()) {
        return Err(bad("the coordinate has missing values; use --isel".into()));
    }
    let asc = c.values.windows(2).all(|w| w[0] < w[1]);
    let desc = c.values.windows(2).all(|w| w[0] > w[1]);
    if !asc && !desc {
        return Err(bad(
            "the coordinate is not monotonic, so a label range has no meaning; use --isel".into(),
        ));
    }
    // Label bounds as numbers in the coordinate's own units: [lo, hi).
    let (lo, hi) = bounds(sel, c)?;
    let (first, last) = (c.values[0], c.values[n - 1]);
    let (min, max) = if asc { (first, last) } else { (last, first) };
    let shown = |v: f64| show(c, v);
    if hi <= min || lo > max {
        return Err(bad(format!(
            "{} is outside the coordinate's range {} to {}",
            label_text(sel),
            shown(min),
            shown(max)
        )));
    }
    let inside: Vec<usize> = (0..n).filter(|&i| c.values[i] >= lo && c.values[i] < hi).collect();
    match (inside.first(), inside.last()) {
        (Some(&a), Some(&b)) => Ok(a as u64..b as u64 + 1),
        _ if sel.exact => Err(bad(format!("no coordinate value equals {}", label_text(sel)))),
        _ => Err(bad(format!("no coordinate value lies in {}", label_text(sel)))),
    }
}

fn label_text(sel: &LabelSel) -> String {
    if sel.exact {
        sel.lo.clone().unwrap_or_default()
    } else {
        format!(
            "{}:{}",
            sel.lo.as_deref().unwrap_or(""),
            sel.hi.as_deref().unwrap_or("")
        )
    }
}

fn show(c: &Coordinate, v: f64) -> String {
    match &c.time {
        Some((units, cal)) => TimeAxis::new(units, cal)
            .and_then(|t| t.format(v))
            .unwrap_or_else(|_| v.to_string()),
        None => v.to_string(),
    }
}

/// The numeric interval `[lo, hi)` a selection covers.
fn bounds(sel: &LabelSel, c: &Coordinate) -> Result<(f64, f64)> {
    let bad = |why: String| Error::Selection(format!("{}: {why}", sel.dim));
    if let Some((units, cal)) = &c.time {
        let t = TimeAxis::new(units, cal).map_err(bad)?;
        let start = |s: &str| t.value(s, false).map_err(bad);
        let end = |s: &str| t.value(s, true).map_err(bad);
        let lo = sel.lo.as_deref().map(start).transpose()?.unwrap_or(f64::NEG_INFINITY);
        let hi = sel.hi.as_deref().map(end).transpose()?.unwrap_or(f64::INFINITY);
        if lo >= hi {
            return Err(bad(format!("{} selects nothing (start after end)", label_text(sel))));
        }
        return Ok((lo, hi));
    }
    let num = |s: &str| -> Result<f64> {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| bad(format!("{s:?} is not a number (the coordinate is numeric)")))?;
        // Compared at the coordinate's precision.
        Ok(if c.f32 { f64::from(v as f32) } else { v })
    };
    let lo = sel.lo.as_deref().map(num).transpose()?;
    let hi = sel.hi.as_deref().map(num).transpose()?;
    let (mut lo, mut hi) = (lo.unwrap_or(f64::NEG_INFINITY), hi.unwrap_or(f64::INFINITY));
    // xarray accepts a slice given in the coordinate's order: on a
    // descending coordinate, slice(B, A) with B > A.
    let desc = c.values.len() > 1 && c.values[0] > c.values[1];
    if desc && !sel.exact && lo > hi {
        std::mem::swap(&mut lo, &mut hi);
    } else if lo > hi {
        return Err(bad(format!("{} selects nothing (start after end)", label_text(sel))));
    }
    // [lo, hi] inclusive as [lo, next_up(hi)).
    Ok((lo, next_up(hi)))
}

fn next_up(v: f64) -> f64 {
    if v.is_infinite() || v.is_nan() {
        return v;
    }
    if v == 0.0 {
        return f64::from_bits(1);
    }
    let b = v.to_bits();
    f64::from_bits(if v > 0.0 { b + 1 } else { b - 1 })
}

/// The calendars cftime decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calendar {
    /// Julian before 1582-10-15, Gregorian from then (CF "standard").
    Standard,
    ProlepticGregorian,
    NoLeap,
    AllLeap,
    Day360,
    Julian,
}

impl Calendar {
    pub fn parse(s: &str) -> std::result::Result<Calendar, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "" | "standard" | "gregorian" => Calendar::Standard,
            "proleptic_gregorian" => Calendar::ProlepticGregorian,
            "noleap" | "365_day" => Calendar::NoLeap,
            "all_leap" | "366_day" => Calendar::AllLeap,
            "360_day" => Calendar::Day360,
            "julian" => Calendar::Julian,
            other => {
                return Err(format!(
                "unknown calendar {other:?} (known: standard, gregorian, proleptic_gregorian, noleap, 365_day, all_leap, 366_day, 360_day, julian)"
            ))
            }
        })
    }

    /// The CF name.
    pub fn name(self) -> &'static str {
        match self {
            Calendar::Standard => "standard",
            Calendar::ProlepticGregorian => "proleptic_gregorian",
            Calendar::NoLeap => "noleap",
            Calendar::AllLeap => "all_leap",
            Calendar::Day360 => "360_day",
            Calendar::Julian => "julian",
        }
    }

    fn leap(self, y: i64) -> bool {
        let julian = y.rem_euclid(4) == 0;
        let gregorian = julian && (y.rem_euclid(100) != 0 || y.rem_euclid(400) == 0);
        match self {
            Calendar::ProlepticGregorian => gregorian,
            Calendar::Standard => {
                if y > 1582 {
                    gregorian
                } else {
                    julian
                }
            }
            Calendar::Julian => julian,
            Calendar::NoLeap | Calendar::Day360 => false,
            Calendar::AllLeap => true,
        }
    }

    fn month_len(self, y: i64, m: u32) -> u32 {
        if self == Calendar::Day360 {
            return 30;
        }
        match m {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            _ => {
                if self.leap(y) {
                    29
                } else {
                    28
                }
            }
        }
    }

    /// Days from a fixed origin to `y-m-d` in this calendar; an error for a
    /// date the calendar does not have.
    pub fn days(self, y: i64, m: u32, d: u32) -> std::result::Result<i64, String> {
        if !(1..=12).contains(&m) || d == 0 || d > self.month_len(y, m) {
            return Err(format!(
                "{y:04}-{m:02}-{d:02} is not a date in the {} calendar",
                self.name()
            ));
        }
        if self == Calendar::Standard && y == 1582 && m == 10 && (5..15).contains(&d) {
            return Err(format!(
                "{y:04}-{m:02}-{d:02} does not exist in the standard calendar (Julian to Gregorian)"
            ));
        }
        let (y, m, d) = (y, i64::from(m), i64::from(d));
        Ok(match self {
            Calendar::Day360 => y * 360 + (m - 1) * 30 + d - 1,
            Calendar::NoLeap | Calendar::AllLeap => {
                let year = if self == Calendar::NoLeap { 365 } else { 366 };
                let before: i64 = (1..m as u32).map(|k| i64::from(self.month_len(y, k))).sum();
                y * year + before + d - 1
            }
            Calendar::ProlepticGregorian => gregorian_jdn(y, m, d),
            Calendar::Julian => julian_jdn(y, m, d),
            Calendar::Standard => {
                if (y, m, d) >= (1582, 10, 15) {
                    gregorian_jdn(y, m, d)
                } else {
                    julian_jdn(y, m, d)
                }
            }
        })
    }

    /// The date `days` from the origin (the inverse of [`Calendar::days`]).
    fn date(self, days: i64) -> (i64, u32, u32) {
        match self {
            Calendar::Day360 => {
                let (y, r) = (days.div_euclid(360), days.rem_euclid(360));
                (y, (r / 30 + 1) as u32, (r % 30 + 1) as u32)
            }
            Calendar::NoLeap | Calendar::AllLeap => {
                let year = if self == Calendar::NoLeap { 365 } else { 366 };
                let (y, mut r) = (days.div_euclid(year), days.rem_euclid(year));
                let mut m = 1;
                while r >= i64::from(self.month_len(y, m)) {
                    r -= i64::from(self.month_len(y, m));
                    m += 1;
                }
                (y, m, r as u32 + 1)
            }
            Calendar::ProlepticGregorian => jdn_gregorian(days),
            Calendar::Julian => jdn_julian(days),
            Calendar::Standard => {
                if days >= gregorian_jdn(1582, 10, 15) {
                    jdn_gregorian(days)
                } else {
                    jdn_julian(days)
                }
            }
        }
    }
}

/// Julian day number of a proleptic Gregorian date.
fn gregorian_jdn(y: i64, m: i64, d: i64) -> i64 {
    let a = (14 - m) / 12;
    let (y, m) = (y + 4800 - a, m + 12 * a - 3);
    d + (153 * m + 2) / 5 + 365 * y + y.div_euclid(4) - y.div_euclid(100) + y.div_euclid(400) - 32045
}

/// Julian day number of a Julian-calendar date.
fn julian_jdn(y: i64, m: i64, d: i64) -> i64 {
    let a = (14 - m) / 12;
    let (y, m) = (y + 4800 - a, m + 12 * a - 3);
    d + (153 * m + 2) / 5 + 365 * y + y.div_euclid(4) - 32083
}

fn jdn_gregorian(j: i64) -> (i64, u32, u32) {
    let a = j + 32044;
    let b = (4 * a + 3).div_euclid(146097);
    let c = a - 146097 * b / 4;
    let d = (4 * c + 3) / 1461;
    let e = c - 1461 * d / 4;
    let m = (5 * e + 2) / 153;
    let day = e - (153 * m + 2) / 5 + 1;
    let month = m + 3 - 12 * (m / 10);
    let year = 100 * b + d - 4800 + m / 10;
    (year, month as u32, day as u32)
}

fn jdn_julian(j: i64) -> (i64, u32, u32) {
    let c = j + 32082;
    let d = (4 * c + 3).div_euclid(1461);
    let e = c - 1461 * d / 4;
    let m = (5 * e + 2) / 153;
    let day = e - (153 * m + 2) / 5 + 1;
    let month = m + 3 - 12 * (m / 10);
    let year = d - 4800 + m / 10;
    (year, month as u32, day as u32)
}

/// A date and time of day; `res` is how much of it was written (1 = year
/// .. 6 = seconds), which sets the period a label covers.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stamp {
    y: i64,
    mo: u32,
    d: u32,
    secs: f64,
    res: u8,
}

fn parse_stamp(s: &str) -> std::result::Result<Stamp, String> {
    let bad = || format!("{s:?} is not a date (YYYY, YYYY-MM, YYYY-MM-DD, or YYYY-MM-DDTHH[:MM[:SS]])");
    let s = s.trim();
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    // A leading minus is a negative year.
    let (neg, date) = match date.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, date),
    };
    let parts: Vec<&str> = date.split('-').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()))
    {
        return Err(bad());
    }
    let y: i64 = parts[0].parse().map_err(|_| bad())?;
    let y = if neg { -y } else { y };
    let mo: u32 = parts.get(1).map_or(Ok(1), |p| p.parse()).map_err(|_| bad())?;
    let d: u32 = parts.get(2).map_or(Ok(1), |p| p.parse()).map_err(|_| bad())?;
    let mut res = parts.len() as u8;
    let mut secs = 0.0;
    if let Some(t) = time {
        if parts.len() != 3 {
            return Err(bad());
        }
        let tp: Vec<&str> = t.split(':').collect();
        if tp.is_empty() || tp.len() > 3 {
            return Err(bad());
        }
        let h: f64 = tp[0].parse().map_err(|_| bad())?;
        let mi: f64 = tp.get(1).map_or(Ok(0.0), |p| p.parse()).map_err(|_| bad())?;
        let se: f64 = tp.get(2).map_or(Ok(0.0), |p| p.parse()).map_err(|_| bad())?;
        if !(0.0..24.0).contains(&h) || !(0.0..60.0).contains(&mi) || !(0.0..61.0).contains(&se) {
            return Err(bad());
        }
        secs = h * 3600.0 + mi * 60.0 + se;
        res = 3 + tp.len() as u8;
    }
    Ok(Stamp { y, mo, d, secs, res })
}

/// A CF time axis: `<unit> since <reference>` in a calendar.
#[derive(Debug, Clone)]
pub struct TimeAxis {
    unit_secs: f64,
    cal: Calendar,
    /// The reference instant, in seconds from the calendar's origin.
    epoch: f64,
}

impl TimeAxis {
    pub fn new(units: &str, calendar: &str) -> std::result::Result<TimeAxis, String> {
        let cal = Calendar::parse(calendar)?;
        let (unit, since) = units
            .split_once(" since ")
            .ok_or_else(|| format!("time units {units:?} are not \"<unit> since <date>\""))?;
        let unit_secs = match unit.trim().to_ascii_lowercase().as_str() {
            "days" | "day" | "d" => 86400.0,
            "hours" | "hour" | "hr" | "h" => 3600.0,
            "minutes" | "minute" | "min" => 60.0,
            "seconds" | "second" | "sec" | "s" => 1.0,
            "milliseconds" | "millisecond" | "ms" => 1e-3,
            "microseconds" | "microsecond" | "us" => 1e-6,
            other => {
                return Err(format!(
                    "time unit {other:?} is not supported (days, hours, minutes, seconds, ms, us)"
                ))
            }
        };
        // "2000-01-01", "2000-01-01 00:00:00", "2000-1-1 0:0:0", a trailing
        // time zone "UTC"/"Z" is ignored.
        let since = since.trim().trim_end_matches(" UTC").trim_end_matches('Z');
        let norm = normalise_reference(since);
        let st = parse_stamp(&norm).map_err(|e| format!("time units {units:?}: {e}"))?;
        let days = cal.days(st.y, st.mo, st.d)?;
        Ok(TimeAxis {
            unit_secs,
            cal,
            epoch: days as f64 * 86400.0 + st.secs,
        })
    }

    /// The coordinate value of a label: the start of the period it names,
    /// or (with `end`) the start of the next period.
    pub fn value(&self, label: &str, end: bool) -> std::result::Result<f64, String> {
        let st = parse_stamp(label)?;
        let start_days = self.cal.days(st.y, st.mo, st.d)?;
        let mut secs = start_days as f64 * 86400.0 + st.secs;
        if end {
            secs = match st.res {
                1 => self.cal.days(st.y + 1, 1, 1)? as f64 * 86400.0,
                2 => {
                    let (y, m) = if st.mo == 12 { (st.y + 1, 1) } else { (st.y, st.mo + 1) };
                    self.cal.days(y, m, 1)? as f64 * 86400.0
                }
                3 => secs + 86400.0,
                4 => secs + 3600.0,
                5 => secs + 60.0,
                _ => secs + 1.0,
            };
        }
        Ok((secs - self.epoch) / self.unit_secs)
    }

    pub fn calendar(&self) -> Calendar {
        self.cal
    }

    /// A coordinate value as a calendar date and the seconds into that day.
    pub fn civil(&self, v: f64) -> (i64, u32, u32, f64) {
        let secs = self.epoch + v * self.unit_secs;
        let days = (secs / 86400.0).floor();
        let (y, m, d) = self.cal.date(days as i64);
        (y, m, d, secs - days * 86400.0)
    }

    /// The coordinate value of a calendar date and time of day.
    pub fn at(&self, y: i64, m: u32, d: u32, secs: f64) -> std::result::Result<f64, String> {
        let days = self.cal.days(y, m, d)?;
        Ok((days as f64 * 86400.0 + secs - self.epoch) / self.unit_secs)
    }

    /// Seconds per coordinate unit.
    pub fn unit_secs(&self) -> f64 {
        self.unit_secs
    }

    /// A coordinate value as a date (ISO 8601, to the second).
    pub fn format(&self, v: f64) -> std::result::Result<String, String> {
        let secs = self.epoch + v * self.unit_secs;
        let days = (secs / 86400.0).floor();
        let (y, m, d) = self.cal.date(days as i64);
        let rem = (secs - days * 86400.0).round() as i64;
        Ok(format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        ))
    }
}

/// "2000-1-1 0:0:0" -> "2000-01-01T00:00:00" (what CF writers produce).
fn normalise_reference(s: &str) -> String {
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t.trim())),
        None => (s, None),
    };
    let (neg, body) = match date.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", date),
    };
    let mut p: Vec<String> = body.split('-').map(|x| x.to_string()).collect();
    for x in p.iter_mut().skip(1) {
        if x.len() == 1 {
            *x = format!("0{x}");
        }
    }
    let date = format!("{neg}{}", p.join("-"));
    match time.filter(|t| !t.is_empty()) {
        Some(t) => {
            // Drop fractional seconds beyond what parse_stamp takes.
            let t: Vec<String> = t
                .split(':')
                .map(|x| if x.len() == 1 { format!("0{x}") } else { x.to_string() })
                .collect();
            format!("{date}T{}", t.join(":"))
        }
        None => date,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coord(v: &[f64]) -> Coordinate {
        Coordinate {
            values: v.to_vec(),
            raw: v.to_vec(),
            attrs: Default::default(),
            f32: false,
            time: None,
        }
    }

    fn sel(s: &str) -> LabelSel {
        s.parse().unwrap()
    }

    #[test]
    fn parsing_ranges_values_and_datetimes() {
        assert_eq!(
            sel("lat=-10:10.5"),
            LabelSel {
                dim: "lat".into(),
                lo: Some("-10".into()),
                hi: Some("10.5".into()),
                exact: false
            }
        );
        assert!(sel("lat=5").exact);
        assert_eq!(sel("lat=:5").lo, None);
        let t = sel("time=2020-01-01T06:00:2020-01-02T12:30");
        assert_eq!(
            (t.lo.as_deref(), t.hi.as_deref()),
            (Some("2020-01-01T06:00"), Some("2020-01-02T12:30"))
        );
        let t = sel("time=2020-01-01 06:00:00:2020-02");
        assert_eq!(
            (t.lo.as_deref(), t.hi.as_deref()),
            (Some("2020-01-01 06:00:00"), Some("2020-02"))
        );
        assert!("lat".parse::<LabelSel>().is_err());
        assert!("lat=:".parse::<LabelSel>().is_err());
    }

    #[test]
    fn float_ranges_ascending_descending_and_exact() {
        let asc = coord(&[-90.0, -45.0, 0.0, 45.0, 90.0]);
        assert_eq!(index_range(&sel("lat=-45:45"), &asc).unwrap(), 1..4);
        assert_eq!(index_range(&sel("lat=-50:1"), &asc).unwrap(), 1..3);
        assert_eq!(index_range(&sel("lat=0"), &asc).unwrap(), 2..3);
        assert_eq!(index_range(&sel("lat=:0"), &asc).unwrap(), 0..3);
        let desc = coord(&[90.0, 45.0, 0.0, -45.0, -90.0]);
        // xarray: slice(45, -45) on a descending coordinate.
        assert_eq!(index_range(&sel("lat=45:-45"), &desc).unwrap(), 1..4);
        assert_eq!(index_range(&sel("lat=-45:45"), &desc).unwrap(), 1..4);
        assert!(index_range(&sel("lat=100:120"), &asc)
            .unwrap_err()
            .to_string()
            .contains("outside"));
        assert!(index_range(&sel("lat=1"), &asc)
            .unwrap_err()
            .to_string()
            .contains("equals"));
        assert!(index_range(&sel("lat=x:1"), &asc).is_err());
        let bumpy = coord(&[0.0, 2.0, 1.0]);
        assert!(index_range(&sel("lat=0:1"), &bumpy)
            .unwrap_err()
            .to_string()
            .contains("monotonic"));
        // float32 coordinates: the label is compared at float32 precision.
        let f = Coordinate {
            f32: true,
            ..coord(&[f64::from(0.1f32), f64::from(0.2f32)])
        };
        assert_eq!(index_range(&sel("x=0.1"), &f).unwrap(), 0..1);
    }

    #[test]
    fn calendars_count_days_like_cftime() {
        // Days between 2000-01-01 and 2001-01-01.
        let span = |c: Calendar| c.days(2001, 1, 1).unwrap() - c.days(2000, 1, 1).unwrap();
        assert_eq!(span(Calendar::Standard), 366);
        assert_eq!(span(Calendar::NoLeap), 365);
        assert_eq!(span(Calendar::AllLeap), 366);
        assert_eq!(span(Calendar::Day360), 360);
        assert_eq!(span(Calendar::Julian), 366);
        // 1900: leap in Julian, not in Gregorian.
        assert_eq!(
            Calendar::Julian.days(1900, 3, 1).unwrap() - Calendar::Julian.days(1900, 2, 28).unwrap(),
            2
        );
        assert_eq!(
            Calendar::Standard.days(1900, 3, 1).unwrap() - Calendar::Standard.days(1900, 2, 28).unwrap(),
            1
        );
        // The Gregorian reform: 1582-10-04 is followed by 1582-10-15.
        let s = Calendar::Standard;
        assert_eq!(s.days(1582, 10, 15).unwrap() - s.days(1582, 10, 4).unwrap(), 1);
        assert!(s.days(1582, 10, 10).is_err());
        assert!(Calendar::NoLeap.days(2000, 2, 29).is_err());
        assert!(Calendar::Day360.days(2000, 2, 30).is_ok());
        assert!(Calendar::Day360.days(2000, 1, 31).is_err());
        assert!(Calendar::parse("mayan").is_err());
        for c in [
            Calendar::Standard,
            Calendar::ProlepticGregorian,
            Calendar::NoLeap,
            Calendar::AllLeap,
            Calendar::Day360,
            Calendar::Julian,
        ] {
            for (y, m, d) in [(1, 1, 1), (1582, 10, 4), (1600, 2, 28), (2000, 2, 28), (2024, 12, 30)] {
                let n = c.days(y, m, d).unwrap();
                assert_eq!(c.date(n), (y, m, d), "{c:?}");
            }
        }
    }

    #[test]
    fn dates_select_whole_periods() {
        // Daily values at 00:00, days since 2020-01-01, noleap: 2020 has 365 days.
        let t = Coordinate {
            time: Some(("days since 2020-01-01".into(), "noleap".into())),
            ..coord(&(0..730).map(f64::from).collect::<Vec<_>>())
        };
        assert_eq!(index_range(&sel("time=2020-03-01:2020-06-30"), &t).unwrap(), 59..181);
        assert_eq!(index_range(&sel("time=2020-02"), &t).unwrap(), 31..59);
        assert_eq!(index_range(&sel("time=2021"), &t).unwrap(), 365..730);
        assert!(index_range(&sel("time=2020-02-29"), &t)
            .unwrap_err()
            .to_string()
            .contains("not a date"));
        assert!(index_range(&sel("time=1999-01-01:1999-12-31"), &t)
            .unwrap_err()
            .to_string()
            .contains("outside"));
        // 6-hourly, hours since, standard calendar: a day holds 4 steps.
        let h = Coordinate {
            time: Some(("hours since 2000-02-28 00:00:00".into(), "standard".into())),
            ..coord(&(0..40).map(|i| f64::from(i * 6)).collect::<Vec<_>>())
        };
        assert_eq!(index_range(&sel("time=2000-02-29"), &h).unwrap(), 4..8);
        assert_eq!(
            index_range(&sel("time=2000-02-29T06:00:2000-03-01T00:00"), &h).unwrap(),
            5..9
        );
        let ax = TimeAxis::new("hours since 2000-02-28 00:00:00", "standard").unwrap();
        assert_eq!(ax.format(30.0).unwrap(), "2000-02-29T06:00:00");
        assert!(TimeAxis::new("fortnights since 2000-01-01", "standard").is_err());
        assert!(TimeAxis::new("days since 2000-1-1 0:0:0", "360_day").is_ok());
    }
}
