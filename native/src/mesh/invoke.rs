//! InvokeService calls over the mesh: frames handed from the event loop to the mesh
//! thread, sent to a configured cluster or straight to one address, and their outcomes
//! handed back.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::config::{ClusterConfig, Protocol};
use super::listener::{dispatch, Sending};
use super::reply::{InvokeReply, ReplyTo};
use super::routing::Routing;
use super::stats::{Outcome, RouteStats};
use super::thread::{spawn_owing, Registry};
use crate::bolt::Bolt;
use crate::codec::{Codec, FrameKind, Refusal};
use crate::dubbo::Dubbo;
use crate::wake_queue::locked;

/// Invocations handed from the event loop to the mesh thread. Only the first queued while
/// the queue is empty wakes the thread (a wake-up is a system call and a context switch),
/// which then takes the whole batch.
#[derive(Default)]
pub(super) struct Invocations {
    queue: Mutex<Queue>,
    pub(super) ready: tokio::sync::Notify,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Invocation>,
    /// Why the mesh thread ended, once it has: nothing is queued from then on.
    ended: Option<String>,
}

impl Invocations {
    /// Queues `invocation` for the mesh thread; once that has ended, says why instead.
    pub(super) fn push(&self, invocation: Invocation) -> Result<(), String> {
        let mut queue = locked(&self.queue);
        if let Some(why) = &queue.ended {
            invocation.reply.forget(); // its caller hears of it from this error
            return Err(why.clone());
        }
        let first = queue.waiting.is_empty();
        queue.waiting.push(invocation);
        drop(queue);
        if first {
            self.ready.notify_one();
        }
        Ok(())
    }

    pub(super) fn take(&self) -> Vec<Invocation> {
        std::mem::take(&mut locked(&self.queue).waiting)
    }

    /// The mesh thread has ended (`why`): the invocations still queued are refused as
    /// unavailable, and any queued later are refused at once.
    pub(super) fn end(&self, why: &str) {
        let waiting = {
            let mut queue = locked(&self.queue);
            queue.ended = Some(why.to_string());
            std::mem::take(&mut queue.waiting)
        };
        for invocation in waiting {
            invocation
                .reply
                .settle(Err((Refusal::Unavailable, why.to_string())));
        }
    }

    /// Why the mesh thread ended, once it has.
    pub(super) fn ended(&self) -> Option<String> {
        locked(&self.queue).ended.clone()
    }
}

/// An InvokeService call for the bolt or dubbo channel: a whole request frame for a
/// cluster of the configuration, or for one address (`rpc_target_address`).
pub(super) struct Invocation {
    pub(super) reply: Arc<InvokeReply>,
    pub(super) protocol: Protocol,
    pub(super) cluster: Option<String>,
    pub(super) address: Option<String>,
    pub(super) frame: Vec<u8>,
    pub(super) timeout: Duration,
    pub(super) retries: u32,
}

pub(super) fn start_invocation(
    invocation: Invocation,
    routing: &Routing,
    direct: &DirectClusters,
    invoke_stats: &Arc<RouteStats>,
    registry: &Mutex<Registry>,
) {
    let cluster = match (&invocation.cluster, &invocation.address) {
        (Some(name), _) => routing
            .clusters
            .iter()
            .find(|c| &c.config.name == name && c.config.protocol == invocation.protocol)
            .cloned(),
        (None, Some(address)) => {
            let (cluster, made) =
                direct_cluster(direct, &routing.direct, invocation.protocol, address);
            if made {
                publish_direct(registry, direct);
            }
            Some(cluster)
        }
        (None, None) => None,
    };
    let Some(cluster) = cluster else {
        let name = invocation.cluster.clone().unwrap_or_default();
        invocation.reply.settle(Err((
            Refusal::Unavailable,
            format!(
                "no {} cluster named {name:?} in the mesh configuration",
                invocation.protocol.name()
            ),
        )));
        return;
    };
    let stats = invoke_stats.clone();
    match invocation.protocol {
        Protocol::Dubbo => spawn_owing(send_invocation::<Dubbo>(cluster, invocation, stats)),
        Protocol::Bolt => spawn_owing(send_invocation::<Bolt>(cluster, invocation, stats)),
    };
}

/// One-host clusters by (protocol, address), made for calls that name their address, with
/// when each was last used.
pub(super) type DirectClusters = RefCell<HashMap<(Protocol, String), (Rc<Cluster>, Instant)>>;

/// Direct clusters kept once idle: the addresses come from callers (`rpc_target_address`),
/// so without a bound every address ever named would keep a cluster and its connection.
const DIRECT_CLUSTERS_KEPT: usize = 64;

/// Shows the direct clusters kept now on `/metrics` (the set changed).
fn publish_direct(registry: &Mutex<Registry>, direct: &DirectClusters) {
    let kept = direct
        .borrow()
        .iter()
        .map(|((protocol, address), (cluster, _))| {
            (
                protocol.name().to_string(),
                address.clone(),
                cluster.stats.clone(),
            )
        })
        .collect();
    locked(registry).direct = kept;
}

