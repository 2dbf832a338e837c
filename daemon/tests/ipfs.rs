//! IPFS interop with real clients and independent tools (tests/python/
//! ipfs_tool.py shares no code with shoal): ipfsspec opens a dataset's
//! UnixFS view through the gateway of a daemon that holds nothing; CARs
//! from `?format=car` and `shoal get --car` walk back to the original
//! files, a flipped byte is caught; a sha2-256 CAR packed like `ipfs-car
//! pack` does imports to the same dataset; bad CARs are refused; a HAMT
//! directory's keys resolve by path and as raw blocks; a corrupt local
//! block is never served.

mod common;

use std::path::Path;

use common::*;

fn tool(args: &[&str]) -> String {
    let paths: Vec<&Path> = args.iter().map(Path::new).collect();
    py("ipfs_tool.py", &paths)
}

fn gateway(d: &Daemon) -> String {
    d.json(&["id"])["gateway"].as_str().unwrap().to_string()
}

fn view_of(d: &Daemon, target: &str) -> String {
    d.json(&["ls", target])["unixfs"].as_str().unwrap().to_string()
}

fn get(url: &str) -> (u16, Vec<u8>) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", url])
        .output()
        .unwrap();
    let mut body = out.stdout;
    let nl = body.iter().rposition(|b| *b == b'\n').unwrap();
    let code = String::from_utf8_lossy(&body[nl + 1..]).trim().parse().unwrap();
    body.truncate(nl);
    (code, body)
}

