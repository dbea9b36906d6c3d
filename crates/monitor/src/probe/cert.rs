//! The expiry date of an X.509 certificate, read straight from its DER encoding.
//!
//! Only the path to `tbsCertificate.validity.notAfter` is walked (RFC 5280, section 4.1), so no
//! X.509 crate is needed for one date.

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

/// `notAfter` as seconds since the Unix epoch.
pub(crate) fn not_after_unix(der: &[u8]) -> Option<i64> {
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
    // serialNumber, signature, issuer
    for _ in 0..3 {
        rest = tlv(rest)?.2;
    }
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
    fn garbage_is_none_not_a_panic() {
        assert_eq!(not_after_unix(&[]), None);
        assert_eq!(not_after_unix(&[0x30, 0x82, 0xff]), None);
        let der = cert_expiring(2030, 1, 1);
        for cut in [1, 10, 100, der.len() / 2] {
            let _ = not_after_unix(&der[..cut]);
        }
    }
}
