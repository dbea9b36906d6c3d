//! The DNS probe against an authoritative server running in the test: `hickory-server` with an
//! in-memory zone, over UDP on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::ServerFuture;
use hickory_server::authority::{Catalog, ZoneType};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryAuthority;
use rampart_monitor::config::{DnsCheck, DnsMatch, DnsRecordType, MonitorConfig};
use rampart_monitor::probe::{DnsProbe, FailureKind, Probe, ProbeResult};

const TIMEOUT: Duration = Duration::from_secs(2);

/// The zone `probe.test.`: `www` with two A and one AAAA record, `alias` a CNAME to `www`, the
/// apex with an MX and a TXT record.
struct DnsServer {
    addr: SocketAddr,
    _server: ServerFuture<Catalog>,
}

async fn dns_server() -> DnsServer {
    let origin = Name::from_str("probe.test.").unwrap();
    let name = |n: &str| Name::from_str(n).unwrap();
    let mut zone = InMemoryAuthority::empty(origin.clone(), ZoneType::Primary, false);
    let records = [
        Record::from_rdata(
            origin.clone(),
            60,
            RData::SOA(SOA::new(
                name("ns.probe.test."),
                name("admin.probe.test."),
                1,
                3600,
                600,
                86_400,
                60,
            )),
        ),
        Record::from_rdata(name("www.probe.test."), 60, RData::A(A::new(192, 0, 2, 1))),
        Record::from_rdata(name("www.probe.test."), 60, RData::A(A::new(192, 0, 2, 2))),
        Record::from_rdata(
            name("www.probe.test."),
            60,
            RData::AAAA(AAAA::from_str("2001:db8::1").unwrap()),
        ),
        Record::from_rdata(
            name("alias.probe.test."),
            60,
            RData::CNAME(CNAME(name("www.probe.test."))),
        ),
        Record::from_rdata(
            origin.clone(),
            60,
            RData::MX(MX::new(10, name("mail.probe.test."))),
        ),
        Record::from_rdata(
            origin.clone(),
            60,
            RData::TXT(TXT::new(vec!["v=spf1 -all".to_owned()])),
        ),
    ];
    for record in records {
        zone.upsert_mut(record, 1);
    }
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let mut server = ServerFuture::new(catalog);
    server.register_socket(socket);
    DnsServer {
        addr,
        _server: server,
    }
}

fn check(server: SocketAddr, name: &str, record: DnsRecordType, expected: &[&str]) -> DnsCheck {
    let mut check = DnsCheck::new(name, record);
    check.server = Some(server);
    check.expected = expected.iter().map(|e| (*e).to_owned()).collect();
    check
}

async fn probe(check: DnsCheck) -> ProbeResult {
    DnsProbe::new(check).probe(TIMEOUT).await
}

#[tokio::test]
async fn each_record_type_is_answered_and_compared() {
    let dns = dns_server().await;
    let cases: [(&str, DnsRecordType, &[&str]); 5] = [
        (
            "www.probe.test",
            DnsRecordType::A,
            &["192.0.2.1", "192.0.2.2"],
        ),
        ("www.probe.test", DnsRecordType::Aaaa, &["2001:db8::1"]),
        (
            "alias.probe.test",
            DnsRecordType::Cname,
            &["www.probe.test"],
        ),
        ("probe.test", DnsRecordType::Mx, &["10 mail.probe.test"]),
        ("probe.test", DnsRecordType::Txt, &["v=spf1 -all"]),
    ];
    for (name, record, expected) in cases {
        let r = probe(check(dns.addr, name, record, expected)).await;
        assert!(r.is_success(), "{name} {record:?}: {r:?}");
        assert_eq!(r.details.answers, expected, "{name} {record:?}");
        assert!(r.phases.dns.is_some());
    }
    // No expectation: any answer passes.
    let r = probe(check(dns.addr, "www.probe.test.", DnsRecordType::A, &[])).await;
    assert!(r.is_success(), "{r:?}");
}

#[tokio::test]
async fn wrong_answers_are_mismatches_unless_contained() {
    let dns = dns_server().await;
    let one = check(dns.addr, "www.probe.test", DnsRecordType::A, &["192.0.2.1"]);
    let r = probe(one.clone()).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::AnswerMismatch), "{r:?}");
    assert_eq!(r.details.answers, ["192.0.2.1", "192.0.2.2"]);

    let mut contains = one;
    contains.matching = DnsMatch::Contains;
    assert!(probe(contains.clone()).await.is_success());
    contains.expected.push("192.0.2.9".to_owned());
    let r = probe(contains).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::AnswerMismatch), "{r:?}");
}

#[tokio::test]
async fn missing_names_records_and_servers_are_told_apart() {
    let dns = dns_server().await;
    let r = probe(check(dns.addr, "nope.probe.test", DnsRecordType::A, &[])).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::NxDomain), "{r:?}");
    let r = probe(check(dns.addr, "www.probe.test", DnsRecordType::Mx, &[])).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::NoRecords), "{r:?}");

    // A socket that never answers.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let c = check(
        silent.local_addr().unwrap(),
        "www.probe.test",
        DnsRecordType::A,
        &[],
    );
    let r = DnsProbe::new(c).probe(Duration::from_millis(300)).await;
    assert_eq!(r.failure_kind(), Some(FailureKind::Timeout), "{r:?}");
    assert!(r.latency < Duration::from_secs(1), "{r:?}");
}

#[test]
fn dns_sections_are_read_and_checked() {
    let c = MonitorConfig::from_str(
        "[[target]]\nname = \"mx\"\nkind = \"dns\"\n[target.dns]\nname = \"example.com\"\n\
         record = \"mx\"\nserver = \"127.0.0.1:5353\"\nexpected = [\"10 Mail.Example.com.\"]\n",
        None,
    )
    .unwrap();
    let rampart_monitor::config::CheckConfig::Dns(d) = &c.targets[0].check else {
        panic!("{:?}", c.targets[0].check)
    };
    assert_eq!(d.name, "example.com.");
    assert_eq!(d.expected, ["10 mail.example.com"]);
    assert_eq!(c.targets[0].check.host(), "127.0.0.1:5353");

    let err = MonitorConfig::from_str(
        "[[target]]\nname = \"x\"\nkind = \"dns\"\n[target.dns]\nname = \"a b\"\n\
         record = \"SRV\"\nserver = \"localhost\"\nexpected = [\"x\"]\nmatch = \"some\"\n",
        None,
    )
    .unwrap_err();
    let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
    for path in [
        "target[0].dns.name",
        "target[0].dns.record",
        "target[0].dns.server",
        "target[0].dns.expected[0]",
        "target[0].dns.match",
    ] {
        assert!(paths.contains(&path), "{path}: {err}");
    }
}