/// The one-host cluster for calls that name their address (`rpc_target_address`), and
/// whether it was made now. Past `DIRECT_CLUSTERS_KEPT`, the least recently used idle one
/// (no call holds it) is dropped first, and its connection closes.
pub(super) fn direct_cluster(
    direct: &DirectClusters,
    template: &ClusterConfig,
    protocol: Protocol,
    address: &str,
) -> (Rc<Cluster>, bool) {
    let mut map = direct.borrow_mut();
    let key = (protocol, address.to_string());
    let now = Instant::now();
    if let Some((cluster, used)) = map.get_mut(&key) {
        *used = now;
        return (cluster.clone(), false);
    }
    if map.len() >= DIRECT_CLUSTERS_KEPT {
        let idle = map
            .iter()
            .filter(|(_, (cluster, _))| Rc::strong_count(cluster) == 1)
            .min_by_key(|(_, (_, used))| *used)
            .map(|(key, _)| key.clone());
        if let Some(idle) = idle {
            map.remove(&idle);
        }
    }
    let cluster = Rc::new(Cluster::new(ClusterConfig {
        name: address.to_string(),
        protocol,
        hosts: vec![address.to_string()],
        ..template.clone()
    }));
    map.insert(key, (cluster.clone(), now));
    (cluster, true)
}

async fn send_invocation<C: Codec>(
    cluster: Rc<Cluster>,
    invocation: Invocation,
    stats: Arc<RouteStats>,
) {
    let reply = invocation.reply;
    if reply.given_up() {
        // its caller left while it was queued: nothing goes out
        stats.count(Outcome::Cancelled);
        cluster.stats.requests.count(Outcome::Cancelled);
        return;
    }
    let fail = |refusal, why: String| reply.settle(Err((refusal, why)));
    let mut frame = invocation.frame;
    let head = match C::head(&frame) {
        Ok(head) if matches!(head.kind, FrameKind::Request | FrameKind::Oneway) => head,
        Ok(_) => return fail(Refusal::BadRequest, "not a request frame".into()),
        Err(e) => return fail(Refusal::BadRequest, e.to_string()),
    };
    let oneway = head.kind == FrameKind::Oneway;
    let answer_to = (!oneway).then(|| ReplyTo::Invoke(reply.clone()));
    let sending = Sending {
        timeout: invocation.timeout,
        retries: invocation.retries,
        stats: &stats,
    };
    match dispatch::<C>(&cluster, &mut frame, head, answer_to, sending).await {
        Err((refusal, why)) => fail(refusal, why),
        // Nothing will answer a oneway request: it is done once handed to a connection.
        Ok(()) if oneway => reply.settle(Ok(Vec::new())),
        // The upstream connection holds the reply now, until the answer or its end.
        Ok(()) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cluster for `address` built from the defaults, as `direct_cluster` keeps it.
    fn made(direct: &DirectClusters, protocol: Protocol, address: &str) -> Rc<Cluster> {
        direct_cluster(direct, &ClusterConfig::default(), protocol, address).0
    }

    #[test]
    fn direct_clusters_stay_bounded_and_keep_those_in_use() {
        let direct = DirectClusters::default();
        let held = made(&direct, Protocol::Bolt, "10.0.0.1:1");
        let reused = made(&direct, Protocol::Bolt, "10.0.0.2:1");
        for i in 0..(DIRECT_CLUSTERS_KEPT * 3) {
            made(&direct, Protocol::Bolt, &format!("10.1.0.{i}:1"));
            // a recently used one survives its neighbours
            let again = made(&direct, Protocol::Bolt, "10.0.0.2:1");
            assert!(Rc::ptr_eq(&again, &reused));
        }
        let map = direct.borrow();
        assert!(map.len() <= DIRECT_CLUSTERS_KEPT, "{} kept", map.len());
        let kept = &map[&(Protocol::Bolt, "10.0.0.1:1".to_string())].0;
        assert!(
            Rc::ptr_eq(kept, &held),
            "a cluster a call holds is never dropped"
        );
    }

    #[test]
    fn a_cluster_for_an_address_is_the_template_with_the_calls_protocol_and_host() {
        let template = ClusterConfig {
            connect_timeout_ms: 1234,
            outlier_consecutive_failures: 0,
            ..ClusterConfig::default()
        };
        let made = direct_cluster(
            &DirectClusters::default(),
            &template,
            Protocol::Dubbo,
            "10.0.0.9:20880",
        )
        .0;
        assert_eq!(
            made.config,
            ClusterConfig {
                name: "10.0.0.9:20880".into(),
                protocol: Protocol::Dubbo,
                hosts: vec!["10.0.0.9:20880".into()],
                ..template
            }
        );
    }

    #[test]
    fn a_protocol_and_address_pair_is_one_cluster() {
        let direct = DirectClusters::default();
        let bolt = made(&direct, Protocol::Bolt, "127.0.0.1:1");
        assert!(Rc::ptr_eq(
            &bolt,
            &made(&direct, Protocol::Bolt, "127.0.0.1:1")
        ));
        assert!(!Rc::ptr_eq(
            &bolt,
            &made(&direct, Protocol::Dubbo, "127.0.0.1:1")
        ));
    }
}
