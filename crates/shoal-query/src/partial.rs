//! Per-cell partial results and their merge.
//!
//! A partial summarises the values that fell into one output cell:
//! (count, sum, min, max, M2) where M2 is the sum of squared deviations from
//! the mean. Partials of disjoint sets merge exactly (up to rounding) in any
//! order with the parallel formula of Chan, Golub and LeVeque (1979):
//!
//! ```text
//! n = na + nb,  delta = mean_b - mean_a,
//! M2 = M2a + M2b + delta^2 * na * nb / n
//! ```
//!
//! Everything is accumulated in f64. Missing values (NaN after decoding)
//! are skipped, as xarray does by default for floats.
//!
//! Weighted partials (`--weights`) keep the sum of the weights of the
//! valid values in `wsum`, the weighted sum in `sum` and the weighted M2
//! in `m2`; the same formula merges them with weights in place of counts
//! (West, 1979). Unweighted partials keep `wsum` at 0.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub m2: f64,
    /// Sum of the weights (weighted reductions only; 0 otherwise).
    #[serde(default)]
    pub wsum: f64,
}

impl Default for Partial {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// The reductions `shoal query` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Sum,
    Mean,
    Min,
    Max,
    Count,
    Var,
    Std,
}

impl Op {
    /// Whether the op needs the M2 (variance) term.
    pub fn needs_m2(self) -> bool {
        matches!(self, Op::Var | Op::Std)
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Op::Sum => "sum",
            Op::Mean => "mean",
            Op::Min => "min",
            Op::Max => "max",
            Op::Count => "count",
            Op::Var => "var",
            Op::Std => "std",
        };
        f.write_str(s)
    }
}

impl std::str::FromStr for Op {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "sum" => Op::Sum,
            "mean" => Op::Mean,
            "min" => Op::Min,
            "max" => Op::Max,
            "count" => Op::Count,
            "var" => Op::Var,
            "std" => Op::Std,
            _ => return Err(format!("unknown op {s:?}; use sum, mean, min, max, count, var or std")),
        })
    }
}

impl Partial {
    pub const EMPTY: Partial = Partial {
        count: 0,
        sum: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        m2: 0.0,
        wsum: 0.0,
    };

    /// The partial of a slice of values, NaNs skipped. Two passes over the
    /// slice (mean, then squared deviations) keep M2 accurate.
    pub fn of(values: &[f64]) -> Partial {
        let mut p = Partial::EMPTY;
        for &v in values {
            if !v.is_nan() {
                p.count += 1;
                p.sum += v;
                p.min = p.min.min(v);
                p.max = p.max.max(v);
            }
        }
        if p.count > 1 {
            let mean = p.sum / p.count as f64;
            p.m2 = values
                .iter()
                .filter(|v| !v.is_nan())
                .map(|v| (v - mean) * (v - mean))
                .sum();
        }
        p
    }

    /// Merges two partials of disjoint value sets.
    pub fn merge(self, b: Partial) -> Partial {
        if self.count == 0 {
            return b;
        }
        if b.count == 0 {
            return self;
        }
        // Weighted partials weigh by their weights; a side whose weights
        // sum to zero adds its count only (its weighted sums are zero).
        let weighted = self.wsum != 0.0 || b.wsum != 0.0;
        let (na, nb) = if weighted {
            (self.wsum, b.wsum)
        } else {
            (self.count as f64, b.count as f64)
        };
        let n = na + nb;
        let m2 = if na == 0.0 || nb == 0.0 || n == 0.0 {
            self.m2 + b.m2
        } else {
            let delta = b.sum / nb - self.sum / na;
            self.m2 + b.m2 + delta * delta * na * nb / n
        };
        Partial {
            count: self.count + b.count,
            sum: self.sum + b.sum,
            min: self.min.min(b.min),
            max: self.max.max(b.max),
            m2,
            wsum: self.wsum + b.wsum,
        }
    }

    /// The final value of `op` (xarray's skipna semantics: an empty cell is
    /// 0 for sum and count, NaN otherwise; var/std divide by count - ddof
    /// and are NaN when that is not positive).
    pub fn finish(&self, op: Op, ddof: u64) -> f64 {
        let n = self.count;
        match op {
            Op::Count => n as f64,
            Op::Sum => self.sum,
            _ if n == 0 => f64::NAN,
            Op::Mean => self.sum / n as f64,
            Op::Min => self.min,
            Op::Max => self.max,
            Op::Var | Op::Std if n <= ddof => f64::NAN,
            Op::Var => self.m2 / (n - ddof) as f64,
            Op::Std => (self.m2 / (n - ddof) as f64).sqrt(),
        }
    }
}

impl Partial {
    /// The final value of a weighted `op` (xarray's `weighted`): the
    /// weighted sum (0 for no valid value), the weighted mean, variance
    /// (`M2 / sum of weights`, no ddof) and standard deviation, NaN where
    /// the weights of the valid values sum to zero.
    pub fn finish_weighted(&self, op: Op) -> f64 {
        match op {
            Op::Sum => self.sum,
            _ if self.count == 0 || self.wsum == 0.0 => f64::NAN,
            Op::Mean => self.sum / self.wsum,
            Op::Var => self.m2 / self.wsum,
            Op::Std => (self.m2 / self.wsum).sqrt(),
            _ => f64::NAN,
        }
    }
}

/// Merges `b` into `a` cell by cell (same shapes).
pub fn merge_into(a: &mut [Partial], b: &[Partial]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.merge(*y);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300) || a == b
    }

    #[test]
    fn empty_and_all_nan_cells_follow_xarray() {
        let p = Partial::of(&[f64::NAN, f64::NAN]);
        assert_eq!(p.finish(Op::Count, 0), 0.0);
        assert_eq!(p.finish(Op::Sum, 0), 0.0);
        for op in [Op::Mean, Op::Min, Op::Max, Op::Var, Op::Std] {
            assert!(p.finish(op, 0).is_nan(), "{op:?}");
        }
        let one = Partial::of(&[3.0, f64::NAN]);
        assert_eq!(one.finish(Op::Var, 0), 0.0);
        assert!(one.finish(Op::Var, 1).is_nan());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Splitting values into chunks, computing partials and merging them
        /// in any order gives the one-pass result.
        #[test]
        fn merge_is_order_independent(
            values in proptest::collection::vec(prop_oneof![9 => -1e6f64..1e6, 1 => Just(f64::NAN)], 1..300),
            cuts in proptest::collection::vec(0usize..300, 0..8),
            order_seed in any::<u64>(),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % values.len()).collect();
            cuts.push(0);
            cuts.push(values.len());
            cuts.sort();
            cuts.dedup();
            let mut parts: Vec<Partial> = cuts.windows(2).map(|w| Partial::of(&values[w[0]..w[1]])).collect();
            // A deterministic shuffle from the seed.
            let mut s = order_seed;
            for i in (1..parts.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                parts.swap(i, (s >> 33) as usize % (i + 1));
            }
            let merged = parts.into_iter().fold(Partial::EMPTY, Partial::merge);
            let whole = Partial::of(&values);
            for op in [Op::Sum, Op::Mean, Op::Min, Op::Max, Op::Count, Op::Var, Op::Std] {
                for ddof in [0, 1] {
                    let (a, b) = (merged.finish(op, ddof), whole.finish(op, ddof));
                    // Sums of values up to 1e6 lose ~1e-16 relative per add.
                    prop_assert!(close(a, b) || (a - b).abs() <= 1e-6, "{op:?} ddof {ddof}: {a} vs {b}");
                }
            }
        }
    }
}
