//! The routing table: built once per configuration, looked up once per request.
//!
//! The most specific route wins, not the first written: routes naming an exact service
//! are tried first (one hash lookup), then prefix routes longest prefix first, then
//! routes with no service condition. Within each group the configuration's order
//! decides, and a route's version and header conditions must all hold.

use std::collections::HashMap;

use crate::codec::RequestMeta;

/// What a route asks of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteMatch {
    pub service: Option<String>,
    pub service_prefix: Option<String>,
    pub version: Option<String>,
    pub headers: Vec<(String, String)>,
}

/// A cluster a route sends to, with its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedCluster {
    pub cluster: usize,
    pub weight: u32,
}

/// One route: its conditions and where its requests go.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matches: RouteMatch,
    pub clusters: Vec<WeightedCluster>,
}

impl Route {
    fn conditions_hold(&self, meta: &RequestMeta) -> bool {
        if let Some(version) = &self.matches.version {
            if &meta.version != version {
                return false;
            }
        }
        self.matches
            .headers
            .iter()
            .all(|(name, value)| meta.header(name) == Some(value.as_str()))
    }

    /// The cluster for the next request: smooth weighted round robin (nginx balances its
    /// upstreams so), weights 9:1 sending every tenth request to the second cluster, not nine
    /// in a row and then one. `scores` holds each cluster's running score, starting at zero.
    pub fn pick_cluster(&self, scores: &mut [i64]) -> usize {
        let total: i64 = self.clusters.iter().map(|c| c.weight as i64).sum();
        if total == 0 || self.clusters.len() == 1 {
            return self.clusters[0].cluster;
        }
        let mut best = 0;
        for (i, weighted) in self.clusters.iter().enumerate() {
            scores[i] += weighted.weight as i64;
            if scores[i] > scores[best] {
                best = i;
            }
        }
        scores[best] -= total;
        self.clusters[best].cluster
    }
}

