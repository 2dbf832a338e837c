//! `shoal query` against xarray on the same files: every op, v2 and v3,
//! NaNs, CF packing (_FillValue, scale_factor, add_offset), absent chunks,
//! one and several dimensions, selections cutting through chunks, a sharded
//! array, raw mode. Expected values are computed by xarray in the test.

mod common;

use common::*;

struct Case {
    ds: &'static str,
    array: &'static str,
    op: &'static str,
    dims: &'static [&'static str],
    sel: &'static [(&'static str, u64, u64)],
    /// `--sel` label selections, as typed.
    labels: &'static [&'static str],
    /// `--groupby`, `--resample`, `--weights` as typed ("" = none).
    groupby: &'static str,
    resample: &'static str,
    weights: &'static str,
    ddof: u64,
    raw: bool,
}

const fn case(ds: &'static str, array: &'static str, op: &'static str, dims: &'static [&'static str]) -> Case {
    Case {
        ds,
        array,
        op,
        dims,
        sel: &[],
        labels: &[],
        groupby: "",
        resample: "",
        weights: "",
        ddof: 0,
        raw: false,
    }
}

const OPS: [&str; 7] = ["sum", "mean", "min", "max", "count", "var", "std"];

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for op in OPS {
        // v2 blosc float64 with NaNs, and v3 zstd float32 with NaNs.
        v.push(case("xr_v2", "sst", op, &["time"]));
        v.push(case("xr_v3", "sst", op, &[]));
        v.push(case("packed_v2", "temp", op, &["time"]));
        v.push(case("packed_v3", "temp", op, &["lat", "lon"]));
    }
    v.extend([
        Case {
            sel: &[("time", 3, 20), ("lat", 5, 17)],
            ..case("packed_v2", "temp", "mean", &["time"])
        },
        Case {
            sel: &[("lon", 1, 14)],
            ddof: 1,
            ..case("packed_v3", "temp", "std", &["time", "lat"])
        },
        Case {
            ddof: 1,
            ..case("xr_v2", "sst", "var", &["lat", "lon"])
        },
        Case {
            raw: true,
            ..case("packed_v2", "temp", "sum", &["time"])
        },
        Case {
            raw: true,
            ..case("packed_v3", "temp", "max", &[])
        },
        case("sparse_v2", "x", "sum", &[]),
        case("sparse_v2", "x", "mean", &["y"]),
        case("sparse_v2", "x", "count", &["x"]),
        case("sparse_v3", "x", "mean", &["x"]),
        case("sparse_v3", "x", "count", &[]),
        case("v3_sharded", "sharded", "sum", &["y"]),
        case("v3_sharded", "sharded", "max", &[]),
        Case {
            sel: &[("y", 5, 50), ("x", 3, 61)],
            ..case("v3_sharded", "sharded", "mean", &["x"])
        },
        case("xr_v3", "mask", "sum", &["lon"]),
        Case {
            sel: &[("time", 2, 23)],
            ..case("xr_v3", "sst", "mean", &["time"])
        },
    ]);
    v.extend(label_cases());
    v.extend(group_cases());
    v
}

/// Selections by label: float coordinates (ascending, descending, an exact
/// value), CF dates in the standard and noleap calendars, CF-packed data.
fn label_cases() -> Vec<Case> {
    vec![
        Case {
            labels: &["time=2020-01:2020-02", "lat=30:-30"],
            ..case("time_std", "tas", "mean", &["time"])
        },
        Case {
            labels: &["time=2020-02-29", "lon=90"],
            ..case("time_std", "tas", "sum", &["lat"])
        },
        Case {
            labels: &["time=2001-02-28T06:00:2001-03-02"],
            ..case("time_noleap", "pr", "mean", &["time"])
        },
        Case {
            labels: &["time=:2001-02-25", "x=1:3"],
            ..case("time_noleap", "pr", "max", &[])
        },
        Case {
            labels: &["lat=-30:30", "lon=90"],
            ..case("xr_v2", "sst", "std", &["time"])
        },
        Case {
            labels: &["lat=2.5:10"],
            ..case("packed_v2", "temp", "mean", &["time"])
        },
    ]
}

