//! Prometheus metrics of a device, made from a [`Status`] at scrape time.
//!
//! Each scrape builds a fresh `prometheus-client` registry from one status snapshot
//! (taken by [`crate::control::status::collect`], which reads atomics) and encodes it.
//! Nothing here is shared with the datapath: a scrape takes no lock a packet needs,
//! and a slow scraper slows only itself.
//!
//! Every series has a `device` label; path series add `path` (the interface name), peer
//! series `peer` (the public key). Counters end in `_total`. RTT, loss and jitter have
//! a series only for paths where they are known (none until path health measures them),
//! so their families are present but may be empty.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, text, DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::control::status::{PathStatus, Status};

/// Which text format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4 (what `curl` gets).
    Prometheus,
    /// OpenMetrics 1.0 text (what a Prometheus server asks for).
    OpenMetrics,
}

impl Format {
    /// The format an HTTP `Accept` header asks for: OpenMetrics if it names it, else
    /// the Prometheus text format.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Encodes the metrics of `status` in `format`.
pub fn encode(status: &Status, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Families(families(status))));
    let mut out = String::new();
    // Writing into a String cannot fail; an encoding error would be a bug here (a name
    // the encoder refuses), and gives an empty page, not a crash.
    let r = match format {
        Format::Prometheus => prometheus_text::encode(&mut out, &registry),
        Format::OpenMetrics => text::encode(&mut out, &registry),
    };
    if r.is_err() {
        out.clear();
    }
    out
}

type Labels = Vec<(&'static str, String)>;

/// The states a path can be in, each with a `mpwg_path_state` series.
const PATH_STATES: [&str; 4] = ["up", "degraded", "down", "absent"];

/// A value of one series.
#[derive(Debug, Clone, Copy)]
enum Value {
    Counter(u64),
    Gauge(f64),
    IntGauge(i64),
}

/// One metric family, with its series in a stable order (paths and peers as the status
/// lists them), and its descriptor even when it has no series.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    kind: MetricType,
    series: Vec<(Labels, Value)>,
}

/// The families of one scrape: encoded in the order made, series in their order.
#[derive(Debug)]
struct Families(Vec<Family>);

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let mut m = encoder.encode_descriptor(f.name, f.help, f.unit.as_ref(), f.kind)?;
            for (labels, v) in &f.series {
                let e = m.encode_family(labels)?;
                match *v {
                    Value::Counter(n) => ConstCounter::new(n).encode(e)?,
                    Value::Gauge(x) => ConstGauge::new(x).encode(e)?,
                    Value::IntGauge(n) => ConstGauge::new(n).encode(e)?,
                }
            }
        }
        Ok(())
    }
}

