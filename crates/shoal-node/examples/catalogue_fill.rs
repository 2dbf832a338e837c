//! Fills a (stopped) daemon's catalogue with N signed entries from 20
//! publishers, for the search benchmark (bench/catalogue.sh): titles,
//! variables, bboxes and time ranges drawn from small vocabularies so
//! searches match a known share of them.
//!
//! usage: catalogue_fill STORE_DIR N

use std::sync::Arc;

use shoal_net::catalogue::{envelope, Summary, Variable};
use shoal_net::names::NameRecord;
use shoal_net::Keypair;

const WORDS: [&str; 10] = [
    "sea surface temperature",
    "sea ice concentration",
    "precipitation",
    "air temperature",
    "ocean heat content",
    "chlorophyll",
    "salinity",
    "wind speed",
    "snow depth",
    "soil moisture",
];
const REGIONS: [(&str, [f64; 4]); 6] = [
    ("global", [-180.0, -90.0, 180.0, 90.0]),
    ("north atlantic", [-80.0, 0.0, 0.0, 65.0]),
    ("arctic", [-180.0, 60.0, 180.0, 90.0]),
    ("tropical pacific", [150.0, -20.0, -80.0, 20.0]),
    ("europe", [-15.0, 35.0, 40.0, 72.0]),
    ("southern ocean", [-180.0, -90.0, 180.0, -45.0]),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (dir, n): (std::path::PathBuf, usize) = (args[1].clone().into(), args[2].parse().unwrap());
    let cat = Arc::new(shoal_node::catalogue::Catalogue::open(&dir, &shoal_node::Limits::default()).unwrap());
    let keys: Vec<Keypair> = (0..20).map(|_| Keypair::generate_ed25519()).collect();
    for i in 0..n {
        let (word, (region, bbox)) = (WORDS[i % WORDS.len()], REGIONS[(i / 10) % REGIONS.len()]);
        let year = 1950 + (i * 7) % 70;
        let s = Summary {
            title: format!("{region} {word} {i}"),
            description: format!("Synthetic dataset {i}: {word} over the {region}, monthly from {year}."),
            institution: format!("Institute {}", i % 20),
            variables: vec![Variable {
                name: word.replace(' ', "_"),
                dims: vec!["time".into(), "lat".into(), "lon".into()],
                shape: vec![120, 180, 360],
                dtype: "float32".into(),
                long_name: word.into(),
                ..Variable::default()
            }],
            time: Some((
                format!("{year:04}-01-01T00:00:00"),
                format!("{:04}-12-31T00:00:00", year + 9),
            )),
            calendar: "standard".into(),
            bbox: Some(bbox),
            size: 1 << 30,
            keys: 1000,
            zarr_format: 3,
            ..Summary::default()
        };
        let (bytes, c) = s.encode().unwrap();
        let key = &keys[i % keys.len()];
        let root = shoal_core::cid::cid_of(shoal_core::cid::DAG_CBOR, format!("dataset {i}").as_bytes());
        let r = NameRecord::new(key.public().to_peer_id(), &format!("ds{i}"), root, 1, 1_700_000_000).with_entry(c);
        let env = envelope(&r.sign(key).unwrap(), &bytes).unwrap();
        assert_eq!(cat.heard(&env), shoal_net::Verdict::Accept, "entry {i}");
    }
    println!("{} entries", cat.len());
}
