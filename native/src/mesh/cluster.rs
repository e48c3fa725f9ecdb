//! Upstream clusters: hosts, balancing, outlier ejection, circuit breaking, and the
//! token bucket a route's rate limit uses. Single-threaded (the proxy's thread).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::config::{Balancing, ClusterConfig};
use super::stats::ClusterStats;
use super::upstream::Upstream;

/// One upstream address and what the proxy knows of it.
pub struct Host {
    pub address: String,
    /// Its multiplexed connection, once made.
    pub connection: RefCell<Option<Rc<Upstream>>>,
    /// Set while a connection is being made: the requests that need it wait for that one.
    pub dialing: Cell<bool>,
    /// The requests waiting for the attempt under way, told in the order they came.
    pub waiting: RefCell<Vec<tokio::sync::oneshot::Sender<()>>>,
    /// Why the last attempt failed, for the requests that waited for it.
    pub last_failure: RefCell<String>,
    /// Requests sent and not yet answered (least-request balancing); shared with the host
    /// of the same address in the cluster this one replaced, whose requests load it too.
    pub active: Rc<Cell<usize>>,
    consecutive_failures: Cell<u32>,
    /// Out of balancing after failures (outlier ejection), or because it is shutting down.
    ejected_until: Cell<Option<Instant>>,
    draining_until: Cell<Option<Instant>>,
    /// Set by active health checks; a host starts healthy.
    pub healthy: Cell<bool>,
}

impl Drop for Host {
    /// A host leaves with its cluster (a reload dropped it and its last request ended):
    /// its connection closes once what is queued on it is written.
    fn drop(&mut self) {
        if let Some(upstream) = self.connection.get_mut().take() {
            upstream.outbox.close();
        }
    }
}

impl Host {
    fn new(address: String) -> Self {
        Host {
            address,
            connection: RefCell::new(None),
            dialing: Cell::new(false),
            waiting: RefCell::new(Vec::new()),
            last_failure: RefCell::new(String::new()),
            active: Rc::new(Cell::new(0)),
            consecutive_failures: Cell::new(0),
            ejected_until: Cell::new(None),
            draining_until: Cell::new(None),
            healthy: Cell::new(true),
        }
    }

    /// Its load for least-request balancing: requests sent and not answered, and those
    /// waiting for its connection to be made (a host being dialled is not idle: counted
    /// idle, it drew nearly every request while its attempt lasted).
    fn load(&self) -> usize {
        self.active.get() + self.waiting.borrow().len()
    }

    fn available(&self, now: Instant) -> bool {
        for out in [&self.ejected_until, &self.draining_until] {
            if out.get().is_some_and(|until| until <= now) {
                out.set(None);
            }
        }
        self.healthy.get()
            && self.ejected_until.get().is_none()
            && self.draining_until.get().is_none()
    }
}

/// A named set of hosts one route (or InvokeService target) sends to.
pub struct Cluster {
    pub config: ClusterConfig,
    pub hosts: Vec<Rc<Host>>,
    next: Cell<usize>,
    /// Requests in flight on the whole cluster (circuit breaking). Shared with the cluster
    /// of the same name a reload replaced: its requests still in flight count against the
    /// breaker until they end, as MOSN keeps a cluster's resource counts across an update.
    pub in_flight: Rc<Cell<usize>>,
    /// Requests waiting for a connection to be made (shared likewise).
    pub pending: Rc<Cell<usize>>,
    pub stats: std::sync::Arc<ClusterStats>,
}

impl Cluster {
    pub fn new(config: ClusterConfig) -> Self {
        let stats = std::sync::Arc::new(ClusterStats::for_hosts(config.hosts.len()));
        let hosts = config
            .hosts
            .iter()
            .map(|a| Rc::new(Host::new(a.clone())))
            .collect();
        Cluster {
            config,
            hosts,
            next: Cell::new(0),
            in_flight: Rc::new(Cell::new(0)),
            pending: Rc::new(Cell::new(0)),
            stats,
        }
    }

    /// `config` built to replace `old` (same name, other settings): it goes on from `old`'s
    /// counts of requests in flight and waiting, and of each host's load by address.
    pub fn replacing(config: ClusterConfig, old: &Cluster) -> Self {
        let mut cluster = Cluster::new(config);
        cluster.in_flight = old.in_flight.clone();
        cluster.pending = old.pending.clone();
        for host in &mut cluster.hosts {
            if let Some(before) = old.hosts.iter().find(|h| h.address == host.address) {
                Rc::get_mut(host).expect("not shared yet").active = before.active.clone();
            }
        }
        cluster.stats.carry(&old.stats);
        cluster
    }

