//! Prometheus and OpenMetrics text exposition of a [`Snapshot`], encoded with `prometheus-client`.
//!
//! Two formats, chosen per scrape from the `Accept` header ([`Format::from_accept`]):
//! - **OpenMetrics text 1.0** ([`OPENMETRICS_CONTENT_TYPE`]), what Prometheus asks for first:
//!   `# UNIT` lines, counters as family `x` with samples `x_total`, and a closing `# EOF`.
//! - **Prometheus text 0.0.4** ([`TEXT_CONTENT_TYPE`]), for everything else (curl, `promtool
//!   check metrics`, older scrapers): counters as family and samples `x_total`, no `# UNIT`,
//!   no `# EOF`.
//!
//! Both pass `promtool check metrics` (0.0.4) and Prometheus' OpenMetrics parser; the tests
//! run both on a real scrape. Names get the unit suffix (`_seconds`) and, for counters,
//! `_total`; characters a name may not hold become `_`; label values are escaped. A family
//! whose exposed name would clash with one written before it, a counter below zero or NaN, and
//! a histogram whose bounds or counts go backwards are left out and counted in the gauge
//! `rampart_telemetry_dropped_series`, so one bad collector never spoils the scrape.
//!
//! ```
//! use rampart_telemetry::export::prometheus::{self, Format};
//! use rampart_telemetry::{Labels, Telemetry};
//!
//! let telemetry = Telemetry::new();
//! telemetry.counter("rampart_jobs_done", "Jobs finished.", Labels::new()).add(3);
//!
//! // In an HTTP handler: pick the format the scraper asked for.
//! let scrape = prometheus::scrape(&telemetry, Some("text/plain;version=0.0.4"));
//! assert_eq!(scrape.format, Format::Text);
//! assert_eq!(scrape.content_type(), prometheus::TEXT_CONTENT_TYPE);
//! assert!(scrape.body.contains("# TYPE rampart_jobs_done_total counter\nrampart_jobs_done_total 3\n"));
//! ```

use super::DROPPED_SERIES_METRIC;
use super::{DROPPED_SERIES_HELP, ExportError, per_bucket};
use crate::snapshot::{MetricFamily, MetricKind, Snapshot, Value};
use crate::{Labels, Telemetry};
use prometheus_client::collector::Collector as PromCollector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, LabelSetEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit as PromUnit};
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// The content type of OpenMetrics text 1.0, what [`Format::OpenMetrics`] produces.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of Prometheus text 0.0.4, what [`Format::Text`] produces.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A text exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Format {
    /// OpenMetrics text 1.0.0.
    #[default]
    OpenMetrics,
    /// Prometheus text 0.0.4.
    Text,
}

impl Format {
    /// The `Content-Type` to serve this format with.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Text => TEXT_CONTENT_TYPE,
        }
    }

    /// The format to answer a request with this `Accept` header: OpenMetrics if it asks for
    /// `application/openmetrics-text` at least as much as for `text/plain` (by `q`), else
    /// Prometheus text, which is also the answer to no header or `*/*`.
    ///
    /// ```
    /// use rampart_telemetry::export::prometheus::Format;
    /// // What Prometheus 2.x sends.
    /// let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
    ///     version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    /// assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
    /// assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
    /// assert_eq!(Format::from_accept(None), Format::Text);
    /// ```
    pub fn from_accept(accept: Option<&str>) -> Format {
        let (mut openmetrics, mut text) = (0.0f64, 0.0f64);
        for range in accept.unwrap_or_default().split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f64>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// One scrape's answer: the body and the format it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Scrape {
    /// The format of `body`.
    pub format: Format,
    /// The exposition.
    pub body: String,
}

impl Scrape {
    /// The `Content-Type` header to send with the body.
    pub fn content_type(&self) -> &'static str {
        self.format.content_type()
    }
}

/// Takes a snapshot of `telemetry` and encodes it in the format `accept` asks for (see
/// [`Format::from_accept`]): everything a `/metrics` handler needs.
pub fn scrape(telemetry: &Telemetry, accept: Option<&str>) -> Scrape {
    let format = Format::from_accept(accept);
    Scrape {
        format,
        body: render_format(telemetry, format),
    }
}

/// Takes a snapshot of `telemetry` and encodes it as OpenMetrics text.
pub fn render(telemetry: &Telemetry) -> String {
    render_format(telemetry, Format::OpenMetrics)
}

