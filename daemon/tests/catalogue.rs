//! The catalogue between daemons on loopback, read by real clients: a
//! publisher's datasets reach another daemon's STAC API, which pystac-client
//! searches by bbox, datetime and text (and whose documents validate
//! against the STAC schemas), `shoal search` answers the same, headless
//! Chromium searches the browse page; a daemon that joins after the
//! publisher went offline learns of its datasets; hostile entries (forged, oversized,
//! a flood from one key, HTML in titles) are refused or escaped, bounded
//! and counted, and change none of that.

mod common;

use std::time::Duration;

use common::*;
use shoal_net::catalogue::{envelope, Summary, Variable};
use shoal_net::names::NameRecord;

/// Two daemons, B connected to A; A adds and publishes the two datasets of
/// make_catalogue_datasets.py. Returns them once B's catalogue holds both.
fn swarm(opts: Opts) -> (Daemon, Daemon, tempfile::TempDir) {
    let (a, b) = (Daemon::start(), Daemon::start_opts(opts));
    b.connect(&a);
    let tmp = tempfile::tempdir().unwrap();
    py("make_catalogue_datasets.py", &[tmp.path()]);
    for name in ["atlantic", "arctic"] {
        a.add(&tmp.path().join(format!("{name}.zarr")), Some(name));
        let p = a.json(&["publish", name]);
        assert_eq!(p["seq"], 1, "{p}");
    }
    wait_for(30, "B's catalogue to hold both datasets", || {
        let found = b.json(&["search"]);
        (found["matched"] == 2).then_some(())
    });
    (a, b, tmp)
}

fn metric(d: &Daemon, name: &str) -> u64 {
    let (status, body) = http_get(&format!("{}/metrics", d.gateway()));
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name || k == format!("{name}_total")).then(|| v.parse::<f64>().ok())?
        })
        .unwrap_or_else(|| panic!("{name} is not on /metrics")) as u64
}

