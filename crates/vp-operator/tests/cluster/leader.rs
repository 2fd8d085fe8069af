//! Leader election under a partition: the leader's connection to the API server freezes (a [`Proxy`] between
//! it and the API server); it must stop acting within its renew deadline, the standby must take over only after
//! the lease expired, and the audit of writes by identity (each process logs every write its gate lets through,
//! with a timestamp from the same machine clock) must show no overlap.

use super::*;
use std::time::Instant;
use vp_testenv::Proxy;

/// Timestamps of the writes a process logged (target `vp_operator::write`).
fn writes(op: &OperatorProcess) -> Result<Vec<jiff::Timestamp>, Fail> {
    let text = std::fs::read_to_string(&op.log)?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["target"] == "vp_operator::write" {
            let ts = v["timestamp"].as_str().ok_or("write without a timestamp")?;
            out.push(ts.parse::<jiff::Timestamp>()?);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_leader_stops_before_the_standby_takes_over() -> Result<(), Fail> {
    let (cp, ns) = setup("ve-split").await;
    add_nodes(cp, &ns, &["2", "2"]).await;
    let proxy = Proxy::for_api_server(cp).await?;
    let kubeconfig = std::env::temp_dir().join(format!("{}-proxy.kubeconfig", ns.name()));
    proxy.write_kubeconfig(cp, &kubeconfig)?;
    let mut a = OperatorProcess::start_with(&kubeconfig, &ns, "replica-a");
    let t_a = wait_leader(&ns, "replica-a", &a).await?;
    let b = OperatorProcess::start(cp, &ns, "replica-b");
    ns.api::<VariantEnsemble>()
        .create(&PostParams::default(), &ensemble(&ns, &["v0", "v1"], 20))
        .await?;
    wait_status(&ns, "ensemble Ready (replica-a)", ready).await?;
    assert_eq!(b.leader_gauge().await, Some(0), "the standby does not lead");

    // The partition: nothing from replica-a reaches the API server any more.
    proxy.freeze();
    let frozen = Instant::now();
    until("replica-a stops acting", WAIT, || async {
        let g = a.leader_gauge().await;
        Ok(if g != Some(1) {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("gauge {g:?}"))
        })
    })
    .await?;
    let a_stopped = frozen.elapsed();
    let a_stopped_at = jiff::Timestamp::now();
    // Its last renewal began at most a retry period (2 s) before the freeze; renew deadline 10 s.
    assert!(
        a_stopped <= Duration::from_secs(12),
        "replica-a acted {a_stopped:?} into the partition (renew deadline 10 s)"
    );
    let t_b = wait_leader(&ns, "replica-b", &b).await?;
    let b_leads = frozen.elapsed();
    assert_eq!(t_b, t_a + 1, "one transition");
    assert!(
        b_leads > a_stopped,
        "the standby took over ({b_leads:?}) after the leader stopped ({a_stopped:?})"
    );
    // The lease (15 s) had to expire on the standby's clock, counted from its last sight of a renewal.
    assert!(
        b_leads >= Duration::from_secs(13),
        "the standby took over only {b_leads:?} into the partition"
    );
    // The new leader acts.
    change_and_wait(&ns, 2).await?;

    // The partition heals: whatever replica-a still holds must not act (it exits; its writes are refused).
    proxy.thaw();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let began = Instant::now();
    while !a.exited() {
        assert!(
            began.elapsed() < WAIT,
            "replica-a did not exit after losing leadership"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    change_and_wait(&ns, 3).await?;

    // The audit: every write of replica-a happened before it stopped, and before replica-b's first write.
    let wa = writes(&a)?;
    let wb = writes(&b)?;
    assert!(
        !wa.is_empty(),
        "replica-a wrote while it led (the audit sees writes)"
    );
    assert!(!wb.is_empty(), "replica-b wrote after it took over");
    let last_a = wa.iter().max().copied().ok_or("no writes")?;
    let first_b = wb.iter().min().copied().ok_or("no writes")?;
    assert!(
        last_a < first_b,
        "writes overlap: replica-a's last at {last_a}, replica-b's first at {first_b}"
    );
    assert!(
        last_a <= a_stopped_at,
        "replica-a wrote at {last_a}, after it stopped leading ({a_stopped_at})"
    );
    let _ = std::fs::remove_file(&kubeconfig);
    drop(b);
    Ok(())
}
