//! Prometheus metrics. Labels are bounded: the route pattern (never the raw path, which holds
//! user keys), a fixed set of methods, and the status code.

use std::time::Duration;

use deadpool_postgres::Pool;
use http::{Method, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapLabel {
    cap: &'static str,
}

/// The proxy's metrics and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabel, Histogram>,
    pool_max: Gauge,
    pool_size: Gauge,
    pool_available: Gauge,
    pool_waiting: Gauge,
    refused: Family<CapLabel, Counter>,
    batch: BatchMetrics,
}

/// The counters of group commit ([`crate::batch`]); clones share their values.
#[derive(Clone, Debug, Default)]
pub struct BatchMetrics {
    /// Transactions that ran two or more calls together.
    pub batches: Counter,
    /// Calls in those transactions.
    pub batched_requests: Counter,
    /// Batches rolled back because one of their calls failed; their calls ran one by one.
    pub fallbacks: Counter,
    /// Calls waiting for their token's call in flight, or for a free slot.
    pub queued: Gauge,
    /// 1 while calls may share a transaction; 0 with ECHOVALUE_BATCH_MAX=1, or while the
    /// database says no (a distributed install, `echovalue.group_commit()`).
    pub group_commit: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("echovalue_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        // 0.5 ms to ~8 s: a request is one SQL call, usually around a millisecond.
        let latency = Family::<RouteLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0005, 2.0, 15))) as fn() -> Histogram,
        );
        let pool_max = Gauge::default();
        let pool_size = Gauge::default();
        let pool_available = Gauge::default();
        let pool_waiting = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request head to response, by route",
            latency.clone(),
        );
        registry.register(
            "db_pool_max_size",
            "Maximum database connections",
            pool_max.clone(),
        );
        registry.register(
            "db_pool_size",
            "Open database connections",
            pool_size.clone(),
        );
        registry.register(
            "db_pool_available",
            "Idle database connections",
            pool_available.clone(),
        );
        registry.register(
            "db_pool_waiting",
            "Requests waiting for a database connection",
            pool_waiting.clone(),
        );
        let refused = Family::<CapLabel, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at accept, by the cap they hit (total or address)",
            refused.clone(),
        );
        let batch = BatchMetrics::default();
        registry.register(
            "batches",
            "Transactions that ran queued calls together",
            batch.batches.clone(),
        );
        registry.register(
            "batched_requests",
            "Requests answered from a batch transaction",
            batch.batched_requests.clone(),
        );
        registry.register(
            "batch_fallbacks",
            "Batches rolled back because a call failed, then run one call at a time",
            batch.fallbacks.clone(),
        );
        registry.register(
            "batch_queued",
            "Requests waiting for their token's call in flight or for a free slot",
            batch.queued.clone(),
        );
        registry.register(
            "group_commit",
            "1 while calls may share a transaction; 0 when batching is off or the database says no",
            batch.group_commit.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            pool_max,
            pool_size,
            pool_available,
            pool_waiting,
            refused,
            batch,
        }
    }

    /// Counts a connection closed at accept.
    pub fn connection_refused(&self, cap: echovalue_common::admission::Refused) {
        let cap = match cap {
            echovalue_common::admission::Refused::Total => "total",
            echovalue_common::admission::Refused::Address => "address",
        };
        self.refused.get_or_create(&CapLabel { cap }).inc();
    }

    /// The batching counters, for [`crate::batch::Batcher`].
    pub fn batch(&self) -> BatchMetrics {
        self.batch.clone()
    }

    /// Records one finished request.
    pub fn observe(
        &self,
        route: &'static str,
        method: &Method,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let labels = RequestLabels {
            route,
            method: method_label(method),
            status: status.as_u16(),
        };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&RouteLabel { route })
            .observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition, with the pool gauges read at scrape time.
    pub fn render(&self, pool: &Pool) -> Result<String, std::fmt::Error> {
        let status = pool.status();
        self.pool_max.set(to_i64(status.max_size));
        self.pool_size.set(to_i64(status.size));
        self.pool_available.set(to_i64(status.available));
        self.pool_waiting.set(to_i64(status.waiting));
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[tokio::test]
    async fn renders_requests_latency_and_pool() {
        let m = Metrics::new();
        let method = Method::from_bytes(b"BREW").unwrap();
        m.observe(
            "/kv/{group}/{key}",
            &Method::GET,
            StatusCode::OK,
            Duration::from_millis(2),
        );
        m.observe(
            "/kv/{group}/{key}",
            &Method::GET,
            StatusCode::OK,
            Duration::from_millis(3),
        );
        m.observe(
            "unmatched",
            &method,
            StatusCode::NOT_FOUND,
            Duration::from_millis(1),
        );
        let pool = crate::db::pool(&Config::default()).unwrap();
        let text = m.render(&pool).unwrap();
        assert!(text.contains(
            r#"echovalue_proxy_http_requests_total{route="/kv/{group}/{key}",method="GET",status="200"} 2"#
        ), "{text}");
        assert!(text.contains(r#"method="other",status="404"} 1"#), "{text}");
        assert!(
            text.contains("echovalue_proxy_http_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("echovalue_proxy_db_pool_max_size 16"),
            "{text}"
        );
        assert!(text.contains("echovalue_proxy_db_pool_waiting 0"), "{text}");
        m.batch().batches.inc();
        m.batch().batched_requests.inc_by(3);
        let text = m.render(&pool).unwrap();
        assert!(text.contains("echovalue_proxy_batches_total 1\n"), "{text}");
        assert!(
            text.contains("echovalue_proxy_batched_requests_total 3\n"),
            "{text}"
        );
        assert!(text.contains("echovalue_proxy_batch_queued 0\n"), "{text}");
    }
}
