//! The `Range` request header, single byte ranges only (RFC 9110 §14).

use std::ops::Range;

/// What a `Range` header asks of a representation of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranged {
    /// No usable range: the whole representation, 200. (Also a header that
    /// is not a single `bytes=` range: RFC 9110 lets a server ignore it.)
    Whole,
    /// One satisfiable range, 206 with `Content-Range`.
    Part(Range<u64>),
    /// A range that selects nothing, 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and the suffix form `bytes=-n`.
pub fn parse(header: Option<&str>, size: u64) -> Ranged {
    let Some(h) = header else { return Ranged::Whole };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.trim(), b.trim()) {
        ("", n) => match num(n) {
            None => Ranged::Whole,
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if size == 0 => Ranged::Unsatisfiable,
            Some(n) => Ranged::Part(size.saturating_sub(n)..size),
        },
        (a, "") => match num(a) {
            None => Ranged::Whole,
            Some(a) if a >= size => Ranged::Unsatisfiable,
            Some(a) => Ranged::Part(a..size),
        },
        (a, b) => match (num(a), num(b)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= size {
                    Ranged::Unsatisfiable
                } else {
                    Ranged::Part(a..b.saturating_add(1).min(size))
                }
            }
            // last < first: syntactically invalid, ignored.
            _ => Ranged::Whole,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_three_forms() {
        assert_eq!(parse(Some("bytes=0-9"), 100), Ranged::Part(0..10));
        assert_eq!(parse(Some("bytes=90-200"), 100), Ranged::Part(90..100));
        assert_eq!(parse(Some("bytes=10-"), 100), Ranged::Part(10..100));
        assert_eq!(parse(Some("bytes=-16"), 100), Ranged::Part(84..100));
        assert_eq!(parse(Some("bytes=-1000"), 100), Ranged::Part(0..100));
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(parse(Some("bytes=100-"), 100), Ranged::Unsatisfiable);
        assert_eq!(parse(Some("bytes=100-200"), 100), Ranged::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 100), Ranged::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-5"), 0), Ranged::Unsatisfiable);
        assert_eq!(parse(None, 100), Ranged::Whole);
        assert_eq!(parse(Some("bytes=5-1"), 100), Ranged::Whole);
        assert_eq!(parse(Some("bytes=0-1,5-6"), 100), Ranged::Whole);
        assert_eq!(parse(Some("items=0-1"), 100), Ranged::Whole);
        assert_eq!(parse(Some("bytes=a-b"), 100), Ranged::Whole);
        assert_eq!(parse(Some("bytes=+1-2"), 100), Ranged::Whole);
    }

    proptest! {
        #[test]
        fn a_part_is_inside_the_representation(h in "bytes=[0-9]{0,4}-[0-9]{0,4}", size in 0u64..5000) {
            if let Ranged::Part(r) = parse(Some(&h), size) {
                prop_assert!(r.start < r.end && r.end <= size);
            }
        }
    }
}