/// Routes indexed for lookup.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    exact: HashMap<String, Vec<usize>>,
    /// Indices of prefix routes, longest prefix first.
    prefixed: Vec<usize>,
    fallback: Vec<usize>,
    /// The first route with no conditions at all: it takes requests whose service cannot be read.
    catch_all: Option<usize>,
    /// Whether any route matches on headers (else a request's headers are not decoded).
    needs_headers: bool,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        let mut table = RouteTable::default();
        for (index, route) in routes.iter().enumerate() {
            if let Some(service) = &route.matches.service {
                table.exact.entry(service.clone()).or_default().push(index);
            } else if route.matches.service_prefix.is_some() {
                table.prefixed.push(index);
            } else {
                table.fallback.push(index);
            }
        }
        // A stable sort keeps the configuration's order among equal lengths.
        table.prefixed.sort_by_key(|&i| {
            std::cmp::Reverse(
                routes[i]
                    .matches
                    .service_prefix
                    .as_ref()
                    .map_or(0, String::len),
            )
        });
        table.needs_headers = routes.iter().any(|r| !r.matches.headers.is_empty());
        table.catch_all = table
            .fallback
            .iter()
            .copied()
            .find(|&i| routes[i].matches == RouteMatch::default());
        table.routes = routes;
        table
    }

    pub fn needs_headers(&self) -> bool {
        self.needs_headers
    }

    #[cfg(test)]
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route for a request whose service and headers cannot be read (a Dubbo body in
    /// another serialization than Hessian2): one that asks nothing of a request, if any.
    pub fn catch_all(&self) -> Option<usize> {
        self.catch_all
    }

    /// Index of the route for `meta`, if any.
    pub fn lookup(&self, meta: &RequestMeta) -> Option<usize> {
        let holds = |&&i: &&usize| self.routes[i].conditions_hold(meta);
        if let Some(candidates) = self.exact.get(meta.service.as_str()) {
            if let Some(&i) = candidates.iter().find(holds) {
                return Some(i);
            }
        }
        let prefixed = self.prefixed.iter().find(|&&i| {
            let prefix = self.routes[i]
                .matches
                .service_prefix
                .as_deref()
                .unwrap_or("");
            meta.service.starts_with(prefix) && self.routes[i].conditions_hold(meta)
        });
        if let Some(&i) = prefixed {
            return Some(i);
        }
        self.fallback.iter().find(holds).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, matches: RouteMatch, cluster: usize) -> Route {
        Route {
            name: name.into(),
            matches,
            clusters: vec![WeightedCluster { cluster, weight: 1 }],
        }
    }

    fn meta(service: &str, version: &str, headers: &[(&str, &str)]) -> RequestMeta {
        RequestMeta {
            service: service.into(),
            version: version.into(),
            method: String::new(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn exact(service: &str) -> RouteMatch {
        RouteMatch {
            service: Some(service.into()),
            ..Default::default()
        }
    }

    fn prefix(prefix: &str) -> RouteMatch {
        RouteMatch {
            service_prefix: Some(prefix.into()),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_route_asking_nothing_catches_all() {
        let v1 = RouteMatch {
            version: Some("1.0".into()),
            ..Default::default()
        };
        let table = RouteTable::new(vec![route("v1", v1, 0), route("echo", exact("a.B"), 1)]);
        assert_eq!(table.catch_all(), None);
    }

    #[test]
    fn most_specific_route_wins() {
        let table = RouteTable::new(vec![
            route("default", RouteMatch::default(), 0),
            route("short", prefix("com."), 1),
            route("long", prefix("com.example."), 2),
            route("echo", exact("com.example.Echo"), 3),
        ]);
        let name = |m: &RequestMeta| table.lookup(m).map(|i| table.routes()[i].name.as_str());
        assert_eq!(name(&meta("com.example.Echo", "", &[])), Some("echo"));
        assert_eq!(name(&meta("com.example.Other", "", &[])), Some("long"));
        assert_eq!(name(&meta("com.other.X", "", &[])), Some("short"));
        assert_eq!(name(&meta("org.X", "", &[])), Some("default"));
        assert_eq!(
            table.catch_all().map(|i| table.routes()[i].name.as_str()),
            Some("default")
        );
        assert!(!table.needs_headers());
    }

    #[test]
    fn version_and_headers_must_hold() {
        let v1 = RouteMatch {
            version: Some("1.0".into()),
            ..exact("svc")
        };
        let canary = RouteMatch {
            headers: vec![("zone".into(), "gz".into())],
            ..exact("svc")
        };
        let table = RouteTable::new(vec![route("v1", v1, 0), route("canary", canary, 1)]);
        assert!(table.needs_headers());
        assert_eq!(table.lookup(&meta("svc", "1.0", &[])), Some(0));
        assert_eq!(
            table.lookup(&meta("svc", "2.0", &[("zone", "gz")])),
            Some(1)
        );
        assert_eq!(table.lookup(&meta("svc", "2.0", &[("zone", "sh")])), None);
        assert_eq!(table.lookup(&meta("other", "1.0", &[])), None);
    }

    /// The clusters the first `n` requests of a route with `weights` (cluster, weight) go to.
    fn picks(weights: &[(usize, u32)], n: usize) -> Vec<usize> {
        let r = Route {
            name: "w".into(),
            matches: RouteMatch::default(),
            clusters: weights
                .iter()
                .map(|&(cluster, weight)| WeightedCluster { cluster, weight })
                .collect(),
        };
        let mut scores = vec![0; weights.len()];
        (0..n).map(|_| r.pick_cluster(&mut scores)).collect()
    }

    #[test]
    fn weights_spread_requests() {
        let picks = picks(&[(7, 3), (9, 1)], 8);
        assert_eq!(picks.iter().filter(|&&c| c == 7).count(), 6);
        assert_eq!(picks.iter().filter(|&&c| c == 9).count(), 2);
    }

    #[test]
    fn a_small_weight_gets_its_share_spread_out_not_in_one_run() {
        let picks = picks(&[(1, 900), (2, 100), (3, 0)], 1000);
        // Before, the 100 went to cluster 2 in one run, after 900 in a row to cluster 1.
        for ten in picks.chunks(10) {
            assert_eq!(ten.iter().filter(|&&c| c == 2).count(), 1, "{ten:?}");
        }
        assert!(!picks.contains(&3), "weight 0 gets nothing");
    }

    #[test]
    fn ten_thousand_routes() {
        let routes = (0..10_000)
            .map(|i| route(&format!("r{i}"), exact(&format!("com.example.S{i}")), i))
            .collect();
        let table = RouteTable::new(routes);
        assert_eq!(
            table.lookup(&meta("com.example.S9999", "", &[])),
            Some(9999)
        );
        assert_eq!(table.lookup(&meta("com.example.S10000", "", &[])), None);
    }
}