#[test]
fn ipfs_clients_read_a_dataset_through_a_daemon_that_holds_nothing_and_cars_verify() {
    let (a, e) = (Daemon::start(), Daemon::start());
    e.connect(&a);
    let src = datasets().join("xr_v2");
    let root = a.add(&src, Some("sst"));
    let view = view_of(&a, "sst");
    assert!(view.starts_with("bafyb"), "a dag-pb CID: {view}");
    // The view's CID works as a TARGET, standing for its dataset: ls,
    // query, the mount.
    assert_eq!(a.json(&["ls", &view])["root"], root.as_str());
    assert_eq!(a.json(&["query", &view, "sst", "--op", "count"])["root"], root.as_str());
    let mnt = tempfile::tempdir().unwrap();
    let m = mount(&a, mnt.path(), "mnt");
    assert_eq!(
        std::fs::read(m.0.join(&view).join("sst/.zarray")).unwrap(),
        std::fs::read(src.join("sst/.zarray")).unwrap()
    );
    drop(m);
    wait_providers(&e, &view, 1);
    let gw = gateway(&e);
    // ipfsspec, through e (which fetches every block from a).
    assert!(tool(&["xarray", &gw, &view, src.to_str().unwrap()]).starts_with("ok"));
    let work = tempfile::tempdir().unwrap();
    // The trustless gateway's CAR, checked by the independent verifier.
    let car = work.path().join("gw.car");
    let fetched = tool(&["fetch", &format!("{gw}/ipfs/{view}?format=car"), car.to_str().unwrap()]);
    assert!(
        fetched.contains("application/vnd.ipld.car; version=1; order=dfs; dups=n"),
        "{fetched}"
    );
    assert!(tool(&["verify", car.to_str().unwrap(), src.to_str().unwrap()]).starts_with("ok"));
    // shoal get --car, and the same CAR with one flipped byte.
    let got = work.path().join("get.car");
    a.cli_ok(&["get", "sst", "--car", got.to_str().unwrap()]);
    assert!(tool(&["verify", got.to_str().unwrap(), src.to_str().unwrap()]).starts_with("ok"));
    let flipped = work.path().join("flipped.car");
    tool(&["flip", got.to_str().unwrap(), flipped.to_str().unwrap()]);
    let out = std::process::Command::new(python())
        .arg(workspace().join("tests/python/ipfs_tool.py"))
        .args(["verify", flipped.to_str().unwrap(), src.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the verifier must reject a flipped byte");
    // shoal refuses it too, and a truncated one, and stores nothing.
    let c = Daemon::start();
    let before = c.json(&["stats"])["blocks"].as_u64().unwrap();
    let err = c.cli(&["add", flipped.to_str().unwrap()]);
    assert_eq!(err.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&err.stderr).contains("do not hash to its CID"));
    let truncated = work.path().join("truncated.car");
    let bytes = std::fs::read(&got).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = c.cli(&["add", truncated.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("truncated"), "{err:?}");
    assert_eq!(c.json(&["stats"])["blocks"].as_u64().unwrap(), before);
    // A CAR packed as ipfs-car does (sha2-256, 256 KiB raw leaves) imports
    // to the very dataset shoal added from the directory.
    let packed = work.path().join("packed.car");
    tool(&["pack", src.to_str().unwrap(), packed.to_str().unwrap()]);
    assert_eq!(c.add(&packed, Some("imported")), root);
    // A CAR of a directory with no Zarr inside is refused clearly.
    let plain_dir = work.path().join("notzarr");
    std::fs::create_dir_all(&plain_dir).unwrap();
    std::fs::write(plain_dir.join("readme.txt"), b"not a zarr store").unwrap();
    let plain_car = work.path().join("notzarr.car");
    tool(&["pack", plain_dir.to_str().unwrap(), plain_car.to_str().unwrap()]);
    let err = c.cli(&["add", plain_car.to_str().unwrap()]);
    assert_eq!(err.status.code(), Some(1), "{err:?}");
    assert!(
        String::from_utf8_lossy(&err.stderr).to_lowercase().contains("zarr"),
        "{err:?}"
    );

    // A corrupt local block is never served: not as raw, not by path, not
    // in a CAR (a's copy is bad; it may fetch a good one from e, which
    // cached it, or fail).
    let key = "sst/0.0.0";
    let good = std::fs::read(src.join(key)).unwrap();
    corrupt_local_copy(&a, &good);
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x5a;
    let agw = gateway(&a);
    for (url, exact) in [
        (format!("{agw}/ipfs/{view}/{key}?format=raw"), true),
        (format!("{agw}/ipfs/{view}/{key}"), true),
        (format!("{agw}/ipfs/{view}/sst?format=car"), false),
    ] {
        let (code, body) = get(&url);
        assert!(
            !body.windows(bad.len()).any(|w| w == bad),
            "{url}: corrupt bytes served"
        );
        if code == 200 && exact {
            assert_eq!(body, good, "{url}");
        }
    }
}

#[test]
fn a_hamt_directory_resolves_by_path_and_block_and_corrupt_blocks_are_never_served() {
    let a = Daemon::start();
    let src = datasets().join("many_v2");
    a.add(&src, Some("many"));
    let view = view_of(&a, "many");
    let gw = gateway(&a);
    // The probe IPFS clients send.
    assert_eq!(get(&format!("{gw}/ipfs/bafkqaaa")).0, 200);
    // A root nobody has: 404, for every format.
    let unknown = "bafyb4ihdhn4gbjwwmrhbgaugqrd5ohq3qrmyh5jxxkjhmm7rhwb3aibkfm";
    for q in ["", "?format=raw", "?format=car"] {
        assert_eq!(get(&format!("{gw}/ipfs/{unknown}{q}")).0, 404, "{q}");
    }
    // x/ holds 10,000 chunk files: a HAMT shard.
    let want = std::fs::read(src.join("x/57.3")).unwrap();
    assert_eq!(get(&format!("{gw}/ipfs/{view}/x/57.3")), (200, want.clone()));
    assert_eq!(get(&format!("{gw}/ipfs/{view}/x/57.3?format=raw")), (200, want.clone()));
    assert_eq!(get(&format!("{gw}/ipfs/{view}/x/nope")).0, 404);
    assert_eq!(
        get(&format!("{gw}/ipfs/{view}/x/.zarray")).1,
        std::fs::read(src.join("x/.zarray")).unwrap()
    );
    // The whole view as a CAR verifies independently (HAMT walked).
    let work = tempfile::tempdir().unwrap();
    let car = work.path().join("many.car");
    tool(&["fetch", &format!("{gw}/ipfs/{view}?format=car"), car.to_str().unwrap()]);
    let checked = tool(&["verify", car.to_str().unwrap(), src.to_str().unwrap()]);
    assert!(checked.starts_with("ok 1000"), "{checked}");
}

#[test]
fn helia_verified_fetch_reads_keys_and_an_ipfs_car_pack_imports() {
    // 256 KiB blocks: dist_v3's chunks (about 512 KiB) span several.
    let a = Daemon::start_opts(Opts {
        store: "block_size = \"256KiB\"\n".into(),
        ..Default::default()
    });
    let (dist, many) = (datasets().join("dist_v3"), datasets().join("many_v2"));
    a.add(&dist, Some("dist"));
    a.add(&many, Some("many"));
    let gw = gateway(&a);
    let chunk = "sst/c/3/0/0";
    assert!(std::fs::metadata(dist.join(chunk)).unwrap().len() > 256 << 10);
    let pair = |dir: &Path, key: &str| format!("{key}={}", dir.join(key).display());
    // A small key, a multi-block key, a key inside a HAMT directory: each
    // block fetched with ?format=raw and verified by helia (blake3).
    let out = js(
        "helia_check.mjs",
        &[
            &gw,
            &view_of(&a, "dist"),
            &pair(&dist, "zarr.json"),
            &pair(&dist, chunk),
        ],
    );
    assert!(out.contains("ok 2"), "{out}");
    let out = js("helia_check.mjs", &[&gw, &view_of(&a, "many"), &pair(&many, "x/57.3")]);
    assert!(out.contains("ok 1"), "{out}");
    // dag-scope: the path's nodes, then the terminal block alone (block),
    // or the file's node and the leaves entity-bytes covers (entity).
    let blocks_in = |q: &str| -> Vec<shoal_core::Cid> {
        let (code, body) = get(&format!("{gw}/ipfs/{}/{chunk}?format=car&{q}", view_of(&a, "dist")));
        assert_eq!(code, 200, "{q}");
        let mut r = shoal_unixfs::car::Reader::new(&body[..]).unwrap();
        let mut out = Vec::new();
        while let Some((c, data)) = r.next_block().unwrap() {
            shoal_core::cid::verify(&c, &data).unwrap();
            out.push(c);
        }
        out
    };
    let path_len = chunk.split('/').count(); // sst, c, 3, 0 and the root
    let block = blocks_in("dag-scope=block");
    assert_eq!(block.len(), path_len + 1, "{block:?}");
    let first = blocks_in("dag-scope=entity&entity-bytes=0:1000");
    assert_eq!(first.len(), path_len + 2, "the file node and its first leaf: {first:?}");
    let all = blocks_in("dag-scope=entity");
    let leaves = std::fs::metadata(dist.join(chunk)).unwrap().len().div_ceil(256 << 10) as usize;
    assert_eq!(all.len(), path_len + 1 + leaves, "every leaf: {all:?}");
    assert_eq!(blocks_in("").len(), all.len());
    // ipfs-car pack (sha2-256, wrapped in a directory) of a zarr-python
    // dataset imports to the dataset shoal makes of the directory, and
    // reads back equal through zarr-python.
    let work = tempfile::tempdir().unwrap();
    let car = work.path().join("dist.car");
    js(
        "node_modules/ipfs-car/bin.js",
        &[
            "pack",
            dist.to_str().unwrap(),
            "--hidden",
            "--output",
            car.to_str().unwrap(),
        ],
    );
    let b = Daemon::start_opts(Opts {
        store: "block_size = \"256KiB\"\n".into(),
        ..Default::default()
    });
    assert_eq!(
        b.add(&car, Some("fromcar")),
        a.json(&["ls", "dist"])["root"].as_str().unwrap()
    );
    let back = work.path().join("back");
    b.cli_ok(&["get", "fromcar", "-o", back.to_str().unwrap()]);
    py("check_equal.py", &[&dist, &back]);
    // Without --hidden ipfs-car leaves out zarr.json's siblings starting
    // with '.'; for a v3 dataset that still imports, for v2 it cannot.
    let v2car = work.path().join("v2.car");
    js(
        "node_modules/ipfs-car/bin.js",
        &["pack", many.to_str().unwrap(), "--output", v2car.to_str().unwrap()],
    );
    let err = b.cli(&["add", v2car.to_str().unwrap()]);
    assert_eq!(err.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&err.stderr).contains("--hidden"), "{err:?}");
}
