//! One configuration as the proxy thread runs it: every listener's route table and the
//! clusters its routes send to. A reload builds a new one and swaps it in; connections
//! in progress finish on the one they started with.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::cluster::{Cluster, TokenBucket};
use super::config::{ClusterConfig, MeshConfig};
use super::router::{self, RouteTable, WeightedCluster};
use super::stats::RouteStats;

pub struct Route {
    pub spec: router::Route,
    pub timeout: Duration,
    pub retries: u32,
    pub bucket: Option<Rc<TokenBucket>>,
    pub stats: Arc<RouteStats>,
    /// Each weighted cluster's running score (see `router::Route::pick_cluster`).
    scores: RefCell<Vec<i64>>,
}

impl Route {
    pub fn pick_cluster(&self) -> usize {
        self.spec.pick_cluster(&mut self.scores.borrow_mut())
    }
}

pub struct ListenerRoutes {
    name: String,
    pub table: RouteTable,
    pub routes: Vec<Route>,
}

pub struct Routing {
    pub listeners: Vec<ListenerRoutes>,
    pub clusters: Vec<Rc<Cluster>>,
    /// What a cluster made for one address (InvokeService's `rpc_target_address`) starts from.
    pub direct: ClusterConfig,
}

impl Routing {
    /// Builds `config`, keeping the clusters of `previous` whose configuration did not
    /// change (with their connections), the counts of a cluster whose settings did (see
    /// `Cluster::replacing`: its statistics, and the requests in flight its breaker and
    /// balancing count), the statistics of routes of the same name, and
    /// their rate limits' buckets where the limit is the same (a reload, which any touch
    /// of the file makes, must not let a full burst through again).
    pub fn build(
        config: &MeshConfig,
        previous: Option<&Routing>,
        route_stats: &mut HashMap<(String, String), Arc<RouteStats>>,
    ) -> Routing {
        let clusters: Vec<Rc<Cluster>> = config
            .clusters
            .iter()
            .map(|c| {
                let kept = previous.and_then(|p| p.clusters.iter().find(|old| old.config == *c));
                kept.cloned().unwrap_or_else(|| {
                    let same_name = previous
                        .and_then(|p| p.clusters.iter().find(|old| old.config.name == c.name));
                    Rc::new(match same_name {
                        Some(old) => Cluster::replacing(c.clone(), old),
                        None => Cluster::new(c.clone()),
                    })
                })
            })
            .collect();
        let cluster_index = |name: &str| {
            config
                .clusters
                .iter()
                .position(|c| c.name == name)
                .expect("routes name known clusters (checked in Python)")
        };
        let listeners = config
            .listeners
            .iter()
            .map(|l| {
                let routes: Vec<Route> = l
                    .routes
                    .iter()
                    .map(|r| Route {
                        spec: router::Route {
                            name: r.name.clone(),
                            matches: r.matches(),
                            clusters: r
                                .clusters
                                .iter()
                                .map(|(name, weight)| WeightedCluster {
                                    cluster: cluster_index(name),
                                    weight: *weight,
                                })
                                .collect(),
                        },
                        timeout: Duration::from_millis(r.timeout_ms),
                        retries: r.retries,
                        bucket: r.rate_limit.map(|(rate, burst)| {
                            previous
                                .and_then(|p| p.bucket(&l.name, &r.name))
                                .filter(|kept| kept.limits_as(rate, burst))
                                .unwrap_or_else(|| Rc::new(TokenBucket::new(rate, burst)))
                        }),
                        stats: route_stats
                            .entry((l.name.clone(), r.name.clone()))
                            .or_default()
                            .clone(),
                        scores: RefCell::new(vec![0; r.clusters.len()]),
                    })
                    .collect();
                ListenerRoutes {
                    name: l.name.clone(),
                    table: RouteTable::new(routes.iter().map(|r| r.spec.clone()).collect()),
                    routes,
                }
            })
            .collect();
        // Counts of routes the configuration no longer has go: a generator that puts a
        // version in route names would otherwise add a set of histograms at every reload.
        route_stats.retain(|(listener, route), _| {
            config
                .listeners
                .iter()
                .any(|l| l.name == *listener && l.routes.iter().any(|r| r.name == *route))
        });
        Routing {
            listeners,
            clusters,
            direct: config.direct.clone(),
        }
    }

