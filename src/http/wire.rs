//! The pure parts of the HTTP listener: request heads (method, path, query, headers), the
//! path routes, base64, RFC 3339 timestamps, and the REST proxy's error body.
//!
//! Nothing here does I/O; everything is unit tested below. Bad input is `None` or an error
//! value, never a panic.

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub path: String,
    /// The query string's `name=value` pairs, undecoded (`%` escapes are not used by the
    /// parameters this listener reads).
    pub query: Vec<(String, String)>,
    /// Header names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter named `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The request's `Content-Length` (0 when absent); `None` if it is not a number.
    pub fn content_length(&self) -> Option<usize> {
        match self.header("content-length") {
            None => Some(0),
            Some(v) => v.parse().ok(),
        }
    }
}

/// Parses an HTTP/1.x request head (up to, not including, the blank line); `None` if it is
/// not one. The request line goes through the admin listener's parser.
pub fn parse_head(head: &str) -> Option<Head> {
    let line = parse_request_line(head)?;
    let target = head.lines().next()?.split(' ').nth(1)?;
    let query = target
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect();
    let mut headers = Vec::new();
    for l in head.lines().skip(1) {
        let l = l.trim_end_matches('\r');
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Some(Head {
        method: line.method.to_string(),
        path: line.path.to_string(),
        query,
        headers,
    })
}

/// What a request path names.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/v3/clusters/{cluster}/topics/{topic}/records`
    Records { cluster: &'a str, topic: &'a str },
    /// `/v3/clusters/{cluster}/topics/{topic}/partitions/{p}/records/stream`
    Stream {
        cluster: &'a str,
        topic: &'a str,
        partition: i32,
    },
    /// `/v3/clusters/{cluster}/consumer-groups/{group}/offsets`
    GroupOffsets { cluster: &'a str, group: &'a str },
    /// `/v3/clusters/{cluster}/topics/{topic}/records/stream`: every partition of the topic.
    TopicStream { cluster: &'a str, topic: &'a str },
    /// `/v3/clusters/{cluster}/share-groups/{group}/acknowledgements`: a share stream's
    /// acknowledgements.
    ShareAcks { cluster: &'a str, group: &'a str },
    /// Anything else.
    Unknown,
}

/// Routes a request path.
pub fn route(path: &str) -> Route<'_> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["", "v3", "clusters", cluster, "topics", topic, "records"] => {
            Route::Records { cluster, topic }
        }
        ["", "v3", "clusters", cluster, "topics", topic, "partitions", p, "records", "stream"] => {
            match p.parse() {
                Ok(partition) => Route::Stream {
                    cluster,
                    topic,
                    partition,
                },
                Err(_) => Route::Unknown,
            }
        }
        ["", "v3", "clusters", cluster, "consumer-groups", group, "offsets"] => {
            Route::GroupOffsets { cluster, group }
        }
        ["", "v3", "clusters", cluster, "topics", topic, "records", "stream"] => {
            Route::TopicStream { cluster, topic }
        }
        ["", "v3", "clusters", cluster, "share-groups", group, "acknowledgements"] => {
            Route::ShareAcks { cluster, group }
        }
        _ => Route::Unknown,
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional, whitespace not allowed); `None` if malformed.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single leftover character (6 bits) cannot end valid base64.
    (bits < 6).then_some(out)
}

/// Milliseconds since the epoch as RFC 3339 UTC (`2026-12-07T10:45:00.123Z`), as the REST
/// proxy writes timestamps.
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The REST proxy's error body: `{"error_code":..,"message":..}`.
pub fn error_body(error_code: u32, message: &str) -> String {
    serde_json::json!({ "error_code": error_code, "message": message }).to_string()
}

/// The reason phrase of the status codes this listener sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        421 => "Misdirected Request",
        422 => "Unprocessable Entity",
        426 => "Upgrade Required",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    }
}

/// A whole response with a JSON body; `Connection: close`.
pub fn json_response(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    )
    .into_bytes()
}

