//! Grouped reductions along a CF time coordinate, as xarray does them:
//! `--groupby time.month|season|year|dayofyear|hour` (one output cell per
//! distinct value present, labels sorted, the new dimension named after the
//! field) and `--resample time=FREQ` (bins of `nh`, `nD`, `nMS`, `nQS-MON`,
//! `nYS`, labelled by their left edge, every bin from the first to the last
//! value's included, empty ones too, as pandas does).
//!
//! A grouping turns into one bin index per position of the selected range:
//! the engine adds each value into its bin's output cell, so partials
//! merge exactly as for plain reductions. Every daemon that computes
//! resolves the bins from the dataset's own time coordinate, so a compute
//! request carries the rule, not the bins.

use serde::{Deserialize, Serialize};

use crate::label::{Coordinate, TimeAxis};
use crate::{Error, Result};

/// Most bins a grouping may have.
pub const MAX_BINS: usize = 1 << 22;

/// How positions along a time dimension are grouped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// The grouped dimension (its coordinate must be a CF time axis).
    pub dim: String,
    pub by: GroupBy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Month,
    Season,
    Year,
    DayOfYear,
    Hour,
    /// `n` units per bin; `anchor` is the first month of a quarter (0 =
    /// January) for quarterly bins.
    Resample {
        n: u32,
        unit: FreqUnit,
        anchor: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FreqUnit {
    Hour,
    Day,
    MonthStart,
    QuarterStart,
    YearStart,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

impl GroupSpec {
    /// `time.month` (the `--groupby` argument).
    pub fn groupby(s: &str) -> std::result::Result<GroupSpec, String> {
        let (dim, field) = s
            .split_once('.')
            .filter(|(d, f)| !d.is_empty() && !f.is_empty())
            .ok_or_else(|| format!("{s:?}: expected DIM.FIELD, e.g. time.month"))?;
        let by = match field {
            "month" => GroupBy::Month,
            "season" => GroupBy::Season,
            "year" => GroupBy::Year,
            "dayofyear" => GroupBy::DayOfYear,
            "hour" => GroupBy::Hour,
            other => {
                return Err(format!(
                    "unknown group key {other:?} in {s:?}; use month, season, year, dayofyear or hour"
                ))
            }
        };
        Ok(GroupSpec { dim: dim.into(), by })
    }

    /// `time=MS` (the `--resample` argument): `[n]h`, `[n]D`, `[n]MS`,
    /// `[n]QS[-MON]`, `[n]YS`.
    pub fn resample(s: &str) -> std::result::Result<GroupSpec, String> {
        let (dim, freq) = s
            .split_once('=')
            .filter(|(d, f)| !d.is_empty() && !f.is_empty())
            .ok_or_else(|| format!("{s:?}: expected DIM=FREQ, e.g. time=MS"))?;
        let bad = || format!("unknown frequency {freq:?}; use [n]h, [n]D, [n]MS, [n]QS-DEC (or another month), [n]YS");
        let digits = freq.bytes().take_while(u8::is_ascii_digit).count();
        let n: u32 = if digits == 0 {
            1
        } else {
            freq[..digits].parse().map_err(|_| bad())?
        };
        if n == 0 {
            return Err(format!("{freq:?}: the multiple must be at least 1"));
        }
        let (unit, anchor) = match &freq[digits..] {
            "h" | "H" => (FreqUnit::Hour, 0),
            "D" => (FreqUnit::Day, 0),
            "MS" => (FreqUnit::MonthStart, 0),
            "YS" | "YS-JAN" | "AS" | "AS-JAN" => (FreqUnit::YearStart, 0),
            "QS" => (FreqUnit::QuarterStart, 0),
            q => {
                let mon = q.strip_prefix("QS-").ok_or_else(bad)?;
                let i = MONTHS.iter().position(|m| *m == mon).ok_or_else(bad)?;
                (FreqUnit::QuarterStart, i as u8)
            }
        };
        Ok(GroupSpec {
            dim: dim.into(),
            by: GroupBy::Resample { n, unit, anchor },
        })
    }

    /// The name of the result's dimension: the field for a groupby, the
    /// dimension itself for a resample.
    pub fn out_dim(&self) -> String {
        match self.by {
            GroupBy::Month => "month".into(),
            GroupBy::Season => "season".into(),
            GroupBy::Year => "year".into(),
            GroupBy::DayOfYear => "dayofyear".into(),
            GroupBy::Hour => "hour".into(),
            GroupBy::Resample { .. } => self.dim.clone(),
        }
    }

    /// As the user wrote it (for messages and provenance).
    pub fn text(&self) -> String {
        match self.by {
            GroupBy::Resample { n, unit, anchor } => {
                let u = match unit {
                    FreqUnit::Hour => "h".to_string(),
                    FreqUnit::Day => "D".into(),
                    FreqUnit::MonthStart => "MS".into(),
                    FreqUnit::QuarterStart => format!("QS-{}", MONTHS[usize::from(anchor) % 12]),
                    FreqUnit::YearStart => "YS".into(),
                };
                format!("resample {}={n}{u}", self.dim)
            }
            _ => format!("groupby {}.{}", self.dim, self.out_dim()),
        }
    }
}

/// The labels of a grouping's bins.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    Int(Vec<i64>),
    Str(Vec<String>),
    /// Left edges, in the time coordinate's units.
    Time(Vec<f64>),
}

impl Labels {
    pub fn len(&self) -> usize {
        match self {
            Labels::Int(v) => v.len(),
            Labels::Str(v) => v.len(),
            Labels::Time(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A resolved grouping: the bin of every position of the selected range.
#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    pub out_dim: String,
    pub bins: Vec<u32>,
    pub labels: Labels,
}

fn season(m: u32) -> &'static str {
    match m {
        12 | 1 | 2 => "DJF",
        3..=5 => "MAM",
        6..=8 => "JJA",
        _ => "SON",
    }
}

/// Numbers the distinct keys in sorted order.
fn by_key<K: Ord + Clone>(keys: Vec<K>) -> (Vec<u32>, Vec<K>) {
    let mut labels = keys.clone();
    labels.sort();
    labels.dedup();
    let bins = keys
        .iter()
        .map(|k| labels.binary_search(k).expect("every key is a label") as u32)
        .collect();
    (bins, labels)
}

/// Resolves `spec` over `values`, the selected positions of the time
/// coordinate `c`.
pub fn resolve(spec: &GroupSpec, c: &Coordinate, values: &[f64]) -> Result<Grouping> {
    let bad = |why: String| Error::Selection(format!("{}: {why}", spec.text()));
    let (units, calendar) = c.time.as_ref().ok_or_else(|| {
        bad(format!(
            "{} is not a CF time coordinate (no units \"<unit> since <date>\")",
            spec.dim
        ))
    })?;
    let axis = TimeAxis::new(units, calendar).map_err(bad)?;
    if values.is_empty() {
        return Err(bad("the selection is empty".into()));
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(bad(format!("the coordinate of {} has missing values", spec.dim)));
    }
    let cal = axis.calendar();
    let civil: Vec<(i64, u32, u32, f64)> = values.iter().map(|v| axis.civil(*v)).collect();
    let out_dim = spec.out_dim();
    let (bins, labels) = match spec.by {
        GroupBy::Month => {
            let (b, l) = by_key(civil.iter().map(|c| i64::from(c.1)).collect());
            (b, Labels::Int(l))
        }
        GroupBy::Year => {
            let (b, l) = by_key(civil.iter().map(|c| c.0).collect());
            (b, Labels::Int(l))
        }
        GroupBy::Hour => {
            let (b, l) = by_key(civil.iter().map(|c| (c.3 / 3600.0).floor() as i64).collect());
            (b, Labels::Int(l))
        }
        GroupBy::DayOfYear => {
            let mut keys = Vec::with_capacity(civil.len());
            for &(y, m, d, _) in &civil {
                let day = cal.days(y, m, d).map_err(bad)? - cal.days(y, 1, 1).map_err(bad)? + 1;
                keys.push(day);
            }
            let (b, l) = by_key(keys);
            (b, Labels::Int(l))
        }
        GroupBy::Season => {
            let (b, l) = by_key(civil.iter().map(|c| season(c.1).to_string()).collect());
            (b, Labels::Str(l))
        }
        GroupBy::Resample { n, unit, anchor } => {
            let first = values.iter().copied().fold(f64::INFINITY, f64::min);
            let (fy, fm, fd, _) = axis.civil(first);
            match unit {
                FreqUnit::Hour | FreqUnit::Day => {
                    // Bins from midnight of the first value's day, as
                    // pandas' default origin ("start_day") puts them.
                    let step = f64::from(n) * if unit == FreqUnit::Hour { 3600.0 } else { 86400.0 };
                    let origin = axis.at(fy, fm, fd, 0.0).map_err(bad)?;
                    let us = axis.unit_secs();
                    let k: Vec<i64> = values
                        .iter()
                        .map(|v| (((v - origin) * us + 1e-6) / step).floor() as i64)
                        .collect();
                    let last = k.iter().copied().max().unwrap_or(0);
                    check_bins(last + 1).map_err(bad)?;
                    let labels = (0..=last).map(|i| origin + i as f64 * step / us).collect();
                    (k.iter().map(|i| *i as u32).collect(), Labels::Time(labels))
                }
                _ => {
                    let month = |y: i64, m: u32| y * 12 + i64::from(m) - 1;
                    let m0 = month(fy, fm);
                    let (a0, step) = match unit {
                        FreqUnit::MonthStart => (m0, i64::from(n)),
                        FreqUnit::QuarterStart => (m0 - (m0 - i64::from(anchor)).rem_euclid(3), 3 * i64::from(n)),
                        _ => (fy * 12, 12 * i64::from(n)),
                    };
                    let k: Vec<i64> = civil.iter().map(|c| (month(c.0, c.1) - a0).div_euclid(step)).collect();
                    let last = k.iter().copied().max().unwrap_or(0);
                    check_bins(last + 1).map_err(bad)?;
                    let mut labels = Vec::with_capacity(last as usize + 1);
                    for i in 0..=last {
                        let mi = a0 + i * step;
                        labels.push(
                            axis.at(mi.div_euclid(12), mi.rem_euclid(12) as u32 + 1, 1, 0.0)
                                .map_err(bad)?,
                        );
                    }
                    (k.iter().map(|i| *i as u32).collect(), Labels::Time(labels))
                }
            }
        }
    };
    Ok(Grouping { out_dim, bins, labels })
}

fn check_bins(n: i64) -> std::result::Result<(), String> {
    if n as u64 > MAX_BINS as u64 {
        return Err(format!(
            "{n} bins (at most {MAX_BINS}): choose a coarser frequency or select less"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daily(n: usize, units: &str, calendar: &str) -> Coordinate {
        let values: Vec<f64> = (0..n).map(|i| i as f64).collect();
        Coordinate {
            raw: values.clone(),
            values,
            attrs: Default::default(),
            f32: false,
            time: Some((units.into(), calendar.into())),
        }
    }

    #[test]
    fn months_and_seasons_are_sorted_labels() {
        let c = daily(400, "days since 2000-01-01", "standard");
        let g = resolve(&GroupSpec::groupby("time.month").unwrap(), &c, &c.values).unwrap();
        assert_eq!(g.labels, Labels::Int((1..=12).collect()));
        assert_eq!((g.bins[0], g.bins[31], g.bins[366]), (0, 1, 0));
        let s = resolve(&GroupSpec::groupby("time.season").unwrap(), &c, &c.values).unwrap();
        assert_eq!(
            s.labels,
            Labels::Str(vec!["DJF".into(), "JJA".into(), "MAM".into(), "SON".into()])
        );
        assert_eq!(s.bins[59], 0); // 2000-02-29
        assert_eq!(s.bins[60], 2); // 2000-03-01: MAM
    }

    #[test]
    fn resample_bins_start_at_the_left_edge() {
        let c = daily(400, "days since 2000-01-01", "standard");
        let q = resolve(&GroupSpec::resample("time=QS-DEC").unwrap(), &c, &c.values).unwrap();
        // 1999-12-01 is 31 days before the reference.
        let Labels::Time(l) = &q.labels else { panic!() };
        assert_eq!(l[0], -31.0);
        assert_eq!(l[1], 60.0); // 2000-03-01
        let h = daily(10, "hours since 2000-01-01 03:00", "noleap");
        let g = resolve(&GroupSpec::resample("time=6h").unwrap(), &h, &h.values).unwrap();
        let Labels::Time(l) = &g.labels else { panic!() };
        assert_eq!(l[0], -3.0);
        assert_eq!(g.bins, vec![0, 0, 0, 1, 1, 1, 1, 1, 1, 2]);
        let m = daily(365, "days since 2001-01-01", "360_day");
        let g = resolve(&GroupSpec::resample("time=2MS").unwrap(), &m, &m.values).unwrap();
        assert_eq!(g.bins[59], 0);
        assert_eq!(g.bins[60], 1);
        assert_eq!(g.labels.len(), 7);
    }

    #[test]
    fn bad_keys_and_frequencies_are_refused() {
        assert!(GroupSpec::groupby("time.week")
            .unwrap_err()
            .contains("unknown group key"));
        assert!(GroupSpec::groupby("time").is_err());
        assert!(GroupSpec::resample("time=3W")
            .unwrap_err()
            .contains("unknown frequency"));
        assert!(GroupSpec::resample("time=0D").is_err());
        assert!(GroupSpec::resample("time=QS-XYZ").is_err());
        let mut c = daily(3, "days since 2000-01-01", "standard");
        c.time = None;
        assert!(resolve(&GroupSpec::groupby("time.month").unwrap(), &c, &c.values).is_err());
    }
}
