//! The WAF engine: SecLang rules (the ModSecurity language, so OWASP CRS
//! runs unmodified), compiled once and evaluated per transaction.
//!
//! `seclang` reads rule files, `transform` holds the transformations.

pub mod collections;
pub mod fold;
pub mod macros;
pub mod operator;
pub mod prefilter;
pub mod rule;
pub mod seclang;
pub mod transform;
pub mod tx;