/// Climatologies, resampling and weights (xarray's groupby, resample and
/// weighted), on daily standard-calendar data (v2, float32 and CF-packed
/// int16) and 6-hourly noleap data (v3).
fn group_cases() -> Vec<Case> {
    let clim = |array, op, dims| case("clim_v2", array, op, dims);
    vec![
        Case {
            groupby: "time.month",
            ..clim("tas", "mean", &[])
        },
        Case {
            groupby: "time.season",
            ddof: 1,
            ..clim("tas", "std", &[])
        },
        Case {
            groupby: "time.month",
            ..clim("tpk", "mean", &[])
        },
        Case {
            groupby: "time.year",
            labels: &["time=2000-03:2001-06", "lat=-40:40"],
            ..clim("tas", "max", &["lon"])
        },
        Case {
            groupby: "time.dayofyear",
            ..clim("tas", "count", &[])
        },
        Case {
            resample: "time=MS",
            ..clim("tas", "mean", &[])
        },
        Case {
            resample: "time=QS-DEC",
            sel: &[("lat", 2, 7)],
            ..clim("tas", "sum", &["lat"])
        },
        Case {
            resample: "time=1D",
            ..case("clim_noleap", "pr", "mean", &[])
        },
        Case {
            resample: "time=2MS",
            ..case("clim_noleap", "pr", "var", &["x"])
        },
        Case {
            groupby: "time.hour",
            ..case("clim_noleap", "pr", "max", &[])
        },
        Case {
            weights: "coslat",
            ..clim("tas", "mean", &["lat", "lon"])
        },
        Case {
            weights: "coslat",
            ..clim("tas", "std", &["lat"])
        },
        Case {
            weights: "area",
            ..clim("tas", "sum", &["lat", "lon"])
        },
        Case {
            weights: "area",
            labels: &["time=2001"],
            ..clim("tpk", "mean", &[])
        },
    ]
}

/// The JSON xr_check.py reads for a case's label selections.
fn labels_json(labels: &[&str]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for l in labels {
        let l: shoal_query::label::LabelSel = l.parse().unwrap();
        m.insert(
            l.dim.clone(),
            serde_json::json!({"lo": l.lo, "hi": l.hi, "exact": l.exact}),
        );
    }
    serde_json::Value::Object(m)
}

