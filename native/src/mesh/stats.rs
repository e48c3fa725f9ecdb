//! Counters the proxy thread writes and `/metrics` reads: relaxed atomics, no locks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn incr(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn decr(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub const STATUS_SLOTS: usize = 128;

/// Upper bounds of the latency histogram's buckets, in microseconds (then +Inf).
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// How a request through a route ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered (whatever its status).
    Answered,
    Timeout,
    Unavailable,
    RateLimited,
    BreakerRefused,
    /// A oneway request handed to an upstream connection: nothing answers it.
    Sent,
    /// An InvokeService call its caller gave up on before the upstream answered.
    Cancelled,
}

pub const OUTCOMES: [(Outcome, &str); 7] = [
    (Outcome::Answered, "answered"),
    (Outcome::Timeout, "timeout"),
    (Outcome::Unavailable, "unavailable"),
    (Outcome::RateLimited, "rate_limited"),
    (Outcome::BreakerRefused, "breaker_refused"),
    (Outcome::Sent, "sent"),
    (Outcome::Cancelled, "cancelled"),
];

#[derive(Debug)]
pub struct RouteStats {
    pub outcomes: [Counter; OUTCOMES.len()],
    /// Answered requests by the upstream's status (the protocol's number; 127 and up
    /// share the last slot).
    pub statuses: [Counter; STATUS_SLOTS],
    /// Cumulative-free counts per bucket; the last is +Inf.
    pub latency: [Counter; 15],
    pub latency_sum_us: Counter,
}

impl Default for RouteStats {
    fn default() -> Self {
        RouteStats {
            outcomes: Default::default(),
            statuses: std::array::from_fn(|_| Counter::default()),
            latency: Default::default(),
            latency_sum_us: Counter::default(),
        }
    }
}

impl RouteStats {
    pub fn count(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].incr();
    }

    pub fn count_status(&self, status: u16) {
        self.statuses[(status as usize).min(STATUS_SLOTS - 1)].incr();
    }

    /// Goes on from what `earlier` counted (see `ClusterStats::carry`).
    pub fn carry(&self, earlier: &RouteStats) {
        let pairs = (self.outcomes.iter().zip(&earlier.outcomes))
            .chain(self.statuses.iter().zip(&earlier.statuses))
            .chain(self.latency.iter().zip(&earlier.latency))
            .chain([(&self.latency_sum_us, &earlier.latency_sum_us)]);
        for (now, then) in pairs {
            now.add(then.get());
        }
    }

    pub fn observe_us(&self, us: u64) {
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency[bucket].incr();
        self.latency_sum_us.add(us);
    }
}

#[derive(Debug, Default)]
pub struct HostStats {
    pub healthy: AtomicBool,
    /// Wall-clock milliseconds until which the host is ejected (0: never was).
    ejected_until_ms: AtomicU64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl HostStats {
    pub fn eject_for(&self, ms: u64) {
        self.ejected_until_ms
            .store(now_ms() + ms, Ordering::Relaxed);
    }

    pub fn is_ejected(&self) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms()
    }
}

#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Its requests by outcome, status and latency, whichever route or InvokeService
    /// target sent them.
    pub requests: RouteStats,
    pub ejections: Counter,
    /// Ejections left undone: `max_ejection_percent` of the hosts were out already.
    pub ejections_capped: Counter,
    pub breaker_refused: Counter,
    pub connect_failures: Counter,
    pub unknown_responses: Counter,
    pub hosts: Vec<HostStats>,
}

impl ClusterStats {
    pub fn for_hosts(n: usize) -> Self {
        ClusterStats {
            hosts: (0..n)
                .map(|_| HostStats {
                    healthy: AtomicBool::new(true),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Goes on from the counts of `earlier`, the same cluster before a reload changed its
    /// settings: `/metrics` counters must never go down in a running process (a scraper
    /// takes that for a restart). Health starts afresh, as the hosts' connections do.
    /// What the old cluster still counts for requests in flight on it is not carried.
    pub fn carry(&self, earlier: &ClusterStats) {
        self.requests.carry(&earlier.requests);
        let counters = [
            (&self.ejections, &earlier.ejections),
            (&self.ejections_capped, &earlier.ejections_capped),
            (&self.breaker_refused, &earlier.breaker_refused),
            (&self.connect_failures, &earlier.connect_failures),
            (&self.unknown_responses, &earlier.unknown_responses),
        ];
        for (now, then) in counters {
            now.add(then.get());
        }
    }
}

#[derive(Debug, Default)]
pub struct ListenerStats {
    pub connections: Counter,
    pub open_connections: Counter,
    pub no_route: Counter,
    pub bad_frames: Counter,
    pub heartbeats: Counter,
    pub idle_closed: Counter,
    /// Connections closed as accepted: `max_connections` were open.
    pub max_connections_closed: Counter,
    /// Connections closed holding part of a frame: the listener's partial frames passed
    /// `max_incomplete_bytes`.
    pub incomplete_closed: Counter,
    /// Connections ended whose last answers the client did not read within the linger:
    /// their writer was given up.
    pub unread_closed: Counter,
}