    /// A host to send to, skipping `tried` ones: round robin or least request among the
    /// available hosts; when none is available, any untried host (a proxy that refuses
    /// everything because every host was ejected helps nobody).
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let now = Instant::now();
        let n = self.hosts.len();
        let start = self.next.get();
        self.next.set(start.wrapping_add(1));
        let usable = |i: usize, strict: bool| {
            !tried.contains(&i) && (!strict || self.hosts[i].available(now))
        };
        // Available hosts first; when none is, any untried one.
        for strict in [true, false] {
            let count = (0..n).filter(|&i| usable(i, strict)).count();
            if count == 0 {
                continue;
            }
            let candidates = (0..n).filter(|&i| usable(i, strict));
            return match self.config.balancing {
                Balancing::RoundRobin => candidates.clone().nth(start % count),
                // Ties go round robin, so equal hosts share the load.
                Balancing::LeastRequest => candidates
                    .clone()
                    .cycle()
                    .skip(start % count)
                    .take(count)
                    .min_by_key(|&i| self.hosts[i].load()),
            };
        }
        None
    }

    /// Whether one more request may go out (the breaker's `max_requests`).
    pub fn admits(&self) -> bool {
        self.in_flight.get() < self.config.max_requests
    }

    /// Whether one more request may wait for a connection (`max_pending`).
    pub fn admits_pending(&self) -> bool {
        self.pending.get() < self.config.max_pending
    }

    pub fn succeeded(&self, host: usize) {
        self.hosts[host].consecutive_failures.set(0);
    }

    /// Counts a failure of `host` (refused connection, closed or timed-out request);
    /// enough in a row eject it for `ejection_ms`.
    pub fn failed(&self, host: usize) {
        let h = &self.hosts[host];
        let failures = h.consecutive_failures.get() + 1;
        h.consecutive_failures.set(failures);
        let limit = self.config.outlier_consecutive_failures;
        if limit > 0 && failures >= limit {
            h.consecutive_failures.set(0);
            if !self.may_eject_one_more(host) {
                self.stats.ejections_capped.incr();
                return;
            }
            let until = Instant::now() + Duration::from_millis(self.config.ejection_ms);
            h.ejected_until.set(Some(until));
            self.stats.hosts[host].eject_for(self.config.ejection_ms);
            self.stats.ejections.incr();
        }
    }

    /// Whether `host` may be ejected under `max_ejection_percent` (at least one may) beside
    /// the others ejected; hosts out because they are shutting down do not count. One
    /// ejected already and failing still (every host out: it takes requests) is ejected
    /// again, from now: it is no further host, and no cap was met.
    fn may_eject_one_more(&self, host: usize) -> bool {
        let now = Instant::now();
        let ejected = self
            .hosts
            .iter()
            .enumerate()
            .filter(|&(i, h)| i != host && h.ejected_until.get().is_some_and(|until| until > now))
            .count();
        let allowed = (self.hosts.len() * self.config.max_ejection_percent as usize / 100).max(1);
        ejected < allowed
    }

    /// Leaves `host` out of balancing for `ejection_ms`: it said it is shutting down.
    /// Not an ejection for failures: nothing failed, and the count is not touched.
    pub fn drain(&self, host: usize) {
        let until = Instant::now() + Duration::from_millis(self.config.ejection_ms);
        self.hosts[host].draining_until.set(Some(until));
        self.stats.hosts[host].eject_for(self.config.ejection_ms);
    }

    /// Records an active health check's verdict on `host`.
    pub fn set_healthy(&self, host: usize, healthy: bool) {
        self.hosts[host].healthy.set(healthy);
        self.stats.hosts[host].healthy.store(healthy, Relaxed);
    }

    #[cfg(test)]
    pub fn is_ejected(&self, host: usize) -> bool {
        self.hosts[host]
            .ejected_until
            .get()
            .is_some_and(|until| until > Instant::now())
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: Cell<f64>,
    last: Cell<Instant>,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: Cell::new(burst),
            last: Cell::new(Instant::now()),
        }
    }

    /// Whether it limits at `rate` with `burst`: a reload keeps such a bucket, tokens and all.
    pub fn limits_as(&self, rate: f64, burst: f64) -> bool {
        self.rate == rate && self.burst == burst
    }

    pub fn take(&self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last.get()).as_secs_f64();
        self.last.set(now);
        let tokens = (self.tokens.get() + elapsed * self.rate).min(self.burst);
        if tokens >= 1.0 {
            self.tokens.set(tokens - 1.0);
            true
        } else {
            self.tokens.set(tokens);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(balancing: Balancing, hosts: usize) -> Cluster {
        let config = ClusterConfig {
            name: "c".into(),
            hosts: (0..hosts)
                .map(|i| format!("127.0.0.1:{}", 1000 + i))
                .collect(),
            balancing,
            outlier_consecutive_failures: 2,
            ejection_ms: 60_000,
            ..ClusterConfig::default()
        };
        Cluster::new(config)
    }

    #[test]
    fn round_robin_visits_every_host() {
        let c = cluster(Balancing::RoundRobin, 3);
        let picks: Vec<usize> = (0..6).map(|_| c.pick(&[]).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(c.pick(&[0, 1, 2]), None);
        assert_eq!(c.pick(&[0, 2]), Some(1));
    }

    #[test]
    fn least_request_prefers_the_idle_host() {
        let c = cluster(Balancing::LeastRequest, 3);
        c.hosts[0].active.set(5);
        c.hosts[1].active.set(1);
        c.hosts[2].active.set(3);
        for _ in 0..4 {
            assert_eq!(c.pick(&[]), Some(1));
        }
    }

    /// A host whose connection is being made has requests waiting on it: before, counted
    /// idle, it drew every new request for as long as the attempt lasted.
    #[test]
    fn least_request_counts_requests_waiting_for_a_connection() {
        let c = cluster(Balancing::LeastRequest, 2);
        c.hosts[1].active.set(1);
        let mut held = Vec::new();
        for _ in 0..3 {
            let (told, ended) = tokio::sync::oneshot::channel();
            c.hosts[0].waiting.borrow_mut().push(told);
            held.push(ended);
        }
        for _ in 0..4 {
            assert_eq!(c.pick(&[]), Some(1));
        }
        c.hosts[1].active.set(4);
        assert_eq!(c.pick(&[]), Some(0));
    }

    /// With every host out, an ejected one still takes requests; failing on, it is ejected
    /// again from now, and no cap is said to be met (there was none to meet).
    #[test]
    fn an_ejected_host_failing_again_is_ejected_again_not_capped() {
        let c = cluster(Balancing::RoundRobin, 1);
        c.failed(0);
        c.failed(0);
        assert!(c.is_ejected(0));
        let first = c.hosts[0].ejected_until.get().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        c.failed(0);
        c.failed(0);
        assert_eq!(c.stats.ejections_capped.get(), 0, "no cap was met");
        assert_eq!(c.stats.ejections.get(), 2);
        assert!(
            c.hosts[0].ejected_until.get().unwrap() > first,
            "ejected again from now"
        );
    }

    #[test]
    fn consecutive_failures_eject_a_host() {
        let c = cluster(Balancing::RoundRobin, 2);
        c.failed(0);
        c.succeeded(0);
        c.failed(0);
        assert!(!c.is_ejected(0), "a success in between resets the count");
        c.failed(0);
        assert!(c.is_ejected(0));
        assert_eq!(c.stats.ejections.get(), 1);
        for _ in 0..4 {
            assert_eq!(c.pick(&[]), Some(1));
        }
        // With every host out, the proxy still tries one rather than refusing all.
        c.failed(1);
        c.failed(1);
        assert!(c.pick(&[]).is_some());
    }

    #[test]
    fn ejection_stops_at_max_ejection_percent() {
        let mut config = cluster(Balancing::RoundRobin, 4).config.clone();
        config.max_ejection_percent = 50;
        let c = Cluster::new(config);
        for host in 0..3 {
            c.failed(host);
            c.failed(host);
        }
        let ejected: Vec<bool> = (0..4).map(|h| c.is_ejected(h)).collect();
        assert_eq!(
            ejected,
            vec![true, true, false, false],
            "two of four at most"
        );
        assert_eq!(
            (c.stats.ejections.get(), c.stats.ejections_capped.get()),
            (2, 1)
        );
        let picks: std::collections::HashSet<usize> =
            (0..4).map(|_| c.pick(&[]).unwrap()).collect();
        assert_eq!(
            picks,
            [2, 3].into(),
            "the host not ejected still takes its share"
        );
        let drained = Cluster::new(c.config.clone());
        drained.drain(0);
        drained.drain(1);
        drained.failed(2);
        drained.failed(2);
        assert!(
            drained.is_ejected(2),
            "hosts shutting down are not ejections: they do not use the cap"
        );
        let mut one_host = cluster(Balancing::RoundRobin, 1).config.clone();
        one_host.max_ejection_percent = 0;
        let single = Cluster::new(one_host);
        single.failed(0);
        single.failed(0);
        assert!(single.is_ejected(0), "one host may always be ejected");
    }

    #[test]
    fn token_bucket_refuses_past_the_burst() {
        let bucket = TokenBucket::new(0.001, 3.0);
        assert!((0..3).all(|_| bucket.take()));
        assert!(!bucket.take());
    }

    /// The burst alone would pass a bucket that never refills: once spent, a token must come
    /// back after 1/rate, and not before.
    #[test]
    fn token_bucket_refills_at_its_rate() {
        let rate = 10.0; // a token every 100 ms
        let started = Instant::now();
        let bucket = TokenBucket::new(rate, 1.0);
        assert!(bucket.take(), "the burst of one");
        assert!(!bucket.take(), "spent");
        // Polled: refused takes must not use up what has refilled meanwhile.
        while !bucket.take() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no token came back in 5 s at {rate} a second"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let waited = started.elapsed().as_secs_f64();
        // A little under 1/rate for the rounding of the summed refills.
        assert!(
            waited >= 0.99 / rate,
            "a token came back after {waited:.4} s, before 1/rate"
        );
    }
}