/// Takes a snapshot of `telemetry` and encodes it in `format`.
pub fn render_format(telemetry: &Telemetry, format: Format) -> String {
    let mut out = String::new();
    // Writing into a `String` cannot fail, and the encoder has no other way to fail.
    let _ = encode_owned(telemetry.snapshot(), format, &mut out);
    out
}

/// Appends `snapshot` to `out` as OpenMetrics text, `# EOF` included.
///
/// ```
/// use rampart_telemetry::export::prometheus::encode_prometheus;
/// use rampart_telemetry::{Labels, MetricKind, Snapshot, Telemetry, Unit, Value};
///
/// let telemetry = Telemetry::new();
/// telemetry.register_collector(|out: &mut rampart_telemetry::MetricsWriter<'_>| {
///     out.family("rampart_cache_size", "Bytes in the cache.", MetricKind::Gauge, Some(Unit::Bytes))
///         .series(Labels::new().with("cache", "users"), Value::Gauge(4096.0));
/// });
/// let mut text = String::new();
/// encode_prometheus(&telemetry.snapshot(), &mut text)?;
/// assert!(text.contains("# UNIT rampart_cache_size_bytes bytes\n"));
/// assert!(text.contains("rampart_cache_size_bytes{cache=\"users\"} 4096\n"));
/// # Ok::<(), rampart_telemetry::export::ExportError>(())
/// ```
pub fn encode_prometheus(snapshot: &Snapshot, out: &mut String) -> Result<(), ExportError> {
    encode(snapshot, Format::OpenMetrics, out)
}

/// Appends `snapshot` to `out` in `format`. It copies the snapshot (`prometheus-client` only
/// takes collectors it owns); [`render_format`] and [`scrape`] do not.
pub fn encode(snapshot: &Snapshot, format: Format, out: &mut String) -> Result<(), ExportError> {
    encode_owned(snapshot.clone(), format, out)
}

fn encode_owned(snapshot: Snapshot, format: Format, out: &mut String) -> Result<(), ExportError> {
    out.reserve(estimated_len(&snapshot));
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector { snapshot, format }));
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(out, &registry)?,
        Format::Text => prometheus_client::encoding::text::encode_registry(out, &registry)?,
    }
    Ok(())
}

/// About how long the text of `snapshot` is, so the output grows once rather than by doubling.
fn estimated_len(snapshot: &Snapshot) -> usize {
    let family = |f: &MetricFamily| {
        let lines = match f.series.first().map(|s| &s.value) {
            Some(Value::Histogram(h)) => h.buckets.len() + 3,
            _ => 1,
        };
        let labels = f.series.first().map_or(0, |s| s.labels.to_string().len());
        f.series.len() * lines * (f.name.len() + labels + 32) + f.help.len() + 64
    };
    snapshot.families.iter().map(family).sum::<usize>() + 128
}

/// Adds a collector to `registry` that takes a snapshot of `telemetry` on every encode, for
/// services that already serve a `prometheus_client` registry. It writes OpenMetrics, what
/// `prometheus_client::encoding::text::encode` produces. Register one `Telemetry` per registry:
/// two would write the same family names twice.
///
/// ```
/// use prometheus_client::registry::Registry;
/// use rampart_telemetry::export::prometheus::register_into;
/// use rampart_telemetry::Telemetry;
/// use std::time::Duration;
///
/// let telemetry = Telemetry::new();
/// let mut registry = Registry::default();
/// register_into(&mut registry, telemetry.clone());
/// telemetry.operation("login").record_ok(Duration::from_millis(8));
///
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry)?;
/// assert!(text.contains(r#"rampart_operation_requests_total{operation="login"} 1"#));
/// # Ok::<(), std::fmt::Error>(())
/// ```
pub fn register_into(registry: &mut Registry, telemetry: Telemetry) {
    registry.register_collector(Box::new(TelemetryCollector::new(telemetry)));
}

/// A `prometheus_client` collector that encodes a fresh snapshot of a [`Telemetry`] on every
/// scrape, as OpenMetrics; see [`register_into`].
#[derive(Debug, Clone)]
pub struct TelemetryCollector {
    telemetry: Telemetry,
}

