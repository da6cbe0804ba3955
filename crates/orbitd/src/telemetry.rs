//! Metrics over HTTP (`[telemetry] metrics_listen`, issue 12): the Prometheus text format at
//! `/metrics`, from `metrics-exporter-prometheus` (the exporter of the `metrics` facade the
//! crates record through), served by its own listener. Plain HTTP: bound to loopback, or
//! elsewhere only with `metrics_allow` naming the scrapers' networks (config refuses it
//! otherwise).

use std::net::SocketAddr;

use anyhow::{Context, Result};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::Deserialize;
use tracing::info;

/// `[telemetry]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Where Prometheus scrapes `/metrics`; none: no metrics.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Networks allowed to scrape (CIDR, e.g. "10.0.0.0/8"); empty: anyone who reaches the
    /// listener, which must then be on loopback.
    #[serde(default)]
    pub metrics_allow: Vec<String>,
    /// Where spans go (an OTLP/gRPC collector, `http://host:4317`); none: no traces.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The share of traces started here that are recorded, from 0 to 1 (a trace another
    /// process started is recorded if it was there). Lower it on a busy system: 0.01 at
    /// thousands of calls a second.
    #[serde(default = "all")]
    pub trace_sampling: f64,
}

fn all() -> f64 {
    1.0
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            metrics_listen: None,
            metrics_allow: vec![],
            otlp_endpoint: None,
            trace_sampling: all(),
        }
    }
}

impl TelemetrySettings {
    /// The rules a config must keep; the error names the field.
    pub fn check(&self) -> Result<()> {
        for net in &self.metrics_allow {
            if !is_cidr(net) {
                anyhow::bail!("telemetry metrics_allow {net:?}: a network, e.g. \"10.0.0.0/8\"");
            }
        }
        if let Some(e) = &self.otlp_endpoint {
            // The exporter speaks plaintext gRPC: a collector beside the process (the node's
            // agent, a sidecar), not across networks.
            let ok = e
                .strip_prefix("http://")
                .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
            if !ok {
                anyhow::bail!(
                    "telemetry otlp_endpoint {e:?}: an OTLP/gRPC collector as http://host:port"
                );
            }
        }
        if !(0.0..=1.0).contains(&self.trace_sampling) {
            anyhow::bail!(
                "telemetry trace_sampling {}: from 0 to 1",
                self.trace_sampling
            );
        }
        if let Some(l) = self.metrics_listen {
            if !l.ip().is_loopback() && self.metrics_allow.is_empty() {
                anyhow::bail!(
                    "telemetry metrics_listen {l} is not a loopback address: set metrics_allow to the scrapers' networks"
                );
            }
        }
        Ok(())
    }
}

/// A network with its prefix length ("10.0.0.0/8", "10.0.0.5/32"): the exporter takes
/// nothing else.
fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let max = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => 32,
        Ok(std::net::IpAddr::V6(_)) => 128,
        Err(_) => return false,
    };
    bits.parse::<u8>().is_ok_and(|b| b <= max)
}

/// Histogram buckets (seconds): commit and feature latencies run from a millisecond to seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// Serve metrics at `listen`, letting `allow` in (everyone if empty). Within a tokio runtime.
pub fn serve(listen: SocketAddr, allow: &[String]) -> Result<()> {
    let mut b = PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets(&BUCKETS)
        .context("metrics buckets")?;
    for net in allow {
        b = b
            .add_allowed_address(net)
            .with_context(|| format!("telemetry metrics_allow {net:?}"))?;
    }
    b.install()
        .with_context(|| format!("serving metrics on {listen}"))?;
    info!(%listen, "metrics at http://{listen}/metrics");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_off_loopback_need_the_scrapers_networks() {
        let t = |listen: &str, allow: &[&str]| TelemetrySettings {
            metrics_listen: Some(listen.parse().unwrap()),
            metrics_allow: allow.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(t("127.0.0.1:9464", &[]).check().is_ok());
        let e = t("0.0.0.0:9464", &[]).check().unwrap_err().to_string();
        assert!(e.contains("set metrics_allow"), "{e}");
        assert!(t("0.0.0.0:9464", &["10.0.0.0/8", "fd00::/8"])
            .check()
            .is_ok());
        for bad in ["10.0.0.0/33", "10.0.0.5", "fd00::/129", "nowhere/8"] {
            let e = t("0.0.0.0:9464", &[bad]).check().unwrap_err().to_string();
            assert!(e.contains(&format!("metrics_allow {bad:?}")), "{e}");
        }
    }

    #[test]
    fn traces_go_to_a_plain_collector_at_a_sampled_share() {
        let t = |endpoint: &str, ratio: f64| TelemetrySettings {
            otlp_endpoint: Some(endpoint.to_string()),
            trace_sampling: ratio,
            ..Default::default()
        };
        assert!(t("http://127.0.0.1:4317", 0.01).check().is_ok());
        assert!(t("http://otel-collector.observability:4317", 1.0)
            .check()
            .is_ok());
        for bad in [
            "127.0.0.1:4317",
            "https://c:4317",
            "http://",
            "http://a b:4317",
        ] {
            let e = t(bad, 1.0).check().unwrap_err().to_string();
            assert!(e.contains("otlp_endpoint"), "{bad}: {e}");
        }
        for bad in [-0.1, 1.5, f64::NAN] {
            let e = t("http://c:4317", bad).check().unwrap_err().to_string();
            assert!(e.contains("trace_sampling"), "{bad}: {e}");
        }
        assert_eq!(TelemetrySettings::default().trace_sampling, 1.0);
    }
}
