//! `/metrics`, in the Prometheus text format (prometheus-client).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::outcome::FileReport;

type Labels = Vec<(String, String)>;

/// The server's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    request_seconds: Histogram,
    upload_seconds: Histogram,
    upload_bytes: Counter,
    files: Family<Labels, Counter>,
    bytes: Counter,
    sessions_open: Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("intake");
        let requests = Family::<Labels, Counter>::default();
        let request_seconds = Histogram::new(exponential_buckets(0.001, 2.5, 12));
        let upload_seconds = Histogram::new(exponential_buckets(0.001, 2.5, 14));
        let upload_bytes = Counter::default();
        let files = Family::<Labels, Counter>::default();
        let bytes = Counter::default();
        let sessions_open = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request",
            request_seconds.clone(),
        );
        registry.register(
            "upload_duration_seconds",
            "Time to receive and stage one upload",
            upload_seconds.clone(),
        );
        registry.register(
            "upload_bytes",
            "Bytes of upload bodies staged",
            upload_bytes.clone(),
        );
        registry.register("files", "Files decided, by outcome", files.clone());
        registry.register(
            "stored_bytes",
            "Bytes of content stored for finished files",
            bytes.clone(),
        );
        registry.register(
            "sessions_open",
            "Upload sessions open",
            sessions_open.clone(),
        );
        Metrics {
            registry,
            requests,
            request_seconds,
            upload_seconds,
            upload_bytes,
            files,
            bytes,
            sessions_open,
        }
    }

    pub(crate) fn request(&self, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&vec![
                ("method".to_owned(), method.to_owned()),
                ("status".to_owned(), status.to_string()),
            ])
            .inc();
        self.request_seconds.observe(seconds);
    }

    pub(crate) fn upload(&self, bytes: u64, seconds: f64) {
        self.upload_bytes.inc_by(bytes);
        self.upload_seconds.observe(seconds);
    }

    pub(crate) fn file(&self, r: &FileReport) {
        self.files
            .get_or_create(&vec![("outcome".to_owned(), r.outcome.as_str().to_owned())])
            .inc();
        if r.outcome.counts_bytes() {
            self.bytes.inc_by(r.size.unwrap_or(0));
        }
    }

    /// The text exposition, with the open sessions counted now.
    pub(crate) fn render(&self, sessions_open: i64) -> String {
        self.sessions_open.set(sessions_open);
        let mut out = String::new();
        // Writing into a String does not fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
