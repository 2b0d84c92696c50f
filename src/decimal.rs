//! Integers written in decimal without the formatting machinery, for the
//! hot paths where `format!` showed in profiles: the response head's
//! `Content-Length`, a cache hit's `Cache-Status`, the WAF's `setvar`
//! arithmetic.

/// The decimal digits of a number, kept on the stack.
pub struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// `n` in decimal (`u64::MAX` has 20 digits, the buffer's size).
pub fn digits(mut n: u64) -> Digits {
    let mut d = Digits {
        buf: [0; 20],
        start: 20,
    };
    loop {
        d.start -= 1;
        d.buf[d.start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return d;
        }
    }
}

/// `n` in decimal, with its sign (`i64::MIN` has 19 digits: the sign
/// still fits the buffer).
pub fn signed(n: i64) -> Digits {
    let mut d = digits(n.unsigned_abs());
    if n < 0 {
        d.start -= 1;
        d.buf[d.start] = b'-';
    }
    d
}

/// Appends `n` in decimal, with its sign.
pub fn push_i64(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(signed(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_those_to_string_writes() {
        for n in [0, 7, 10, 65_536, 123_456_789, u64::MAX] {
            assert_eq!(digits(n).as_bytes(), n.to_string().as_bytes());
        }
    }

    #[test]
    fn signed_numbers_are_written_as_to_string_writes_them() {
        for n in [0, 7, -7, 10, -100, 600, 86_400, i64::MAX, i64::MIN] {
            let mut out = b"x".to_vec();
            push_i64(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }
}