impl TelemetryCollector {
    /// A collector over `telemetry`.
    pub fn new(telemetry: Telemetry) -> Self {
        TelemetryCollector { telemetry }
    }
}

impl PromCollector for TelemetryCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        encode_snapshot(&self.telemetry.snapshot(), Format::OpenMetrics, encoder)
    }
}

#[derive(Debug)]
struct SnapshotCollector {
    snapshot: Snapshot,
    format: Format,
}

impl PromCollector for SnapshotCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        encode_snapshot(&self.snapshot, self.format, encoder)
    }
}

fn encode_snapshot(
    snapshot: &Snapshot,
    format: Format,
    mut out: DescriptorEncoder<'_>,
) -> fmt::Result {
    let mut taken = HashSet::new();
    let mut dropped = snapshot.dropped_series;
    let mut buckets = Vec::new();
    for family in &snapshot.families {
        dropped += encode_family(family, format, &mut taken, &mut buckets, &mut out)?;
    }
    let name = DROPPED_SERIES_METRIC;
    if claim(&mut taken, name, MetricKind::Gauge) {
        let mut metric =
            out.encode_descriptor(name, DROPPED_SERIES_HELP, None, MetricType::Gauge)?;
        metric.encode_gauge(&dropped)?;
    }
    Ok(())
}

/// Encodes one family; returns how many of its series were left out.
fn encode_family(
    family: &MetricFamily,
    format: Format,
    taken: &mut HashSet<String>,
    buckets: &mut Vec<(f64, u64)>,
    out: &mut DescriptorEncoder<'_>,
) -> Result<u64, fmt::Error> {
    let all = family.series.len() as u64;
    let unit = family.unit.as_ref().map(|u| sanitize(u.as_str(), false));
    let mut base = sanitize(&family.name, true);
    if family.kind == MetricKind::Counter {
        base = strip_suffix(base, "_total");
    }
    if let Some(unit) = &unit {
        base = strip_suffix(base, &format!("_{unit}"));
    }
    let exposed = match &unit {
        Some(unit) => format!("{base}_{unit}"),
        None => base.clone().into_owned(),
    };
    if !claim(taken, &exposed, family.kind) {
        return Ok(all);
    }
    let kind = match family.kind {
        MetricKind::Counter => MetricType::Counter,
        MetricKind::Gauge => MetricType::Gauge,
        MetricKind::Histogram => MetricType::Histogram,
    };
    let help = escape_help(&family.help, format);
    // OpenMetrics: prometheus-client appends the unit, writes `# UNIT` and `_total`.
    // Prometheus text: the name is written out in full and counters' samples carry the
    // family's name (`x_total`) as gauges' do, which is what 0.0.4 expects.
    let prom_unit = unit
        .as_ref()
        .map(|u| PromUnit::Other(u.clone().into_owned()));
    let counter_name;
    let (name, prom_unit) = match (format, family.kind) {
        (Format::OpenMetrics, _) => (base.as_ref(), prom_unit.as_ref()),
        (Format::Text, MetricKind::Counter) => {
            counter_name = format!("{exposed}_total");
            (counter_name.as_str(), None)
        }
        (Format::Text, _) => (exposed.as_str(), None),
    };
    let mut metric = out.encode_descriptor(name, &help, prom_unit, kind)?;
    let mut dropped = 0;
    let histogram = family.kind == MetricKind::Histogram;
    for series in &family.series {
        let written = if series.labels.is_empty() {
            // Through `encode_family` even no labels would be written, as `{}`.
            encode_value(family.kind, &series.value, format, buckets, &mut metric)?
        } else {
            let labels = SeriesLabels {
                labels: &series.labels,
                histogram,
            };
            let mut metric = metric.encode_family(&labels)?;
            encode_value(family.kind, &series.value, format, buckets, &mut metric)?
        };
        if !written {
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// Writes one value; false if it is invalid (or not of the family's kind) and was left out.
fn encode_value(
    kind: MetricKind,
    value: &Value,
    format: Format,
    buckets: &mut Vec<(f64, u64)>,
    m: &mut MetricEncoder<'_>,
) -> Result<bool, fmt::Error> {
    match (kind, value) {
        (MetricKind::Counter, Value::Counter(v)) if *v >= 0.0 => match (format, integral(*v)) {
            (Format::OpenMetrics, Some(i)) => {
                m.encode_counter::<NoLabelSet, u64, f64>(&i.unsigned_abs(), None)?
            }
            (Format::OpenMetrics, None) => m.encode_counter::<NoLabelSet, f64, f64>(v, None)?,
            (Format::Text, Some(i)) => m.encode_gauge(&i)?,
            (Format::Text, None) => m.encode_gauge(v)?,
        },
        (MetricKind::Gauge, Value::Gauge(v)) => match integral(*v) {
            Some(i) => m.encode_gauge(&i)?,
            None => m.encode_gauge(v)?,
        },
        (MetricKind::Histogram, Value::Histogram(h)) => match per_bucket(h, buckets) {
            Some(count) => m.encode_histogram::<NoLabelSet>(h.sum, count, buckets, None)?,
            None => return Ok(false),
        },
        _ => return Ok(false),
    }
    Ok(true)
}

/// `v` as an integer if it is one that an `f64` holds exactly: written as `7`, not `7.0`, which
/// is shorter and several times quicker to format.
fn integral(v: f64) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    (v.fract() == 0.0 && v.abs() <= EXACT).then_some(v as i64)
}

/// Reserves the names a family of `kind` called `name` exposes; false if one is taken.
fn claim(taken: &mut HashSet<String>, name: &str, kind: MetricKind) -> bool {
    let suffixes: &[&str] = match kind {
        MetricKind::Counter => &["", "_total", "_created"],
        MetricKind::Gauge => &[""],
        MetricKind::Histogram => &["", "_bucket", "_count", "_sum", "_created"],
    };
    if suffixes
        .iter()
        .any(|s| taken.contains(&format!("{name}{s}")))
    {
        return false;
    }
    taken.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    true
}

/// `name` with every character a metric name (`colon`) or label name may not hold as `_`.
fn sanitize(name: &str, colon: bool) -> Cow<'_, str> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || (colon && b == b':');
    let valid = match name.as_bytes() {
        [first, rest @ ..] => !first.is_ascii_digit() && ok(*first) && rest.iter().all(|&b| ok(b)),
        [] => false,
    };
    if valid {
        return Cow::Borrowed(name);
    }
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii() && ok(c as u8) { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    Cow::Owned(s)
}

fn strip_suffix<'a>(name: Cow<'a, str>, suffix: &str) -> Cow<'a, str> {
    match name.strip_suffix(suffix) {
        Some(stripped) if !stripped.is_empty() => Cow::Owned(stripped.to_owned()),
        _ => name,
    }
}