    fn bucket(&self, listener: &str, route: &str) -> Option<Rc<TokenBucket>> {
        self.listeners
            .iter()
            .find(|l| l.name == listener)?
            .routes
            .iter()
            .find(|r| r.spec.name == route)?
            .bucket
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::config::tests::config;
    use crate::mesh::config::Protocol;
    use crate::mesh::stats::Outcome;

    #[test]
    fn a_cluster_whose_settings_change_goes_on_from_its_counts() {
        let first = config(Protocol::Bolt, vec![("up".into(), 1)], None);
        let routing = Routing::build(&first, None, &mut HashMap::new());
        let old = &routing.clusters[0].stats;
        old.requests.count(Outcome::Answered);
        old.requests.observe_us(120);
        old.ejections.incr();
        let mut changed = first.clone();
        changed.clusters[0].hosts.push("127.0.0.1:2".into());
        let next = Routing::build(&changed, Some(&routing), &mut HashMap::new());
        assert!(
            !Rc::ptr_eq(&next.clusters[0], &routing.clusters[0]),
            "rebuilt"
        );
        let new = &next.clusters[0].stats;
        assert_eq!(new.requests.outcomes[Outcome::Answered as usize].get(), 1);
        assert_eq!(new.requests.latency[2].get(), 1); // 100 < 120 <= 250
        assert_eq!(new.requests.latency_sum_us.get(), 120);
        assert_eq!((new.ejections.get(), new.hosts.len()), (1, 2));
        // unchanged: the same cluster, counts and all
        let again = Routing::build(&changed, Some(&next), &mut HashMap::new());
        assert!(Rc::ptr_eq(&again.clusters[0], &next.clusters[0]));
    }

    #[test]
    fn a_changed_cluster_s_breaker_counts_the_requests_its_predecessor_still_has_in_flight() {
        let mut first = config(Protocol::Bolt, vec![("up".into(), 1)], None);
        first.clusters[0].max_requests = 1;
        first.clusters[0].max_pending = 1;
        first.clusters[0].hosts.push("127.0.0.1:2".into());
        let routing = Routing::build(&first, None, &mut HashMap::new());
        let old = routing.clusters[0].clone();
        old.in_flight.set(1); // a request to a slow upstream, held
        old.pending.set(1);
        old.hosts[1].active.set(1);
        let mut changed = first.clone();
        changed.clusters[0].connect_timeout_ms += 1;
        changed.clusters[0].hosts.remove(0);
        let next = Routing::build(&changed, Some(&routing), &mut HashMap::new());
        let new = &next.clusters[0];
        assert!(!Rc::ptr_eq(new, &old), "rebuilt");
        assert!(
            !new.admits(),
            "max_requests counts the old cluster's request"
        );
        assert!(!new.admits_pending());
        assert_eq!(
            new.hosts[0].active.get(),
            1,
            "the same address's load goes on"
        );
        old.in_flight.set(0); // it ends, on the cluster it was sent through
        assert!(new.admits());
    }

    #[test]
    fn a_reload_drops_the_counts_of_routes_gone() {
        let mut stats = HashMap::new();
        let first = config(Protocol::Bolt, vec![("up".into(), 1)], None);
        let routing = Routing::build(&first, None, &mut stats);
        let mut renamed = first.clone();
        renamed.listeners[0].routes[0].name = "all-v2".into();
        Routing::build(&renamed, Some(&routing), &mut stats);
        let kept: Vec<_> = stats.keys().cloned().collect();
        assert_eq!(kept, vec![("in".to_owned(), "all-v2".to_owned())]);
    }
}