#[test]
fn a_published_dataset_is_found_through_stac_search_and_the_browse_page_of_another_daemon() {
    let (a, b, _tmp) = swarm(Opts::default());
    // pystac-client, the STAC schemas and xarray against B's gateway.
    let out = py_within("stac_check.py", &[std::path::Path::new(&b.gateway())], 300);
    assert!(out.contains("ok"), "{out}");
    // The CLI over the same index.
    let text = b.cli_ok(&["search", "sea", "surface"]);
    assert!(
        text.contains("North Atlantic sea surface temperature  atlantic@1"),
        "{text}"
    );
    assert!(!text.contains("arctic@1"), "{text}");
    let boxed = b.json(&["search", "--bbox", "100,70,120,80"]);
    assert_eq!(boxed["items"][0]["name"], "arctic", "{boxed}");
    assert_eq!(boxed["matched"], 1);
    let timed = b.json(&["search", "--time", "2000-01-10/2000-01-11"]);
    assert_eq!(timed["items"][0]["name"], "atlantic", "{timed}");
    assert_eq!(timed["matched"], 1);
    let none = b.cli_ok(&["search", "plankton"]);
    assert!(none.contains("no dataset in the catalogue matches"), "{none}");
    let bad = b.cli(&["search", "--bbox", "1,2,3"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--bbox"), "{bad:?}");
    // A's own catalogue lists what it publishes.
    assert_eq!(a.json(&["search"])["matched"], 2);
    // The browse page in headless Chromium: the search form, the
    // publisher's HTML shown as text, the quick-looks; a screenshot kept.
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: the browse-page test drives headless Chromium; apt-get install chromium (.ci/run does)"
    );
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("catalogue-browse.png");
    let out = js("browse.mjs", &[&b.gateway(), shot.to_str().unwrap()]);
    assert!(out.contains("ok"), "{out}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    println!("browse page screenshot: {}", shot.display());
    // A new version is a new item of the same collection.
    let tmp = tempfile::tempdir().unwrap();
    py("make_catalogue_datasets.py", &[tmp.path()]);
    std::fs::write(tmp.path().join("atlantic.zarr/extra.txt"), b"a second version").unwrap();
    a.add(&tmp.path().join("atlantic.zarr"), Some("atlantic"));
    wait_for(30, "the second version to reach B", || {
        let (s, body) = http_get(&format!("{}/stac/search?ids=atlantic@2", b.gateway()));
        (s == 200 && String::from_utf8_lossy(&body).contains("\"atlantic@2\"")).then_some(())
    });
    let (s, body) = http_get(&format!(
        "{}/stac/collections/atlantic.{}/items",
        b.gateway(),
        a.peer_id()
    ));
    let items: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(s, 200);
    let ids: Vec<_> = items["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].clone())
        .collect();
    assert_eq!(ids, ["atlantic@2", "atlantic@1"], "{items}");
    // With the publisher offline, a daemon that joins later learns of its
    // datasets from B (which relays other publishers' entries in turn).
    let mut a = a;
    a.stop();
    let c = Daemon::start();
    c.connect(&b);
    let found = wait_for(60, "C to learn A's datasets from B", || {
        let f = c.json(&["search"]);
        (f["matched"] == 2).then_some(f)
    });
    let versions: Vec<_> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].clone())
        .collect();
    assert_eq!(versions, ["arctic@1", "atlantic@2"], "{found}");
}

fn summary(title: &str) -> Summary {
    Summary {
        title: title.into(),
        variables: vec![Variable {
            name: "sst".into(),
            dims: vec!["time".into()],
            shape: vec![3],
            dtype: "float32".into(),
            ..Variable::default()
        }],
        bbox: Some([-10.0, -10.0, 10.0, 10.0]),
        size: 1,
        keys: 1,
        zarr_format: 3,
        ..Summary::default()
    }
}

fn entry(key: &shoal_net::Keypair, name: &str, s: &Summary) -> Vec<u8> {
    let (bytes, c) = s.encode().unwrap();
    let root = shoal_core::cid::cid_of(shoal_core::cid::DAG_CBOR, name.as_bytes());
    let r = NameRecord::new(key.public().to_peer_id(), name, root, 1, 0).with_entry(c);
    envelope(&r.sign(key).unwrap(), &bytes).unwrap()
}

#[test]
fn hostile_catalogue_entries_are_refused_or_escaped_bounded_and_counted() {
    let (a, b, _tmp) = swarm(Opts::default());
    let per_publisher = 1000u64; // the default bound
    let rt = tokio::runtime::Runtime::new().unwrap();
    let raw = raw_peer(&rt);
    rt.block_on(raw.dial(b.addr().parse().unwrap())).unwrap();
    let topic = shoal_net::catalogue::TOPIC.to_string();
    let publish = |data: Vec<u8>| rt.block_on(raw.publish_to(topic.clone(), data)).unwrap();

    // Forged: A's name and a summary claiming to be A's, signed by another
    // key; and a valid record whose summary was swapped afterwards.
    let mallory = shoal_net::Keypair::generate_ed25519();
    let a_id: shoal_net::PeerId = a.peer_id().parse().unwrap();
    let (bytes, c) = summary("Totally the real Atlantic").encode().unwrap();
    let root = shoal_core::cid::cid_of(shoal_core::cid::DAG_CBOR, b"elsewhere");
    let forged = shoal_net::names::forge(&NameRecord::new(a_id, "atlantic", root, 99, 0).with_entry(c), &mallory);
    let forged = envelope(&forged, &bytes).unwrap();
    // Oversized: past 16 KiB (under gossipsub's own frame bound, so it
    // reaches the catalogue's check).
    let mut oversized = entry(&mallory, "big", &summary("big"));
    oversized.resize(shoal_net::catalogue::MAX_ENTRY_BYTES + 512, 0);
    // HTML in a title, validly signed by its own publisher.
    let html = entry(&mallory, "html", &summary("<img src=x onerror=alert(1)>Evil & co"));
    // Each message is sent until B has counted it (gossip to a peer that
    // just connected may be lost before the mesh forms).
    let sent_until = |data: &Vec<u8>, counter: &str| {
        let before = metric(&b, counter);
        wait_for_every(30, 500, counter, || {
            publish(data.clone());
            (metric(&b, counter) > before).then_some(())
        });
    };
    sent_until(&forged, "shoal_catalogue_refused_forged");
    sent_until(&oversized, "shoal_catalogue_refused_oversized");
    sent_until(&html, "shoal_catalogue_accepted");
    // A flood from one key: more names than one publisher may have.
    let flood_key = shoal_net::Keypair::generate_ed25519();
    let flood: Vec<Vec<u8>> = (0..per_publisher + 200)
        .map(|i| entry(&flood_key, &format!("flood-{i}"), &summary("flood")))
        .collect();
    // Sent in rounds until B has seen past the bound (a message gossip drops
    // is sent again next round; what B holds is ignored).
    wait_for_every(120, 10, "the flood to reach its bound", || {
        for batch in flood.chunks(50) {
            for e in batch {
                publish(e.clone());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let held = b.json(&["search", "flood", "--limit", "1"])["matched"]
            .as_u64()
            .unwrap();
        (held == per_publisher && metric(&b, "shoal_catalogue_refused_over_bound") >= 1).then_some(())
    });
    let flood = b.json(&["search", "flood", "--limit", "1"]);
    assert_eq!(flood["matched"], per_publisher, "one publisher keeps at most its bound");
    assert!(metric(&b, "shoal_catalogue_entries") <= 2 + 1 + per_publisher);
    // None of it changed what A published.
    let atl = b.json(&["search", "atlantic"]);
    assert_eq!(atl["matched"], 1, "{atl}");
    assert_eq!(atl["items"][0]["publisher"], a.peer_id());
    assert_eq!(atl["items"][0]["title"], "North Atlantic sea surface temperature");
    // The HTML title is text on the browse page and plain JSON in STAC.
    let (s, page) = http_get(&format!("{}/?q=evil", b.gateway()));
    let page = String::from_utf8(page).unwrap();
    assert_eq!(s, 200);
    assert!(
        page.contains("&lt;img src=x onerror=alert(1)&gt;Evil &amp; co"),
        "{page}"
    );
    assert!(!page.contains("<img src=x"), "{page}");
    let (_, json) = http_get(&format!("{}/stac/search?q=evil", b.gateway()));
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        v["features"][0]["properties"]["title"],
        "<img src=x onerror=alert(1)>Evil & co"
    );
    // Hostile search input: a bad bbox, a bad datetime, a huge body.
    for q in [
        "bbox=1,2,3",
        "bbox=0,10,1,5",
        "datetime=yesterday",
        "limit=x",
        "token=../../etc",
    ] {
        let (s, _) = http_get(&format!("{}/stac/search?{q}", b.gateway()));
        assert_eq!(s, 400, "{q}");
    }
    // What was kept survives a restart (read back and verified again).
    let mut b = b;
    let before = b.json(&["search", "--limit", "1"])["matched"].clone();
    b.stop();
    b.restart();
    assert_eq!(b.json(&["search", "--limit", "1"])["matched"], before);
    drop(rt);
}
