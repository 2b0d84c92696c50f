//! MaxMind databases (`.mmdb`): the country and the autonomous system of an
//! address. Read whole into memory at start and on reload; a lookup that
//! fails or finds nothing is "unknown", never an error on the request path.

use std::net::IpAddr;
use std::path::Path;

use maxminddb::{Reader, geoip2};

/// An ISO 3166-1 alpha-2 country code: two ASCII capitals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// The code in `text` (any case), if it is two ASCII letters.
    pub fn parse(text: &str) -> Option<CountryCode> {
        match text.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => Some(CountryCode([
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
            ])),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        // Two ASCII letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

/// An opened database.
pub struct GeoDb {
    reader: Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("type", &self.reader.metadata().database_type)
            .finish()
    }
}

impl GeoDb {
    pub fn open(path: &Path) -> Result<GeoDb, String> {
        Reader::open_readfile(path)
            .map(|reader| GeoDb { reader })
            .map_err(|e| format!("{}: not a MaxMind database: {e}", path.display()))
    }

    /// The country of `ip` (Country and City databases).
    pub fn country(&self, ip: IpAddr) -> Option<CountryCode> {
        let found = self.reader.lookup(ip.to_canonical()).ok()?;
        let record: geoip2::Country<'_> = found.decode().ok()??;
        record.country.iso_code.and_then(CountryCode::parse)
    }

    /// The autonomous system number of `ip` (ASN databases).
    pub fn asn(&self, ip: IpAddr) -> Option<u32> {
        let found = self.reader.lookup(ip.to_canonical()).ok()?;
        let record: geoip2::Asn<'_> = found.decode().ok()??;
        record.autonomous_system_number
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_codes_are_two_letters_in_capitals() {
        assert_eq!(
            CountryCode::parse("jp").map(|c| c.as_str().to_string()),
            Some("JP".into())
        );
        assert!(CountryCode::parse("JPN").is_none());
        assert!(CountryCode::parse("J1").is_none());
        assert!(CountryCode::parse("").is_none());
    }
}
