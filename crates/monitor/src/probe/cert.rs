//! The expiry date, issuer and subject of an X.509 certificate, read straight from its DER
//! encoding.
//!
//! Only the path to `tbsCertificate.validity.notAfter` and the two names is walked (RFC 5280,
//! section 4.1), so no X.509 crate is needed for one date and two names.

use std::time::SystemTime;

const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION: u8 = 0xa0;

/// Whole days from `now` until the certificate's `notAfter` (negative once expired); `None` if
/// the certificate cannot be read.
pub(crate) fn days_left(der: &[u8], now: SystemTime) -> Option<i64> {
    let not_after = not_after_unix(der)?;
    let now = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).ok()?,
        Err(e) => -i64::try_from(e.duration().as_secs()).ok()?,
    };
    Some((not_after - now).div_euclid(86_400))
}

/// The `tbsCertificate` fields from `issuer` on: issuer, validity, subject, ... (each a whole
/// DER element).
fn from_issuer(der: &[u8]) -> Option<&[u8]> {
    let (tag, certificate, _) = tlv(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = tlv(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = tlv(rest)?.2;
    }
    // serialNumber, signature
    for _ in 0..2 {
        rest = tlv(rest)?.2;
    }
    Some(rest)
}

/// The issuer and the subject of a certificate, written like `CN=example.com, O=Example`.
pub(crate) fn issuer_and_subject(der: &[u8]) -> Option<(String, String)> {
    let (tag, issuer, rest) = tlv(from_issuer(der)?)?;
    if tag != SEQUENCE {
        return None;
    }
    let rest = tlv(rest)?.2; // validity
    let (tag, subject, _) = tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    Some((name(issuer)?, name(subject)?))
}

/// An X.501 `Name` (a sequence of sets of type-and-value pairs) as `CN=…, O=…`; types other
/// than the common ones are shown by their dotted OID.
fn name(mut rdns: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let (_, mut set, rest) = tlv(rdns)?;
        rdns = rest;
        while !set.is_empty() {
            let (_, pair, rest) = tlv(set)?;
            set = rest;
            let (_, oid, value) = tlv(pair)?;
            let (_, value, _) = tlv(value)?;
            let label = match oid {
                [0x55, 0x04, 0x03] => "CN".to_owned(),
                [0x55, 0x04, 0x06] => "C".to_owned(),
                [0x55, 0x04, 0x07] => "L".to_owned(),
                [0x55, 0x04, 0x08] => "ST".to_owned(),
                [0x55, 0x04, 0x0a] => "O".to_owned(),
                [0x55, 0x04, 0x0b] => "OU".to_owned(),
                other => dotted(other),
            };
            parts.push(format!("{label}={}", String::from_utf8_lossy(value)));
        }
    }
    Some(parts.join(", "))
}

/// A DER object identifier in dotted form.
fn dotted(oid: &[u8]) -> String {
    let mut arcs = Vec::new();
    let mut value: u64 = 0;
    for &b in oid {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    let arcs: Vec<String> = arcs.iter().map(u64::to_string).collect();
    arcs.join(".")
}

/// `notAfter` as seconds since the Unix epoch.
pub(crate) fn not_after_unix(der: &[u8]) -> Option<i64> {
    let rest = tlv(from_issuer(der)?)?.2;
    let (tag, validity, _) = tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let not_before_rest = tlv(validity)?.2;
    let (tag, time, _) = tlv(not_before_rest)?;
    let text = std::str::from_utf8(time).ok()?;
    match tag {
        UTC_TIME => {
            let yy: i64 = text.get(0..2)?.parse().ok()?;
            // RFC 5280: UTCTime years 50–99 are 19xx, 00–49 are 20xx.
            let year = if yy >= 50 { 1900 + yy } else { 2000 + yy };
            unix_time(year, text.get(2..)?)
        }
        GENERALIZED_TIME => unix_time(text.get(0..4)?.parse().ok()?, text.get(4..)?),
        _ => None,
    }
}

/// One DER element: its tag, its content and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// `MMDDHHMMSSZ` of `year`, in seconds since the Unix epoch.
fn unix_time(year: i64, rest: &str) -> Option<i64> {
    if rest.len() != 11 || !rest.ends_with('Z') {
        return None;
    }
    let field = |i: usize| rest.get(i..i + 2)?.parse::<i64>().ok();
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;

    fn cert_expiring(year: i32, month: u8, day: u8) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn civil_dates_match_known_unix_times() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1) * 86_400, 951_868_800);
        assert_eq!(days_from_civil(2030, 1, 1) * 86_400, 1_893_456_000);
    }

    #[test]
    fn reads_not_after_in_utc_and_generalized_time() {
        // RFC 5280 encodes dates up to 2049 as UTCTime and later ones as GeneralizedTime.
        assert_eq!(
            not_after_unix(&cert_expiring(2030, 1, 1)),
            Some(1_893_456_000)
        );
        assert_eq!(
            not_after_unix(&cert_expiring(2100, 1, 1)),
            Some(days_from_civil(2100, 1, 1) * 86_400)
        );
    }

    #[test]
    fn counts_whole_days_left_and_negative_once_expired() {
        let der = cert_expiring(2030, 1, 1);
        let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(days_left(&der, at(1_893_456_000 - 10 * 86_400)), Some(10));
        assert_eq!(
            days_left(&der, at(1_893_456_000 - 10 * 86_400 + 1)),
            Some(9)
        );
        assert_eq!(days_left(&der, at(1_893_456_000 + 1)), Some(-1));
    }

    #[test]
    fn reads_issuer_and_subject_names() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "probe.test");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Rampart");
        let key = rcgen::KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let (issuer, subject) = issuer_and_subject(&der).unwrap();
        assert_eq!(subject, issuer, "self-signed");
        assert!(subject.contains("CN=probe.test"), "{subject}");
        assert!(subject.contains("O=Rampart"), "{subject}");
        assert_eq!(
            dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            "1.2.840.113549"
        );
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        assert_eq!(not_after_unix(&[]), None);
        assert_eq!(not_after_unix(&[0x30, 0x82, 0xff]), None);
        let der = cert_expiring(2030, 1, 1);
        for cut in [1, 10, 100, der.len() / 2] {
            let _ = not_after_unix(&der[..cut]);
            let _ = issuer_and_subject(&der[..cut]);
        }
    }
}
