//! A lab leaves no file descriptor behind once down: no netlink socket or namespace fd keeps
//! a dead lab's namespaces alive in the kernel. Alone in its binary, so no other test's
//! descriptors come and go meanwhile.

use std::time::Duration;

use netsim::lab::bench::star;
use netsim::lab::{Lab, UpOptions};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn down_closes_every_descriptor_up_opened() {
    std::env::set_var(netsim::lab::state::RUN_DIR_ENV, "/run/netsim-tests-lab-fds");
    // Warm up the runtime's own descriptors (blocking pool, reactor) with a first lab.
    Lab::up(star("fds", 2, 1500), UpOptions::default())
        .await
        .expect("up")
        .down()
        .await
        .expect("down");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = open_fds();
    let lab = Lab::up(star("fds", 20, 1500), UpOptions::default())
        .await
        .expect("up");
    lab.down().await.expect("down");
    // The netlink connection tasks end once their last handle is gone; let them run.
    let mut after = open_fds();
    for _ in 0..50 {
        if after <= before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = open_fds();
    }
    assert!(after <= before, "{} descriptors left open", after - before);
    // Only this test uses this run directory: the last lab to go down removed it.
    assert!(
        !std::path::Path::new("/run/netsim-tests-lab-fds").exists(),
        "the run directory was left behind"
    );
}
