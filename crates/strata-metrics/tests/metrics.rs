//! Metrics from real jobs' logs into `strata.db`, and the comparison chart.

#[path = "../../strata-runc/tests/support/launch_fixture.rs"]
mod fixture;

use std::io::Read;

use fixture::{env, read_log, LONG};
use strata_metrics::plot::{plot_png, PlotSeries};
use strata_metrics::{sparkline, MetricsStore};

const PRINT_1000: &str = r#"
import json
for i in range(1000):
    print("strata:metric " + json.dumps({"name": "loss", "value": 1.0 / (1 + i) + SHIFT, "step": i}))
    if i % 10 == 0:
        print("strata:metric " + json.dumps({"name": "acc", "value": i / 1000, "step": i}))
    if i % 100 == 0:
        print("epoch", i // 100, "done", flush=True)
"#;

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_job_printing_1000_metric_lines_has_them_all_in_order_and_a_chart() {
    let env = env();
    let launcher = env.launcher();
    let mut store = MetricsStore::open(&env.home().join("strata.db")).unwrap();
    for (job, shift) in [("m-a", "0.0"), ("m-b", "0.2")] {
        let script = PRINT_1000.replace("SHIFT", shift);
        launcher
            .launch(&env.request(job, &["python3", "-c", &script]))
            .unwrap();
        // Ingest while it runs and after: the offset makes the two reads add up exactly.
        store.ingest_log(job, &env.log(job)).unwrap();
        let outcome = launcher.wait(job, LONG).unwrap().expect("ended");
        assert_eq!(outcome.exit_code, Some(0), "{}", read_log(&env.log(job)));
        store.ingest_log(job, &env.log(job)).unwrap();
        launcher.cleanup(job).unwrap();
    }

    let loss = store.series("m-a", "loss").unwrap();
    assert_eq!(loss.len(), 1000);
    let steps: Vec<i64> = loss.iter().map(|s| s.step.unwrap()).collect();
    assert_eq!(steps, (0..1000).collect::<Vec<_>>());
    assert!(loss.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(loss[0].value, 1.0);
    assert_eq!(store.series("m-a", "acc").unwrap().len(), 100);
    assert_eq!(store.names("m-a").unwrap(), ["acc", "loss"]);

    let last = store.last_values("m-b").unwrap();
    let loss_b = last.iter().find(|l| l.name == "loss").unwrap();
    assert_eq!(loss_b.step, Some(999));
    assert_eq!(loss_b.count, 1000);
    assert!((loss_b.value - (1.0 / 1000.0 + 0.2)).abs() < 1e-12);
    // Nothing new in the logs: nothing added.
    assert_eq!(store.ingest_log("m-a", &env.log("m-a")).unwrap().points, 0);

    let values: Vec<f64> = loss.iter().map(|s| s.value).collect();
    let spark = sparkline(&values, 40);
    assert_eq!(spark.chars().count(), 40);
    assert!(spark.starts_with('█') && spark.ends_with('▁'), "{spark}");

    let series: Vec<PlotSeries> = ["m-a", "m-b"]
        .iter()
        .map(|job| PlotSeries {
            job_id: job.to_string(),
            name: "loss".into(),
            points: store
                .series(job, "loss")
                .unwrap()
                .iter()
                .map(|s| (s.step.unwrap_or(s.seq) as f64, s.value))
                .collect(),
        })
        .collect();
    let png = env.home().join("loss.png");
    plot_png(&png, &series).unwrap();
    check_png(&std::fs::read(&png).unwrap());
}

/// A valid PNG: signature, chunks with correct CRCs, IHDR first, IEND last, and image
/// data that inflates to exactly one filtered row per line.
fn check_png(bytes: &[u8]) {
    assert!(bytes.len() > 1000, "suspiciously small: {}", bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let mut at = 8;
    let mut kinds = Vec::new();
    let (mut width, mut height) = (0usize, 0usize);
    let mut idat = Vec::new();
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind = &bytes[at + 4..at + 8];
        let data = &bytes[at + 8..at + 8 + len];
        let crc = u32::from_be_bytes(bytes[at + 8 + len..at + 12 + len].try_into().unwrap());
        let mut c = flate2::Crc::new();
        c.update(kind);
        c.update(data);
        assert_eq!(c.sum(), crc, "bad CRC in {}", String::from_utf8_lossy(kind));
        if kind == b"IHDR" {
            width = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
            height = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
            assert_eq!(&data[8..10], &[8, 2]);
        }
        if kind == b"IDAT" {
            idat.extend_from_slice(data);
        }
        kinds.push(String::from_utf8_lossy(kind).to_string());
        at += 12 + len;
    }
    assert_eq!(kinds.first().map(String::as_str), Some("IHDR"));
    assert_eq!(kinds.last().map(String::as_str), Some("IEND"));
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    assert_eq!(raw.len(), height * (1 + width * 3));
}