#[test]
fn query_results_equal_xarray() {
    let d = Daemon::start();
    let mut roots = std::collections::HashMap::new();
    let work = tempfile::tempdir().unwrap();
    for ds in [
        "xr_v2",
        "xr_v3",
        "packed_v2",
        "packed_v3",
        "sparse_v2",
        "sparse_v3",
        "v3_sharded",
        "time_std",
        "time_noleap",
        "clim_v2",
        "clim_noleap",
    ] {
        roots.insert(ds, d.add(&datasets().join(ds), Some(ds)));
    }
    // A daemon that holds nothing runs the label and group cases again:
    // labels are resolved there (coordinates fetched), the chunks computed
    // on d, which resolves groups and weights from its own copy.
    let e = Daemon::start();
    e.connect(&d);
    for ds in [
        "time_std",
        "time_noleap",
        "xr_v2",
        "packed_v2",
        "clim_v2",
        "clim_noleap",
    ] {
        wait_providers(&e, &roots[ds], 1);
    }
    let mut checks = Vec::new();
    let pushed = label_cases().into_iter().chain(group_cases()).chain([Case {
        sel: &[("time", 3, 20), ("lat", 5, 17)],
        ..case("packed_v2", "temp", "mean", &["time"])
    }]);
    let remote: Vec<(&Daemon, Case)> = pushed.map(|c| (&e, c)).collect();
    let local: Vec<(&Daemon, Case)> = cases().into_iter().map(|c| (&d, c)).collect();
    for (i, (on, c)) in local.iter().chain(remote.iter()).enumerate() {
        // Results from d as .npy (grouped ones as Zarr); from e as Zarr
        // datasets (coordinates too).
        let local = std::ptr::eq(*on, &d);
        let grouped = !c.groupby.is_empty() || !c.resample.is_empty();
        let got = work
            .path()
            .join(format!("{i}.{}", if local && !grouped { "npy" } else { "zarr" }));
        let target = if local { c.ds.to_string() } else { roots[c.ds].clone() };
        let mut args: Vec<String> = vec!["query".into(), target, c.array.into(), "--op".into(), c.op.into()];
        for dim in c.dims {
            args.extend(["--dim".into(), dim.to_string()]);
        }
        for (dim, a, b) in c.sel {
            args.extend(["--isel".into(), format!("{dim}={a}:{b}")]);
        }
        for l in c.labels {
            args.extend(["--sel".into(), l.to_string()]);
        }
        for (flag, v) in [
            ("--groupby", c.groupby),
            ("--resample", c.resample),
            ("--weights", c.weights),
        ] {
            if !v.is_empty() {
                args.extend([flag.into(), v.into()]);
            }
        }
        args.extend([
            "--ddof".into(),
            c.ddof.to_string(),
            "--out".into(),
            got.display().to_string(),
        ]);
        if c.raw {
            args.push("--raw".into());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let text = on.cli_ok(&argv);
        if !local {
            // Pushed down: chunks ran on d, none was fetched to compute
            // here. A chunk an earlier query spot-checked here (a random
            // one per request) is held here since: a query of only such
            // chunks runs here, still fetching nothing.
            let all_here = text
                .lines()
                .find_map(|l| l.strip_prefix("ran: ")?.split_once(" chunks: "))
                .and_then(|(n, rest)| Some(n == rest.split_once(" local")?.0));
            assert!(
                text.contains(", 0 fetched") && (all_here == Some(true) || text.contains(" on 12D3")),
                "{args:?}: {text}"
            );
        }
        checks.push(serde_json::json!({
            "path": datasets().join(c.ds),
            "array": c.array,
            "op": c.op,
            "dims": c.dims,
            "sel": c.sel.iter().map(|(d, a, b)| (d.to_string(), serde_json::json!([a, b]))).collect::<serde_json::Map<_, _>>(),
            "labels": labels_json(c.labels),
            "groupby": c.groupby,
            "resample": c.resample.split_once('=').map(|(d, f)| vec![d, f]),
            "weights": c.weights,
            "ddof": c.ddof,
            "raw": c.raw,
            "got": got,
        }));
    }
    // Two arrays in one dataset, pushed down.
    let multi = work.path().join("multi.zarr");
    e.cli_ok(&[
        "query",
        &roots["clim_v2"],
        "tas,tpk",
        "--op",
        "std",
        "--resample",
        "time=MS",
        "--out",
        multi.to_str().unwrap(),
    ]);
    for a in ["tas", "tpk"] {
        checks.push(serde_json::json!({
            "path": datasets().join("clim_v2"), "array": a, "op": "std", "dims": [], "sel": {},
            "resample": ["time", "MS"], "ddof": 0, "raw": false, "got": multi,
        }));
    }
    let list = work.path().join("cases.json");
    std::fs::write(&list, serde_json::to_vec(&checks).unwrap()).unwrap();
    let out = py("xr_check.py", &[&list]);
    assert!(out.starts_with(&format!("ok {}", checks.len())), "{out}");
}

#[test]
fn query_errors_are_clear() {
    let d = Daemon::start();
    d.add(&datasets().join("xr_v3"), Some("x"));
    let err = |args: &[&str]| {
        let out = d.cli(args);
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(err(&["query", "x", "nope", "--op", "mean"]).contains("no array \"nope\""));
    assert!(err(&["query", "x", "sst", "--op", "mean", "--dim", "depth"]).contains("no dimension \"depth\""));
    assert!(err(&["query", "x", "sst", "--op", "mean", "--isel", "time=0:99"]).contains("outside 0:24"));
    assert!(err(&["query", "x", "sst", "--op", "median"]).contains("unknown op"));
    assert!(err(&["query", "x", "sst", "--op", "mean", "--isel", "time=5:2"]).contains("START < STOP"));
    // Labels: out of range, not a number for a numeric coordinate, a
    // dimension selected twice, a dimension with no coordinate array.
    let e = err(&["query", "x", "sst", "--op", "mean", "--sel", "lat=100:120"]);
    assert!(e.contains("outside the coordinate's range -60 to 60"), "{e}");
    let e = err(&["query", "x", "sst", "--op", "mean", "--sel", "lat=2020-01"]);
    assert!(e.contains("not a number"), "{e}");
    let e = err(&[
        "query", "x", "sst", "--op", "mean", "--sel", "lat=0:5", "--isel", "lat=0:2",
    ]);
    assert!(e.contains("selected twice"), "{e}");
    let e = err(&["query", "x", "sst", "--op", "mean", "--sel", "lat=7"]);
    assert!(e.contains("no coordinate value equals 7"), "{e}");
    d.add(&datasets().join("sparse_v3"), Some("s"));
    let e = err(&["query", "s", "x", "--op", "mean", "--sel", "y=1:2"]);
    assert!(e.contains("no coordinate array"), "{e}");
    let e = err(&["query", "x", "sst", "--op", "mean", "--sel", "lat"]);
    assert!(e.contains("DIM=A:B"), "{e}");
    // Groups and weights: an unknown key, a bad frequency, a dimension
    // that is no CF time axis, weights over dimensions the array lacks,
    // weights for an op that has none.
    d.add(&datasets().join("clim_v2"), Some("c"));
    let e = err(&["query", "c", "tas", "--op", "mean", "--groupby", "time.week"]);
    assert!(e.contains("unknown group key \"week\""), "{e}");
    let e = err(&["query", "c", "tas", "--op", "mean", "--resample", "time=3W"]);
    assert!(e.contains("unknown frequency \"3W\""), "{e}");
    let e = err(&["query", "c", "tas", "--op", "mean", "--groupby", "lat.month"]);
    assert!(e.contains("lat is not a CF time coordinate"), "{e}");
    let e = err(&["query", "c", "area", "--op", "mean", "--weights", "tas"]);
    assert!(e.contains("dimension time is not one of the array's (lat, lon)"), "{e}");
    let e = err(&["query", "c", "tas", "--op", "max", "--weights", "coslat"]);
    assert!(e.contains("weighted max is not defined"), "{e}");
    let e = err(&["query", "c", "tas", "--op", "mean", "--weights", "nope"]);
    assert!(e.contains("no array nope"), "{e}");
    let e = err(&[
        "query",
        "c",
        "tas",
        "--op",
        "mean",
        "--groupby",
        "time.month",
        "--resample",
        "time=MS",
    ]);
    assert!(e.contains("cannot be used with"), "{e}");
    // A small result prints its values; the summary says where it ran.
    let text = d.cli_ok(&["query", "x", "sst", "--op", "mean"]);
    assert!(text.contains("values: [") && text.contains(" local"), "{text}");
}

/// How much of the dataset daemon B holds.
#[derive(Clone, Copy, PartialEq)]
enum BCopy {
    /// A pinned copy: B provides it, as A does.
    Whole,
    /// The first six chunks, read through it (its cache): B does not
    /// provide the dataset; a query asks it only for what no provider
    /// computed.
    Part,
}

/// A adds the dataset (and provides it), B holds `b_copy` of it, C holds
/// nothing and is connected to both.
fn dist_setup(
    a_env: Vec<(String, String)>,
    b_env: Vec<(String, String)>,
    b_copy: BCopy,
) -> (Daemon, Daemon, Daemon, String, u64) {
    let src = datasets().join("dist_v3");
    let size: u64 = walk_size(&src);
    let a = Daemon::start_opts(Opts {
        env: a_env,
        ..Default::default()
    });
    let b = Daemon::start_opts(Opts {
        env: b_env,
        ..Default::default()
    });
    let c = Daemon::start();
    let root = a.add(&src, Some("dist"));
    b.connect(&a);
    match b_copy {
        BCopy::Whole => {
            b.cli_ok(&["pin", &root]);
            // Until C's lookup finds B among the providers.
            c.connect(&b);
            wait_for_every(30, 100, "B to be found as a provider", || {
                c.json(&["providers", &root])
                    .to_string()
                    .contains(&b.peer_id())
                    .then_some(())
            });
        }
        BCopy::Part => {
            for t in 0..6 {
                let out = b.cli(&["cat", &format!("{root}/sst/c/{t}/0/0")]);
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
    c.connect(&a);
    c.connect(&b);
    (a, b, c, root, size)
}

fn walk_size(p: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        n += if m.is_dir() { walk_size(&e.path()) } else { m.len() };
    }
    n
}

/// A query report's chunks computed per peer.
fn chunks_by_peer(r: &serde_json::Value) -> std::collections::HashMap<String, u64> {
    r["chunks_remote"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_u64().unwrap()))
        .collect()
}

fn check_dist(c: &Daemon, root: &str, work: &std::path::Path) -> serde_json::Value {
    let got = work.join("dist.npy");
    let out = c.cli_within(
        &[
            "query",
            root,
            "sst",
            "--op",
            "mean",
            "--dim",
            "y",
            "--dim",
            "x",
            "--json",
            "--out",
            got.to_str().unwrap(),
        ],
        120,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cases = work.join("dist.json");
    let case = serde_json::json!([{
        "path": datasets().join("dist_v3"), "array": "sst", "op": "mean", "dims": ["y", "x"],
        "sel": {}, "ddof": 0, "raw": false, "got": got,
    }]);
    std::fs::write(&cases, serde_json::to_vec(&case).unwrap()).unwrap();
    assert!(py("xr_check.py", &[&cases]).starts_with("ok 1"));
    r
}

#[test]
fn a_distributed_query_runs_where_the_chunks_are_and_moves_only_partials() {
    let (a, b, c, root, size) = dist_setup(Vec::new(), Vec::new(), BCopy::Whole);
    // A connected peer that holds nothing is not asked (issue 29: at 100
    // daemons a query asked all 99).
    let idle = Daemon::start();
    c.connect(&idle);
    let work = tempfile::tempdir().unwrap();
    let r = check_dist(&c, &root, work.path());
    let ran = chunks_by_peer(&r);
    assert_eq!(r["chunks_local"].as_u64(), Some(0), "C holds nothing: {r}");
    assert_eq!(r["chunks_fetched"].as_u64(), Some(0), "{r}");
    assert!(
        ran.get(&a.peer_id()).copied().unwrap_or(0) > 0,
        "A computed nothing: {r}"
    );
    assert!(
        ran.get(&b.peer_id()).copied().unwrap_or(0) > 0,
        "B computed nothing: {r}"
    );
    assert_eq!(ran.values().sum::<u64>(), 16);
    assert_eq!(r["peers_asked"].as_u64(), Some(2), "only the two providers: {r}");
    assert!(!ran.contains_key(&idle.peer_id()), "{r}");
    // What crossed the network: partials, and the blocks of the chunks
    // checked here (one per compute request, each at most 16 * 128 * 128
    // float64 values: 2 MiB... and 512 KiB here).
    let moved = r["network_bytes"].as_u64().unwrap();
    let checked = r["chunks_checked"].as_u64().unwrap();
    assert!((1..16).contains(&checked), "{r}");
    assert!(
        moved < checked * 600_000 + size / 100,
        "{moved} bytes crossed the network for a {size}-byte dataset, {checked} chunks checked"
    );
    // C holds the manifest root and the blocks of the chunks it checked
    // (one block each), as evictable cache: everything else came as partials.
    assert_eq!(
        c.json(&["stats"])["blocks"].as_u64(),
        Some(1 + checked),
        "only the manifest root and the checked chunks"
    );
    // Popularity: C counts the query it ran, A (a holder) the requests it
    // computed.
    let queries = |d: &Daemon| {
        d.json(&["mirrors"])["popular"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["root"] == root.as_str())
            .map(|p| p["local"]["queries"].as_u64().unwrap())
    };
    assert_eq!(queries(&c), Some(1));
    assert!(queries(&a).unwrap_or(0) >= 1, "A did not count the compute requests");
}

/// A peer holding part of a dataset without providing it (its cache) is
/// asked for the chunks the providers did not compute: here the only
/// provider lies, is struck, and B computes the chunks it holds.
#[test]
fn a_partial_copy_computes_what_the_providers_did_not() {
    let (a, b, c, root, _) = dist_setup(
        vec![("SHOAL_TEST_WRONG_PARTIALS".into(), "1".into())],
        Vec::new(),
        BCopy::Part,
    );
    let work = tempfile::tempdir().unwrap();
    // The result still equals xarray's (check_dist compares).
    let r = check_dist(&c, &root, work.path());
    let ran = chunks_by_peer(&r);
    assert!(!ran.contains_key(&a.peer_id()), "the lying provider was credited: {r}");
    assert!(r["liars"].to_string().contains(&a.peer_id()), "{r}");
    assert!(
        ran.get(&b.peer_id()).copied().unwrap_or(0) > 0,
        "B computed nothing: {r}"
    );
    assert_eq!(r["peers_asked"].as_u64(), Some(2), "{r}");
}

#[test]
fn killing_a_peer_mid_query_still_gives_the_right_result() {
    // B answers each compute request after 3s and logs each one it starts:
    // it is killed once it has started one, so it dies mid-request.
    let (_a, mut b, c, root, _) = dist_setup(
        Vec::new(),
        vec![
            ("SHOAL_TEST_SERVE_DELAY_MS".into(), "3000".into()),
            ("SHOAL_LOG".into(), "info,shoal_node=debug".into()),
        ],
        BCopy::Whole,
    );
    let b_id = b.peer_id();
    let work = tempfile::tempdir().unwrap();
    let killer = std::thread::spawn(move || {
        wait_for_every(60, 20, "B to be asked to compute", || {
            b.log().contains("compute request").then_some(())
        });
        b.kill9();
        b
    });
    let r = check_dist(&c, &root, work.path());
    let _b = killer.join().unwrap();
    assert!(
        !r["chunks_remote"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p[0] == b_id.as_str()),
        "B died mid-request yet is credited: {r}"
    );
    let total: u64 = r["chunks_remote"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_u64().unwrap())
        .sum::<u64>()
        + r["chunks_local"].as_u64().unwrap()
        + r["chunks_fetched"].as_u64().unwrap();
    assert_eq!(total, 16, "{r}");
}

/// A compute peer whose answers do not account for the chunks it was asked:
/// `omit` leaves the last chunk out, otherwise the first is listed both as
/// computed and as missing. Returns the peer and a count of its requests.
fn liar(
    rt: &tokio::runtime::Runtime,
    omit: bool,
) -> (shoal_net::Client, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use shoal_query::wire::{encode_response, ComputeHeader, ComputeRequest};
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = asked.clone();
    let peer = raw_peer_with(
        rt,
        std::sync::Arc::new(move |_, body| {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let req: ComputeRequest = serde_json::from_slice(&body).unwrap();
            let n = req.chunks.len();
            let h = if omit {
                ComputeHeader {
                    computed: (0..n.saturating_sub(1)).collect(),
                    ..Default::default()
                }
            } else {
                ComputeHeader {
                    computed: (0..n).collect(),
                    missing: vec![0],
                    error: None,
                }
            };
            encode_response(&h, &[], shoal_query::wire::Fields::of(&req.spec))
        }),
    );
    (peer, asked)
}

#[test]
fn answers_that_leave_out_or_double_count_chunks_are_rejected_and_the_peer_struck() {
    let src = datasets().join("dist_v3");
    // The provider lies too (wrong sums, caught by the checks): what it
    // was asked goes to the connected peers that do not provide the
    // dataset, the liar below among them.
    let a = Daemon::start_opts(Opts {
        env: vec![("SHOAL_TEST_WRONG_PARTIALS".into(), "1".into())],
        ..Default::default()
    });
    let root = a.add(&src, Some("dist"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    for omit in [true, false] {
        let c = Daemon::start();
        c.connect(&a);
        let (bad, asked) = liar(&rt, omit);
        rt.block_on(bad.dial(c.addr().parse().unwrap())).unwrap();
        let work = tempfile::tempdir().unwrap();
        // The result still equals xarray's (check_dist compares).
        let r = check_dist(&c, &root, work.path());
        let ran: Vec<String> = r["chunks_remote"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_str().unwrap().to_string())
            .collect();
        let bad_id = bad.peer_id().to_string();
        assert!(!ran.contains(&bad_id), "the liar's answer was used: {r}");
        let n = asked.load(std::sync::atomic::Ordering::SeqCst);
        // Asked (it is a connected peer), then struck: at most the two
        // requests it may have in flight before its first answer.
        assert!((1..=2).contains(&n), "the liar was asked {n} times (omit: {omit})");
    }
}

#[test]
fn a_named_result_is_a_dataset_and_the_same_query_is_answered_from_it() {
    let d = Daemon::start();
    d.add(&datasets().join("xr_v3"), Some("x"));
    let q = [
        "query",
        "x",
        "sst",
        "--op",
        "mean",
        "--dim",
        "time",
        "--sel",
        "lat=-30:30",
        "--name",
        "clim",
    ];
    let first = d.json(&q);
    let result = first["result"].as_str().unwrap().to_string();
    assert_eq!(first["cached"], false);
    assert!(first["chunks_local"].as_u64().unwrap() > 0);
    // The same query (dimension order aside): the kept result, nothing computed.
    let again = d.json(&q);
    assert_eq!(
        (again["result"].as_str(), again["cached"].as_bool()),
        (Some(result.as_str()), Some(true))
    );
    assert_eq!(again["chunks_local"], 0);
    assert_eq!(again["values"], first["values"]);
    let text = d.cli_ok(&q[..q.len()]);
    assert!(text.contains("kept earlier as"), "{text}");
    // --no-cache computes again (the same bytes: the same CID).
    let mut nc = q.to_vec();
    nc.push("--no-cache");
    let fresh = d.json(&nc);
    assert_eq!(
        (fresh["cached"].as_bool(), fresh["result"].as_str()),
        (Some(false), Some(result.as_str()))
    );
    // A dataset like any other: pinned and named, exported, read by xarray,
    // served over the gateway.
    assert!(d.json(&["pins"]).to_string().contains(&result));
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("clim.zarr");
    d.cli_ok(&["get", "clim", "-o", out.to_str().unwrap()]);
    let check = work.path().join("check.json");
    std::fs::write(
        &check,
        serde_json::to_vec(&serde_json::json!([{
            "path": datasets().join("xr_v3"), "array": "sst", "op": "mean", "dims": ["time"], "sel": {},
            "labels": {"lat": {"lo": "-30", "hi": "30", "exact": false}}, "ddof": 0, "raw": false, "got": out,
        }]))
        .unwrap(),
    )
    .unwrap();
    assert!(py("xr_check.py", &[&check]).starts_with("ok 1"));
    let gw = d.json(&["id"])["gateway"].as_str().unwrap().to_string();
    let got = py(
        "gateway_check.py",
        &[
            std::path::Path::new("get"),
            std::path::Path::new(&format!("{gw}/zarr/clim/sst/.zattrs")),
        ],
    );
    assert!(got.starts_with("status 200"), "{got}");
    // Writing a kept result to a path goes through `get`.
    let mut bad = q.to_vec();
    bad.extend(["--out", "/tmp/x.zarr"]);
    assert_eq!(d.cli(&bad).status.code(), Some(2));

    // A seasonal climatology of every data variable, kept and read back
    // through the mount: both variables, equal to xarray's.
    d.add(&datasets().join("clim_v2"), Some("c"));
    let q = [
        "query",
        "c",
        "--all",
        "--op",
        "mean",
        "--groupby",
        "time.season",
        "--name",
        "seasons",
    ];
    let first = d.json(&q);
    let vars: Vec<&str> = first
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["array"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["tas", "tpk"], "{first}");
    let again = d.json(&q);
    assert_eq!(again[0]["result"], first[0]["result"]);
    assert_eq!(
        (again[0]["cached"].as_bool(), again[1]["chunks_local"].as_u64()),
        (Some(true), Some(0))
    );
    let m = mount(&d, work.path(), "mnt");
    let cases: Vec<serde_json::Value> = vars
        .iter()
        .map(|a| {
            serde_json::json!({
                "path": datasets().join("clim_v2"), "array": a, "op": "mean", "dims": [], "sel": {},
                "groupby": "time.season", "ddof": 0, "raw": false, "got": m.0.join("seasons"),
            })
        })
        .collect();
    std::fs::write(&check, serde_json::to_vec(&cases).unwrap()).unwrap();
    assert!(py("xr_check.py", &[&check]).starts_with("ok 2"));
    drop(m);
    // Several arrays make one dataset: never a .npy.
    let npy = work.path().join("x.npy");
    let out = d.cli(&["query", "c", "tas,tpk", "--op", "mean", "--out", npy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PATH.zarr"));
}
