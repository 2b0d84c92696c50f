//! Address list files: one address or CIDR per line; blank lines and `#`
//! comments (whole-line or after the entry) are skipped. Every bad line is
//! reported with its number, all at once.

use std::net::IpAddr;

use ipnet::IpNet;

/// A line that is not an address or CIDR: its 1-based number and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub message: String,
}

/// One entry: a CIDR, or a single address (a /32 or /128).
pub fn parse_entry(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!("{text:?} is not an IP address or CIDR"))
}

/// The entries of a list file's text, or every bad line in it.
pub fn parse_list(text: &str) -> Result<Vec<IpNet>, Vec<BadLine>> {
    let mut nets = Vec::new();
    let mut bad = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        match parse_entry(entry) {
            Ok(net) => nets.push(net),
            Err(message) => bad.push(BadLine {
                line: index + 1,
                message,
            }),
        }
    }
    if bad.is_empty() { Ok(nets) } else { Err(bad) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_blanks_and_bad_lines() {
        let text = "# deny list\n203.0.113.0/24\n\n2001:db8::1  # one host\n10.0.0.300\nnot an ip\n10.1.2.3/8\n";
        let bad = parse_list(text).unwrap_err();
        assert_eq!(
            bad.iter().map(|b| b.line).collect::<Vec<_>>(),
            vec![5, 6],
            "{bad:?}"
        );
        let good = parse_list("203.0.113.0/24\n2001:db8::1 # host\n10.1.2.3/8\n").unwrap();
        assert_eq!(
            good,
            vec![
                "203.0.113.0/24".parse::<IpNet>().unwrap(),
                "2001:db8::1/128".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ]
        );
    }
}