/// Parses an SSE `Last-Event-ID` (`<partition>:<offset>`) of `partition`: the offset to
/// resume after. `None` if it is malformed or names another partition.
pub fn parse_event_id(id: &str, partition: i32) -> Option<i64> {
    let (p, o) = id.trim().split_once(':')?;
    (p.parse::<i32>().ok()? == partition)
        .then(|| o.parse::<i64>().ok())
        .flatten()
        .filter(|o| *o >= 0)
}

/// A parsed request line: method and path (query string dropped).
#[derive(Debug, PartialEq, Eq)]
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub path: &'a str,
}

/// Parses the request line of an HTTP/1.x request head; `None` if it is not one.
pub fn parse_request_line(head: &str) -> Option<RequestLine<'_>> {
    let line = head.lines().next()?;
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    Some(RequestLine { method, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_and_garbage_does_not() {
        assert_eq!(
            parse_request_line("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(RequestLine {
                method: "GET",
                path: "/metrics"
            })
        );
        assert_eq!(parse_request_line("GET /metrics\r\n\r\n"), None);
        assert_eq!(parse_request_line("GET / HTTP/2 extra\r\n"), None);
        assert_eq!(parse_request_line(""), None);
        assert_eq!(parse_request_line("\u{0}\u{1}"), None);
    }

    #[test]
    fn heads_parse_with_query_and_headers() {
        let h = parse_head(
            "GET /v3/clusters/c/topics/t/partitions/0/records/stream?offset=5&x HTTP/1.1\r\nHost: a\r\nLast-Event-ID: 0:7\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.method, "GET");
        assert_eq!(h.param("offset"), Some("5"));
        assert_eq!(h.param("x"), Some(""));
        assert_eq!(h.header("last-event-id"), Some("0:7"));
        assert_eq!(h.content_length(), Some(0));
        assert_eq!(
            route(&h.path),
            Route::Stream {
                cluster: "c",
                topic: "t",
                partition: 0
            }
        );
        assert!(parse_head("GET / HTTP/1.1\r\nno colon here\r\n\r\n").is_none());
        assert!(parse_head("\u{0}garbage").is_none());
        let h = parse_head("POST /x HTTP/1.1\r\nContent-Length: zz\r\n\r\n").unwrap();
        assert_eq!(h.content_length(), None);
    }

    #[test]
    fn routes() {
        assert_eq!(
            route("/v3/clusters/abc/topics/t1/records"),
            Route::Records {
                cluster: "abc",
                topic: "t1"
            }
        );
        assert_eq!(
            route("/v3/clusters/abc/topics/t1/partitions/x/records/stream"),
            Route::Unknown
        );
        assert_eq!(
            route("/v3/clusters/abc/consumer-groups/g/offsets"),
            Route::GroupOffsets {
                cluster: "abc",
                group: "g"
            }
        );
        assert_eq!(
            route("/v3/clusters/abc/topics/t1/records/stream"),
            Route::TopicStream {
                cluster: "abc",
                topic: "t1"
            }
        );
        assert_eq!(
            route("/v3/clusters/abc/share-groups/g/acknowledgements"),
            Route::ShareAcks {
                cluster: "abc",
                group: "g"
            }
        );
        assert_eq!(route("/"), Route::Unknown);
        assert_eq!(route(""), Route::Unknown);
    }

    #[test]
    fn base64_round_trips_and_refuses_garbage() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), coded);
            assert_eq!(base64_decode(coded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        assert!(base64_decode("Zm9v!").is_none());
        assert!(base64_decode("Z").is_none());
    }

    #[test]
    fn timestamps_format_as_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_612_552_482_123), "2021-02-05T19:14:42.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn event_ids() {
        assert_eq!(parse_event_id("0:41", 0), Some(41));
        assert_eq!(parse_event_id("1:41", 0), None);
        assert_eq!(parse_event_id("0:-1", 0), None);
        assert_eq!(parse_event_id("junk", 0), None);
    }
}