/// HELP text escaped for `format`: both escape `\` and line feeds; only OpenMetrics escapes
/// `"` (Prometheus 0.0.4 refuses `\"` in HELP).
fn escape_help(help: &str, format: Format) -> Cow<'_, str> {
    let quote = format == Format::OpenMetrics;
    let needs_escaping = help.contains(['\\', '\n']) || (quote && help.contains('"'));
    if !needs_escaping {
        return Cow::Borrowed(help);
    }
    let mut s = String::with_capacity(help.len() + 8);
    for c in help.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '"' if quote => s.push_str("\\\""),
            c => s.push(c),
        }
    }
    Cow::Owned(s)
}

/// A series' labels for prometheus-client, which escapes the values. Names are made valid; a
/// histogram's own `le` label becomes `exported_le` so it does not clash with the buckets'.
struct SeriesLabels<'a> {
    labels: &'a Labels,
    histogram: bool,
}

impl EncodeLabelSet for SeriesLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
        for (name, value) in self.labels.iter() {
            let name = match sanitize(name, false) {
                Cow::Borrowed("le") if self.histogram => Cow::Borrowed("exported_le"),
                name => name,
            };
            prometheus_client::encoding::EncodeLabel::encode(
                &(name, value),
                encoder.encode_label(),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{HistogramValue, Series};
    use crate::{MetricKind, Unit};

    fn one_family(kind: MetricKind, unit: Option<Unit>, values: Vec<(Labels, Value)>) -> Snapshot {
        Snapshot {
            families: vec![MetricFamily {
                name: "rampart_thing".into(),
                help: "A thing.".into(),
                kind,
                unit,
                series: values
                    .into_iter()
                    .map(|(labels, value)| Series { labels, value })
                    .collect(),
            }],
            dropped_series: 0,
        }
    }

    fn text(snapshot: &Snapshot, format: Format) -> String {
        let mut out = String::new();
        encode(snapshot, format, &mut out).expect("encodes");
        out
    }

    #[test]
    fn histogram_buckets_stay_cumulative_with_inf_equal_to_count() {
        let h = HistogramValue {
            buckets: vec![(0.1, 2), (0.5, 5), (1.0, 5)],
            sum: 3.5,
            count: 7,
        };
        let snap = one_family(
            MetricKind::Histogram,
            Some(Unit::Seconds),
            vec![(Labels::new(), Value::Histogram(h))],
        );
        let out = text(&snap, Format::OpenMetrics);
        for line in [
            "rampart_thing_seconds_bucket{le=\"0.1\"} 2\n",
            "rampart_thing_seconds_bucket{le=\"0.5\"} 5\n",
            "rampart_thing_seconds_bucket{le=\"1.0\"} 5\n",
            "rampart_thing_seconds_bucket{le=\"+Inf\"} 7\n",
            "rampart_thing_seconds_count 7\n",
            "rampart_thing_seconds_sum 3.5\n",
        ] {
            assert!(out.contains(line), "{line:?} missing from\n{out}");
        }
    }

    #[test]
    fn invalid_series_are_left_out_and_counted() {
        let backwards = HistogramValue {
            buckets: vec![(0.5, 3), (0.1, 4)],
            sum: 1.0,
            count: 4,
        };
        let snap = one_family(
            MetricKind::Histogram,
            None,
            vec![
                (Labels::new().with("ok", "no"), Value::Histogram(backwards)),
                (
                    Labels::new().with("ok", "yes"),
                    Value::Histogram(HistogramValue::default()),
                ),
            ],
        );
        let out = text(&snap, Format::Text);
        assert!(!out.contains("ok=\"no\""), "{out}");
        assert!(
            out.contains("rampart_thing_bucket{le=\"+Inf\",ok=\"yes\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains("rampart_telemetry_dropped_series 1\n"),
            "{out}"
        );

        let snap = one_family(
            MetricKind::Counter,
            None,
            vec![
                (Labels::new(), Value::Counter(-1.0)),
                (Labels::new().with("a", "b"), Value::Counter(f64::NAN)),
            ],
        );
        assert!(text(&snap, Format::OpenMetrics).contains("rampart_telemetry_dropped_series 2\n"));
    }

    #[test]
    fn clashing_families_keep_the_first() {
        let mut snap = one_family(
            MetricKind::Counter,
            None,
            vec![(Labels::new(), Value::Counter(1.0))],
        );
        let mut gauge = snap.families[0].clone();
        gauge.name = "rampart_thing_total".into();
        gauge.kind = MetricKind::Gauge;
        gauge.series[0].value = Value::Gauge(9.0);
        snap.families.push(gauge);
        let out = text(&snap, Format::Text);
        assert!(out.contains("rampart_thing_total 1\n"), "{out}");
        assert!(!out.contains(" 9\n"), "{out}");
    }

    #[test]
    fn names_are_made_valid_and_help_escaped_per_format() {
        let mut snap = one_family(
            MetricKind::Gauge,
            None,
            vec![(Labels::new().with("bad-name", "v"), Value::Gauge(1.0))],
        );
        snap.families[0].name = "9rampart.thing".into();
        snap.families[0].help = "a \"b\" \\ c\nd".into();
        let om = text(&snap, Format::OpenMetrics);
        assert!(
            om.contains("# HELP _9rampart_thing a \\\"b\\\" \\\\ c\\nd\n"),
            "{om}"
        );
        assert!(om.contains("_9rampart_thing{bad_name=\"v\"} 1\n"), "{om}");
        let plain = text(&snap, Format::Text);
        assert!(
            plain.contains("# HELP _9rampart_thing a \"b\" \\\\ c\\nd\n"),
            "{plain}"
        );
    }

    #[test]
    fn accept_header_negotiation_honours_q() {
        let om = Some("application/openmetrics-text; version=1.0.0; q=0.4, text/plain; q=0.5");
        assert_eq!(Format::from_accept(om), Format::Text);
        let om = Some("text/plain;q=0.5, application/openmetrics-text");
        assert_eq!(Format::from_accept(om), Format::OpenMetrics);
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text;q=0")),
            Format::Text
        );
        assert_eq!(Format::from_accept(Some("")), Format::Text);
    }
}
