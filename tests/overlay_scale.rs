//! `netsim bench --overlay` end to end through the library, small: meshes of 2 and 3 routers
//! converge, idle, stop, and the report has a row per size with figures in it and the fitted
//! exponent; between the sizes the bench waits for the kernel to finish the last lab's
//! teardown (and returns, here within its limit).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Mutex;
use std::time::Duration;

use netsim::measure::overlay_scale::{self, ScaleOptions};
use netsim::overlay_run::OverlayOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_meshes_converge_idle_and_report() {
    let opts = ScaleOptions {
        idle_window: Duration::from_millis(500),
        overlay: OverlayOptions {
            binary: Some(common::router_binary()),
            ..OverlayOptions::default()
        },
    };
    let said = Mutex::new(Vec::<String>::new());
    let say = |line: &str| said.lock().unwrap().push(line.to_string());
    let report = overlay_scale::run(&[2, 3], &opts, &say)
        .await
        .expect("bench --overlay");
    let said = said.into_inner().unwrap();
    assert_eq!(
        report.rows.iter().map(|r| r.hosts).collect::<Vec<_>>(),
        [2, 3],
        "{said:?}"
    );
    for r in &report.rows {
        assert!(r.converge_s > 0.0, "{r:?}");
        assert!(r.private_mib_mean > 0.0, "{r:?}");
        assert_eq!(r.fallbacks, 0, "{r:?}");
    }
    assert!(report.converge_exponent.is_some(), "{report:?}");
    assert!(
        !said.iter().any(|l| l.contains("measuring anyway")),
        "the kernel never settled: {said:?}"
    );
    let text = overlay_scale::render(&report);
    assert!(text.contains("| 3 |"), "{text}");
}
