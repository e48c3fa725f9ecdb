//! Active health checks: a heartbeat to every host of a cluster on an interval; a host
//! that cannot be reached or does not answer in time is taken out of balancing until
//! it answers again.

use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::listener::{connection, ConnectError};
use crate::codec::Codec;

/// Starts checking every host of `cluster`, each on its own interval: a host slow to
/// answer (up to its connect or heartbeat timeout) delays no other host's check.
pub fn check_hosts<C: Codec>(cluster: &Rc<Cluster>) {
    for host in 0..cluster.hosts.len() {
        tokio::task::spawn_local(check_host::<C>(Rc::downgrade(cluster), host));
    }
}

/// Runs while the cluster is part of the running configuration.
async fn check_host<C: Codec>(cluster: Weak<Cluster>, host: usize) {
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let interval = Duration::from_millis(c.config.health_check_interval_ms);
        let timeout = Duration::from_millis(c.config.health_check_timeout_ms);
        drop(c);
        tokio::time::sleep(interval).await;
        let Some(c) = cluster.upgrade() else { return };
        let healthy = probe::<C>(&c, host, timeout).await;
        c.set_healthy(host, healthy);
    }
}

async fn probe<C: Codec>(cluster: &Rc<Cluster>, host: usize, timeout: Duration) -> bool {
    let upstream = match connection::<C>(cluster, host, None).await {
        Ok(upstream) => upstream,
        Err(ConnectError::Overloaded) => return cluster.hosts[host].healthy.get(),
        Err(ConnectError::Draining | ConnectError::Failed(_) | ConnectError::TimedOut) => {
            return false
        }
    };
    let sent = Instant::now();
    let Some(id) = upstream.send_heartbeat::<C>() else {
        return false;
    };
    let deadline = sent + timeout;
    while Instant::now() < deadline {
        if upstream.heartbeat_answered(id) {
            return true;
        }
        if !upstream.is_open() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if upstream.silent_since(sent) {
        // Nothing at all came back, not only no answer: a new connection may well work
        // (the next probe opens it), where this one would stay silent.
        upstream.silent_at_health_check::<C>(
            sent,
            &format!("the upstream sent nothing for {timeout:?} after a heartbeat: its connection was given up"),
        );
    }
    false
}