/// The families made from one status. Counter names get `_total` when encoded, and
/// names with a unit get the unit (`mpwg_path_tx` + bytes: `mpwg_path_tx_bytes_total`).
fn families(s: &Status) -> Vec<Family> {
    let dev = || ("device", s.interface.clone());
    let path = |p: &PathStatus| vec![dev(), ("path", p.name.clone())];
    let peer = |key: &str| vec![dev(), ("peer", key.to_string())];
    let family = |name, help, unit, kind, series| Family {
        name,
        help,
        unit,
        kind,
        series,
    };
    let mut out = vec![family(
        "mpwg_info",
        "The running mpwg: its version and scheduling mode (always 1)",
        None,
        MetricType::Gauge,
        vec![(
            vec![
                dev(),
                ("version", s.version.clone()),
                ("mode", s.mode.clone()),
            ],
            Value::IntGauge(1),
        )],
    )];
    out.push(family(
        "mpwg_path_up",
        "1 if the path is up and carries traffic, else 0",
        None,
        MetricType::Gauge,
        s.paths
            .iter()
            .map(|p| (path(p), Value::IntGauge(i64::from(p.state == "up"))))
            .collect(),
    ));
    out.push(family(
        "mpwg_path_state",
        "The path's state: 1 for the one it is in (up, degraded, down or absent), 0 for the others",
        None,
        MetricType::Gauge,
        s.paths
            .iter()
            .flat_map(|p| {
                let mut states = PATH_STATES.to_vec();
                if !states.contains(&p.state.as_str()) {
                    states.push(p.state.as_str());
                }
                states.into_iter().map(move |st| {
                    let mut labels = path(p);
                    labels.push(("state", st.to_string()));
                    (labels, Value::IntGauge(i64::from(p.state == st)))
                })
            })
            .collect(),
    ));
    type PathCounter = (
        &'static str,
        &'static str,
        Option<Unit>,
        fn(&PathStatus) -> u64,
    );
    let path_counters: [PathCounter; 7] = [
        (
            "mpwg_path_tx",
            "Bytes sent on the path (UDP payload)",
            Some(Unit::Bytes),
            |p| p.tx_bytes,
        ),
        (
            "mpwg_path_rx",
            "Bytes received on the path (UDP payload)",
            Some(Unit::Bytes),
            |p| p.rx_bytes,
        ),
        (
            "mpwg_path_tx_packets",
            "Datagrams sent on the path",
            None,
            |p| p.tx_packets,
        ),
        (
            "mpwg_path_rx_packets",
            "Datagrams received on the path",
            None,
            |p| p.rx_packets,
        ),
        (
            "mpwg_path_send_errors",
            "Sends on the path that failed",
            None,
            |p| p.send_errors,
        ),
        (
            "mpwg_path_wins",
            "Data packets whose first copy arrived on this path",
            None,
            |p| p.wins,
        ),
        (
            "mpwg_path_duplicates_dropped",
            "Copies that arrived on this path after another path's, and were dropped",
            None,
            |p| p.duplicates_dropped,
        ),
    ];
    for (name, help, unit, value) in path_counters {
        out.push(family(
            name,
            help,
            unit,
            MetricType::Counter,
            s.paths
                .iter()
                .map(|p| (path(p), Value::Counter(value(p))))
                .collect(),
        ));
    }
    type PathGauge = (
        &'static str,
        &'static str,
        Option<Unit>,
        fn(&PathStatus) -> Option<f64>,
    );
    let path_gauges: [PathGauge; 4] = [
        (
            "mpwg_path_rtt",
            "Smoothed round-trip time of the path (no series until measured)",
            Some(Unit::Seconds),
            |p| p.rtt_ms.map(|ms| ms / 1000.0),
        ),
        (
            "mpwg_path_loss_ratio",
            "Fraction of packets lost on the path, 0 to 1 (no series until measured)",
            None,
            |p| p.loss_pct.map(|pct| pct / 100.0),
        ),
        (
            "mpwg_path_jitter",
            "Jitter of the path's round-trip time (no series until measured)",
            Some(Unit::Seconds),
            |p| p.jitter_ms.map(|ms| ms / 1000.0),
        ),
        (
            "mpwg_path_goodput_bytes_per_second",
            "The peer's data delivered through the path (first copies), bytes per second over the last second or so",
            None,
            |p| p.goodput_mbps.map(|m| m * 1e6 / 8.0),
        ),
    ];
    for (name, help, unit, value) in path_gauges {
        out.push(family(
            name,
            help,
            unit,
            MetricType::Gauge,
            s.paths
                .iter()
                .filter_map(|p| Some((path(p), Value::Gauge(value(p)?))))
                .collect(),
        ));
    }
    out.push(family(
        "mpwg_peer_last_handshake_timestamp",
        "When the last handshake with the peer completed, in seconds since the Unix epoch (no series before the first)",
        Some(Unit::Seconds),
        MetricType::Gauge,
        s.peers
            .iter()
            .filter_map(|p| {
                let t = i64::try_from(p.last_handshake_unix?).ok()?;
                Some((peer(&p.public_key), Value::IntGauge(t)))
            })
            .collect(),
    ));
    out.push(family(
        "mpwg_peer_tx",
        "Bytes sent to the peer",
        Some(Unit::Bytes),
        MetricType::Counter,
        s.peers
            .iter()
            .map(|p| (peer(&p.public_key), Value::Counter(p.tx_bytes)))
            .collect(),
    ));
    out.push(family(
        "mpwg_peer_rx",
        "Bytes received from the peer",
        Some(Unit::Bytes),
        MetricType::Counter,
        s.peers
            .iter()
            .map(|p| (peer(&p.public_key), Value::Counter(p.rx_bytes)))
            .collect(),
    ));
    let h = &s.handshakes;
    out.push(family(
        "mpwg_handshakes",
        "Handshake messages received, by result: accepted (answered, or completed a handshake), rejected (bad mac1, did not decrypt, unknown peer), cookie_sent (answered with a cookie, under load), rate_limited (its source had used its share, under load), queue_full",
        None,
        MetricType::Counter,
        [
            ("accepted", h.accepted),
            ("rejected", h.rejected),
            ("cookie_sent", h.cookie_sent),
            ("rate_limited", h.rate_limited),
            ("queue_full", h.queue_full),
        ]
            .into_iter()
            .map(|(result, v)| (vec![dev(), ("result", result.to_string())], Value::Counter(v)))
            .collect(),
    ));
    let d = &s.drops;
    out.push(family(
        "mpwg_dropped",
        "Datagrams and packets the device dropped, by reason",
        None,
        MetricType::Counter,
        [
            ("malformed", d.malformed),
            ("unknown_index", d.unknown_index),
            ("replayed", d.replayed),
            ("bad_data", d.bad_data),
            ("bad_source", d.bad_source),
            ("no_route", d.no_route),
            ("unexpected_cookie", d.unexpected_cookie),
        ]
        .into_iter()
        .map(|(reason, v)| {
            (
                vec![dev(), ("reason", reason.to_string())],
                Value::Counter(v),
            )
        })
        .collect(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::status::tests::sample;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn prometheus_text_has_the_families_and_labels() {
        let t = encode(&sample(), Format::Prometheus);
        let l = lines(&t);
        for want in [
            r#"mpwg_path_up{device="mp0",path="eth0"} 1"#,
            r#"mpwg_path_up{device="mp0",path="wwan0"} 0"#,
            r#"mpwg_path_state{device="mp0",path="wwan0",state="down"} 1"#,
            r#"mpwg_path_state{device="mp0",path="wwan0",state="up"} 0"#,
            r#"mpwg_path_state{device="mp0",path="eth0",state="absent"} 0"#,
            r#"mpwg_path_tx_bytes_total{device="mp0",path="eth0"} 1000"#,
            r#"mpwg_path_rx_bytes_total{device="mp0",path="eth0"} 900"#,
            r#"mpwg_path_tx_packets_total{device="mp0",path="eth0"} 10"#,
            r#"mpwg_path_rx_packets_total{device="mp0",path="eth0"} 9"#,
            r#"mpwg_path_send_errors_total{device="mp0",path="wwan0"} 3"#,
            r#"mpwg_path_wins_total{device="mp0",path="eth0"} 7"#,
            r#"mpwg_path_duplicates_dropped_total{device="mp0",path="eth0"} 2"#,
            r#"mpwg_path_rtt_seconds{device="mp0",path="eth0"} 0.0125"#,
            r#"mpwg_path_goodput_bytes_per_second{device="mp0",path="eth0"} 5062500.0"#,
            r#"mpwg_peer_last_handshake_timestamp_seconds{device="mp0",peer="xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="} 1700000000"#,
            r#"mpwg_peer_tx_bytes_total{device="mp0",peer="xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="} 1000"#,
            r#"mpwg_handshakes_total{device="mp0",result="accepted"} 2"#,
            r#"mpwg_handshakes_total{device="mp0",result="rejected"} 4"#,
            r#"mpwg_handshakes_total{device="mp0",result="cookie_sent"} 1"#,
            r#"mpwg_handshakes_total{device="mp0",result="rate_limited"} 5"#,
            r#"mpwg_handshakes_total{device="mp0",result="queue_full"} 6"#,
            r#"mpwg_dropped_total{device="mp0",reason="replayed"} 2"#,
            "# TYPE mpwg_path_loss_ratio gauge",
        ] {
            assert!(l.contains(&want), "missing line {want:?} in:\n{t}");
        }
        // Unknown RTT, loss: no series for them.
        assert!(!t.contains(r#"mpwg_path_rtt_seconds{device="mp0",path="wwan0"}"#));
        assert!(!t.contains("mpwg_path_loss_ratio{"));
    }

    #[test]
    fn openmetrics_text_ends_with_eof_and_content_types_follow_accept() {
        let t = encode(&sample(), Format::OpenMetrics);
        assert!(t.ends_with("# EOF\n"), "{t}");
        assert!(t.contains("# UNIT mpwg_path_rtt_seconds seconds"));
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert!(Format::Prometheus.content_type().starts_with("text/plain"));
    }
}
