//! The request and response as the rules see them, and the parsers that
//! fill the argument and cookie collections.

/// A name and its value, both raw bytes.
pub type Pair = (Vec<u8>, Vec<u8>);

/// What the WAF knows of the request.
#[derive(Debug, Default, Clone)]
pub struct RequestData {
    pub method: Vec<u8>,
    /// The request target as sent (path and query, or absolute form).
    pub uri_raw: Vec<u8>,
    /// `HTTP/1.1`.
    pub protocol: Vec<u8>,
    pub headers: Vec<Pair>,
    pub remote_addr: String,
    pub remote_port: u16,
    pub server_name: Vec<u8>,
    pub server_port: u16,
    pub body: Vec<u8>,
}

impl RequestData {
    /// The target without scheme and authority.
    pub fn uri(&self) -> &[u8] {
        let raw = self.uri_raw.as_slice();
        // Absolute form (`http://host/path`): a scheme of letters, then
        // `://`. Only the scheme's length is scanned.
        let scheme = raw.iter().take_while(|b| b.is_ascii_alphabetic()).count();
        if scheme > 0
            && let Some(rest) = raw[scheme..].strip_prefix(b"://")
        {
            return match rest.iter().position(|b| *b == b'/') {
                Some(slash) => &rest[slash..],
                None => b"/",
            };
        }
        raw
    }

    pub fn path(&self) -> &[u8] {
        let uri = self.uri();
        match uri.iter().position(|b| *b == b'?') {
            Some(q) => &uri[..q],
            None => uri,
        }
    }

    pub fn query(&self) -> &[u8] {
        let uri = self.uri();
        match uri.iter().position(|b| *b == b'?') {
            Some(q) => &uri[q + 1..],
            None => b"",
        }
    }

    /// The last path segment.
    pub fn basename(&self) -> &[u8] {
        let path = self.path();
        match path.iter().rposition(|b| *b == b'/') {
            Some(p) => &path[p + 1..],
            None => path,
        }
    }

    pub fn request_line(&self) -> Vec<u8> {
        let mut line = self.method.clone();
        line.push(b' ');
        line.extend_from_slice(&self.uri_raw);
        line.push(b' ');
        line.extend_from_slice(&self.protocol);
        line
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }
}

/// What the WAF knows of the response.
#[derive(Debug, Default, Clone)]
pub struct ResponseData {
    pub status: u16,
    pub protocol: Vec<u8>,
    pub headers: Vec<Pair>,
    pub body: Vec<u8>,
}

fn url_decode(bytes: &[u8]) -> Vec<u8> {
    crate::waf::transform::url_decode(bytes, false)
}

/// `a=1&b=2`: names and values URL-decoded; a name without `=` gets an
/// empty value; empty pieces are skipped.
pub fn parse_urlencoded(data: &[u8], separator: u8) -> Vec<Pair> {
    data.split(|b| *b == separator)
        .filter(|piece| !piece.is_empty())
        .map(|piece| match piece.iter().position(|b| *b == b'=') {
            Some(eq) => (url_decode(&piece[..eq]), url_decode(&piece[eq + 1..])),
            None => (url_decode(piece), Vec::new()),
        })
        .collect()
}

/// `Cookie: a=1; b=2`: names and values as sent (not decoded), blanks
/// around them trimmed.
pub fn parse_cookies(header: &[u8]) -> Vec<Pair> {
    header
        .split(|b| *b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|piece| !piece.is_empty())
        .map(|piece| match piece.iter().position(|b| *b == b'=') {
            Some(eq) => (piece[..eq].trim_ascii().to_vec(), piece[eq + 1..].to_vec()),
            None => (piece.to_vec(), Vec::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_and_cookies() {
        let args = parse_urlencoded(b"a=1&b=x+y%21&&flag", b'&');
        assert_eq!(
            args,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"x y!".to_vec()),
                (b"flag".to_vec(), Vec::new())
            ]
        );
        let cookies = parse_cookies(b"sid=abc; theme = dark ;x");
        assert_eq!(cookies[1], (b"theme".to_vec(), b" dark".to_vec()));
        assert_eq!(cookies.len(), 3);
    }

    #[test]
    fn uri_parts() {
        let r = RequestData {
            uri_raw: b"http://example.com/a/b.php?x=1".to_vec(),
            ..Default::default()
        };
        assert_eq!(r.uri(), b"/a/b.php?x=1");
        assert_eq!(r.path(), b"/a/b.php");
        assert_eq!(r.query(), b"x=1");
        assert_eq!(r.basename(), b"b.php");
    }
}
