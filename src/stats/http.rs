//! What a stats connection asked for: nothing or anything that is not an
//! HTTP request line gets the raw JSON; `/`, `/stats` and `/metrics` over
//! HTTP get their documents, other paths 404.

use super::*;

/// What a stats connection gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// The bare JSON document: the client sent nothing, or something that
    /// is not an HTTP request line (`stats\r\n`, a bare newline, binary).
    Raw,
    /// HTTP 200: the Prometheus text if `metrics`, else the JSON; no body
    /// for HEAD.
    Ok { metrics: bool, head: bool },
    /// HTTP 404 for a path other than `/`, `/stats` and `/metrics`.
    NotFound { head: bool },
    /// HTTP 405.
    BadMethod,
    /// HTTP 400: a valid request line whose headers never end within
    /// [`MAX_HEAD`].
    BadRequest,
}

/// Decides from the bytes received so far; `None` means wait for more.
/// `eof` says none will follow; `quiet_over` says the [`QUIET`] time since
/// the accept has passed. Only a complete `METHOD SP target SP HTTP/1.x`
/// line earns an HTTP answer: anything else gets the raw document, as the
/// C binary gives every client whatever it sends.
pub(super) fn classify(buf: &[u8], eof: bool, quiet_over: bool) -> Option<Answer> {
    let full = buf.len() >= MAX_HEAD;
    let (line, rest) = match buf.iter().position(|&b| b == b'\n') {
        Some(nl) => (
            buf.get(..nl).unwrap_or_default(),
            buf.get(nl + 1..).unwrap_or_default(),
        ),
        // At EOF the bytes so far are all the line there will be.
        None if eof => (buf, &[][..]),
        None if buf.is_empty() => return quiet_over.then_some(Answer::Raw),
        // Wait only while the bytes can still become a request line, and
        // not past the quiet time: `printf stats | nc` may never send a
        // newline nor close.
        None => {
            let wait = !full && !quiet_over && request_line_prefix(buf);
            return (!wait).then_some(Answer::Raw);
        }
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some((method, target)) = parse_request_line(line) else {
        return Some(Answer::Raw);
    };
    if !eof && head_end(rest).is_none() {
        return full.then_some(Answer::BadRequest);
    }
    let head = match method {
        b"GET" => false,
        b"HEAD" => true,
        _ => return Some(Answer::BadMethod),
    };
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    Some(match path {
        b"/" | b"/stats" => Answer::Ok {
            metrics: false,
            head,
        },
        b"/metrics" => Answer::Ok {
            metrics: true,
            head,
        },
        _ => Answer::NotFound { head },
    })
}

/// A method token byte (RFC 9110 `tchar`).
pub(super) fn is_tchar(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b)
}

/// A request-target byte: visible ASCII.
pub(super) fn is_target_byte(b: &u8) -> bool {
    (0x21..0x7f).contains(b)
}

/// `METHOD SP target SP HTTP/1.x` -> (method, target).
pub(super) fn parse_request_line(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    if method.is_empty() || !method.iter().all(is_tchar) {
        return None;
    }
    if target.is_empty() || !target.iter().all(is_target_byte) {
        return None;
    }
    if version != b"HTTP/1.0" && version != b"HTTP/1.1" {
        return None;
    }
    Some((method, target))
}

/// True when `buf` (no newline in it) can still be completed into a
/// request line that [`parse_request_line`] accepts.
pub(super) fn request_line_prefix(buf: &[u8]) -> bool {
    let buf = match buf.strip_suffix(b"\r") {
        // A CR may only follow a complete version.
        Some(rest) => return parse_request_line(rest).is_some(),
        None => buf,
    };
    let mut parts = buf.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let (target, version) = (parts.next(), parts.next());
    if parts.next().is_some() || !method.iter().all(is_tchar) {
        return false;
    }
    let Some(target) = target else {
        return true;
    };
    if method.is_empty() || !target.iter().all(is_target_byte) {
        return false;
    }
    let Some(version) = version else {
        return true;
    };
    !target.is_empty() && (b"HTTP/1.0".starts_with(version) || b"HTTP/1.1".starts_with(version))
}

/// Offset just past the blank line that ends the headers in `rest` (the
/// bytes after the request line), or `None` if it has not arrived.
pub(super) fn head_end(rest: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(nl) = rest.get(start..)?.iter().position(|&b| b == b'\n') {
        let line = rest.get(start..start + nl)?;
        if line.is_empty() || line == b"\r" {
            return Some(start + nl + 1);
        }
        start += nl + 1;
    }
    None
}

pub(super) fn http_response(
    status: &str,
    extra_headers: &str,
    content_type: &str,
    body: &[u8],
    head: bool,
) -> Vec<u8> {
    let top = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        body.len()
    );
    let mut out = Vec::with_capacity(top.len() + body.len());
    out.extend_from_slice(top.as_bytes());
    if !head {
        out.extend_from_slice(body);
    }
    out
}
