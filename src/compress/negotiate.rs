//! Accept-Encoding negotiation (RFC 9110 §12.5.3): q-values, `*`, `q=0`
//! exclusions, and the server's own order of preference among codings the
//! client rates equally.

use http::HeaderValue;

use super::Coding;

/// The coding to send, given the request's Accept-Encoding lines: the
/// client's highest-rated one among `offered` (ties go to the earlier in
/// `offered`), or `None` for identity. No Accept-Encoding at all gets
/// identity: RFC 9110 allows any coding then, but clients that send none
/// are mostly tools that would not decode one.
pub fn choose(lines: &[HeaderValue], offered: &[Coding]) -> Option<Coding> {
    if lines.is_empty() {
        return None;
    }
    let mut star: Option<u16> = None;
    let mut rated: Vec<(Coding, u16)> = Vec::new();
    for line in lines {
        let Ok(text) = line.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim();
            if token.is_empty() {
                continue;
            }
            let q = parts
                .find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("q").then(|| qvalue(v.trim()))
                })
                .unwrap_or(Some(1000));
            // A malformed q-value makes the item unusable, not preferred.
            let Some(q) = q else { continue };
            if token == "*" {
                star.get_or_insert(q);
            } else if let Some(coding) = Coding::from_token(token)
                && !rated.iter().any(|(c, _)| *c == coding)
            {
                rated.push((coding, q));
            }
        }
    }
    let mut best: Option<(Coding, u16)> = None;
    for &coding in offered {
        let q = rated
            .iter()
            .find(|(c, _)| *c == coding)
            .map(|(_, q)| *q)
            .or(star)
            .unwrap_or(0);
        if q > 0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((coding, q));
        }
    }
    best.map(|(c, _)| c)
}

/// A qvalue (`0`, `0.5`, `1.000`) in thousandths; `None` when malformed.
pub fn qvalue(text: &str) -> Option<u16> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths = 0u16;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(accept: &str) -> Option<Coding> {
        let lines = [HeaderValue::from_str(accept).unwrap()];
        choose(&lines, &[Coding::Brotli, Coding::Zstd, Coding::Gzip])
    }

    #[test]
    fn the_q_value_matrix() {
        assert_eq!(pick("gzip"), Some(Coding::Gzip));
        assert_eq!(
            pick("gzip, br"),
            Some(Coding::Brotli),
            "server order breaks ties"
        );
        assert_eq!(pick("br;q=0.5, gzip"), Some(Coding::Gzip));
        assert_eq!(pick("br;q=0, gzip;q=0.1"), Some(Coding::Gzip));
        assert_eq!(pick("*"), Some(Coding::Brotli));
        assert_eq!(pick("*;q=0.5, br;q=0"), Some(Coding::Zstd));
        assert_eq!(pick("gzip;q=0, *;q=0"), None);
        assert_eq!(pick("identity"), None);
        assert_eq!(pick(""), None);
        assert_eq!(pick("GZIP;Q=1.0"), Some(Coding::Gzip));
        assert_eq!(pick("x-gzip"), Some(Coding::Gzip));
        assert_eq!(pick("zstd;q=0.9, gzip;q=0.8"), Some(Coding::Zstd));
    }

    #[test]
    fn malformed_q_values_do_not_win() {
        assert_eq!(pick("br;q=2, gzip"), Some(Coding::Gzip));
        assert_eq!(pick("br;q=0.5555, gzip;q=0.1"), Some(Coding::Gzip));
        assert_eq!(pick("br;q=abc"), None);
    }

    #[test]
    fn no_accept_encoding_means_identity() {
        assert_eq!(choose(&[], &[Coding::Gzip]), None);
    }
}
