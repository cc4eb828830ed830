//! How a budget is written in, and read from, HTTP and gRPC headers.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

/// gRPC's header: at most 8 digits and a unit (gRPC over HTTP/2,
/// "Timeout").
pub(crate) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The budget a request carries: its `grpc-timeout` if it has one, else
/// whole milliseconds in `header`. Malformed values are no budget.
pub(crate) fn read(headers: &HeaderMap, header: &HeaderName) -> Option<Duration> {
    if headers.contains_key(GRPC_TIMEOUT) {
        return grpc_timeout_of(headers);
    }
    millis_of(headers, header)
}

fn grpc_timeout_of(headers: &HeaderMap) -> Option<Duration> {
    parse_grpc_timeout(headers.get(GRPC_TIMEOUT)?)
}

fn millis_of(headers: &HeaderMap, header: &HeaderName) -> Option<Duration> {
    let millis: u64 = headers.get(header)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_millis(millis))
}

/// Writes `remaining` into a request: `grpc-timeout` for a gRPC request,
/// `header` otherwise, shortening either if the request has one already.
/// Rounded down, never up: a budget never grows on the way out (less than
/// a millisecond left goes out as `0`, which the next hop refuses).
pub(crate) fn write(headers: &mut HeaderMap, header: &HeaderName, remaining: Duration) {
    let grpc = headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|kind| kind.as_bytes().starts_with(b"application/grpc"));
    let own = if grpc {
        grpc_timeout_of(headers)
    } else {
        millis_of(headers, header)
    };
    let remaining = own.map_or(remaining, |own| own.min(remaining));
    if grpc {
        headers.insert(GRPC_TIMEOUT, grpc_timeout(remaining));
    } else {
        let millis = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX);
        headers.insert(header.clone(), HeaderValue::from(millis));
    }
}

/// Whether a response is a deadline answer (`504`, gRPC
/// `DEADLINE_EXCEEDED`, or `CANCELLED`, which tonic answers when its own
/// `grpc-timeout` timer fires), and if so whether the server marked it as
/// its caller's deadline.
pub(crate) fn deadline_answer<B>(response: &http::Response<B>) -> Option<bool> {
    let headers = response.headers();
    let grpc = headers.get("grpc-status").map(HeaderValue::as_bytes);
    let deadline =
        response.status() == http::StatusCode::GATEWAY_TIMEOUT || matches!(grpc, Some(b"4" | b"1"));
    deadline.then(|| headers.contains_key(super::CALLER_DEADLINE))
}

/// The finest unit whose count fits gRPC's 8 digits, as gRPC's own
/// implementations choose it.
fn grpc_timeout(remaining: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = remaining.as_nanos();
    let units: [(u128, &str); 6] = [
        (1, "n"),
        (1_000, "u"),
        (1_000_000, "m"),
        (1_000_000_000, "S"),
        (60_000_000_000, "M"),
        (3_600_000_000_000, "H"),
    ];
    let (count, unit) = units
        .iter()
        .map(|&(per, unit)| (nanos / per, unit))
        .find(|&(count, _)| count <= MAX)
        .unwrap_or((MAX, "H"));
    HeaderValue::try_from(format!("{count}{unit}")).expect("digits and a letter")
}

pub(crate) fn parse_grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let value = value.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3_600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> HeaderName {
        HeaderName::from_static(super::super::HEADER)
    }

    #[test]
    fn grpc_timeouts_parse_every_unit_and_refuse_nonsense() {
        let with = |value: &str| parse_grpc_timeout(&HeaderValue::from_str(value).unwrap());
        assert_eq!(with("2H"), Some(Duration::from_secs(7_200)));
        assert_eq!(with("3M"), Some(Duration::from_secs(180)));
        assert_eq!(with("4S"), Some(Duration::from_secs(4)));
        assert_eq!(with("250m"), Some(Duration::from_millis(250)));
        assert_eq!(with("7u"), Some(Duration::from_micros(7)));
        assert_eq!(with("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "123456789S", "12x", "-1S", "+1S", "1.5S"] {
            assert_eq!(with(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn written_grpc_timeouts_read_back_no_longer_than_they_were() {
        for remaining in [
            Duration::ZERO,
            Duration::from_nanos(99_999_999),
            Duration::from_nanos(100_000_001),
            Duration::from_millis(300),
            Duration::from_secs(99_999),
            Duration::from_secs(100_000_000),
        ] {
            let value = grpc_timeout(remaining);
            let back = parse_grpc_timeout(&value).unwrap();
            assert!(back <= remaining, "{remaining:?} became {value:?}");
            // The finest unit that fits keeps at least 5 of 8 digits.
            assert!(
                remaining - back <= remaining / 10_000,
                "{remaining:?} became {value:?}"
            );
        }
        let longest = parse_grpc_timeout(&grpc_timeout(Duration::from_secs(u64::MAX)));
        assert_eq!(longest, Some(Duration::from_secs(99_999_999 * 3_600)));
    }

    #[test]
    fn grpc_requests_get_grpc_timeout_shortened_never_lengthened() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_static("100m"));
        write(&mut headers, &header(), Duration::from_millis(300));
        assert_eq!(read(&headers, &header()), Some(Duration::from_millis(100)));
        write(&mut headers, &header(), Duration::from_millis(40));
        assert_eq!(read(&headers, &header()), Some(Duration::from_millis(40)));
        assert!(headers.get(header()).is_none());
    }

    #[test]
    fn http_requests_carry_whole_milliseconds() {
        let mut headers = HeaderMap::new();
        write(&mut headers, &header(), Duration::from_micros(2_999));
        assert_eq!(headers.get(header()).unwrap(), "2");
        write(&mut headers, &header(), Duration::from_secs(5));
        assert_eq!(headers.get(header()).unwrap(), "2", "never lengthened");
        assert_eq!(read(&headers, &header()), Some(Duration::from_millis(2)));
        headers.insert(header(), HeaderValue::from_static("soon"));
        assert_eq!(read(&headers, &header()), None);
        assert_eq!(read(&HeaderMap::new(), &header()), None);
    }
}
