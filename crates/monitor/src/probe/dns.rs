//! The DNS probe: one lookup of one record type, its answers compared with the expected ones.

use std::collections::BTreeSet;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, ResolveErrorKind, Resolver};
use tokio::time::{Instant, timeout_at};

use super::{Failure, FailureKind, Probe, ProbeFuture, ProbeResult, conclude};
use crate::config::{DnsCheck, DnsMatch, DnsRecordType};

/// Looks `name` up for one record type with `hickory-resolver` (UDP, no cache, one attempt, no
/// DNSSEC), asking the configured server or the system's (`/etc/resolv.conf`), and compares the
/// answers with the expected ones. Phase: `dns`. `details.answers` holds the answers, written as
/// [`DnsRecordType`] says.
///
/// Failures: `nxdomain` (the name does not exist), `no_records` (no record of that type),
/// `timeout` (no answer in time), `dns` (any other failure: a server error, no configuration),
/// `answer_mismatch` (the answers are not the expected ones).
#[derive(Debug, Clone)]
pub struct DnsProbe {
    check: DnsCheck,
}

impl DnsProbe {
    /// A probe for `check`.
    pub fn new(check: DnsCheck) -> Self {
        DnsProbe { check }
    }

    fn resolver(&self, timeout: Duration) -> Result<Resolver<TokioConnectionProvider>, Failure> {
        let provider = TokioConnectionProvider::default();
        let mut builder = match self.check.server {
            Some(server) => {
                let mut config = ResolverConfig::new();
                config.add_name_server(NameServerConfig::new(server, Protocol::Udp));
                Resolver::builder_with_config(config, provider)
            }
            None => Resolver::builder(provider).map_err(|e| {
                (
                    FailureKind::Dns,
                    format!("cannot read the system's DNS configuration: {e}"),
                )
            })?,
        };
        let options: &mut ResolverOpts = builder.options_mut();
        // Every probe asks the server: no cache, and no second try hiding a lost packet's delay.
        options.cache_size = 0;
        options.attempts = 1;
        options.timeout = timeout;
        options.ndots = 0;
        Ok(builder.build())
    }

    async fn run(
        &self,
        deadline: Instant,
        timeout: Duration,
        result: &mut ProbeResult,
    ) -> Result<(), Failure> {
        let resolver = self.resolver(timeout)?;
        let started = Instant::now();
        let record_type = record_type(self.check.record);
        let lookup = timeout_at(
            deadline,
            resolver.lookup(self.check.name.as_str(), record_type),
        )
        .await
        .map_err(|_| timed_out(&self.check))?
        .map_err(|e| self.failure(&e))?;
        result.phases.dns = Some(started.elapsed());
        let answers: BTreeSet<String> = lookup
            .record_iter()
            .filter(|r| r.record_type() == record_type)
            .filter_map(|r| answer(r.data()))
            .collect();
        result.details.answers = answers.iter().cloned().collect();
        if answers.is_empty() {
            return Err(no_records(&self.check));
        }
        let expected: BTreeSet<String> = self.check.expected.iter().cloned().collect();
        let matches = match self.check.matching {
            _ if expected.is_empty() => true,
            DnsMatch::Exact => answers == expected,
            DnsMatch::Contains => expected.is_subset(&answers),
        };
        if matches {
            Ok(())
        } else {
            Err((
                FailureKind::AnswerMismatch,
                format!(
                    "{} {} answered {:?}, expected {}{:?}",
                    self.check.name,
                    self.check.record.as_str(),
                    answers,
                    if self.check.matching == DnsMatch::Contains {
                        "at least "
                    } else {
                        ""
                    },
                    expected
                ),
            ))
        }
    }

    fn failure(&self, error: &ResolveError) -> Failure {
        let check = &self.check;
        if error.is_nx_domain() {
            return (
                FailureKind::NxDomain,
                format!("{} does not exist (NXDOMAIN)", check.name),
            );
        }
        if error.is_no_records_found() {
            return no_records(check);
        }
        let timed_out_inside = match error.kind() {
            ResolveErrorKind::Proto(p) => matches!(p.kind(), ProtoErrorKind::Timeout),
            _ => false,
        };
        if timed_out_inside {
            return timed_out(check);
        }
        (
            FailureKind::Dns,
            format!(
                "looking up {} {} failed: {error}",
                check.name,
                check.record.as_str()
            ),
        )
    }
}

impl Probe for DnsProbe {
    fn probe(&self, timeout: Duration) -> ProbeFuture<'_> {
        Box::pin(async move {
            let started = Instant::now();
            let mut result = ProbeResult::success(Duration::ZERO);
            let outcome = self.run(started + timeout, timeout, &mut result).await;
            conclude(result, outcome, started)
        })
    }
}

fn timed_out(check: &DnsCheck) -> Failure {
    (
        FailureKind::Timeout,
        format!(
            "no answer for {} {} within the timeout",
            check.name,
            check.record.as_str()
        ),
    )
}

fn no_records(check: &DnsCheck) -> Failure {
    (
        FailureKind::NoRecords,
        format!("{} has no {} record", check.name, check.record.as_str()),
    )
}

fn record_type(record: DnsRecordType) -> RecordType {
    match record {
        DnsRecordType::A => RecordType::A,
        DnsRecordType::Aaaa => RecordType::AAAA,
        DnsRecordType::Cname => RecordType::CNAME,
        DnsRecordType::Mx => RecordType::MX,
        DnsRecordType::Txt => RecordType::TXT,
    }
}

/// One answer written for comparison (see [`DnsRecordType`]).
fn answer(data: &RData) -> Option<String> {
    let name = |n: &hickory_resolver::proto::rr::Name| {
        n.to_ascii().trim_end_matches('.').to_ascii_lowercase()
    };
    match data {
        RData::A(a) => Some(a.0.to_string()),
        RData::AAAA(a) => Some(a.0.to_string()),
        RData::CNAME(c) => Some(name(&c.0)),
        RData::MX(mx) => Some(format!("{} {}", mx.preference(), name(mx.exchange()))),
        RData::TXT(txt) => Some(
            txt.txt_data()
                .iter()
                .map(|part| String::from_utf8_lossy(part))
                .collect(),
        ),
        _ => None,
    }
}
