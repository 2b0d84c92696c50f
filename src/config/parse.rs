//! TOML text to `RawConfig`, reporting every structural error at once.
//!
//! serde stops at the first error, so after each one the offending entry is
//! removed from the parsed document and deserialization runs again. Each
//! error keeps the span of the original text, so line numbers stay true.

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::diag::Collector;
use super::raw::RawConfig;

/// Enough for any real config; bounds the work on a hostile one.
const MAX_STRUCTURAL_ERRORS: usize = 200;

/// Returns the raw config with the bad entries left out (or `None` when the
/// text is not TOML at all); every problem is recorded in `diag`.
pub fn parse_raw(text: &str, diag: &mut Collector<'_>) -> Option<RawConfig> {
    let (doc, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        for e in syntax_errors {
            diag.error(e.span().unwrap_or(0..0), clean_message(e.message()));
        }
        return None;
    }
    let mut doc = doc;
    for _ in 0..MAX_STRUCTURAL_ERRORS {
        let deserializer = toml::de::Deserializer::from(doc.clone());
        match RawConfig::deserialize(deserializer) {
            Ok(raw) => return Some(raw),
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                diag.error(span.clone(), clean_message(e.message()));
                let root = doc.get_mut();
                if !prune_table(root, span.start) {
                    return None;
                }
            }
        }
    }
    None
}

fn clean_message(message: &str) -> String {
    message.trim().replace('\n', " ")
}

/// Removes the innermost entry of `table` that contains byte `pos`. A
/// `[section]` value's span may cover only its header, so when nothing
/// contains `pos` the search goes into the nearest table that starts before it.
fn prune_table(table: &mut DeTable<'_>, pos: usize) -> bool {
    let mut direct: Option<(String, bool)> = None;
    let mut nearest: Option<(usize, String)> = None;
    for (key, value) in table.iter() {
        let in_key = key.span().contains(&pos);
        let in_value = value.span().contains(&pos);
        if in_key || in_value {
            direct = Some((key.get_ref().to_string(), in_value && !in_key));
            break;
        }
        let start = key.span().start.min(value.span().start);
        let nested = matches!(value.get_ref(), DeValue::Table(_) | DeValue::Array(_));
        if nested && start <= pos && nearest.as_ref().is_none_or(|(s, _)| start > *s) {
            nearest = Some((start, key.get_ref().to_string()));
        }
    }
    if let Some((name, inside_value)) = direct {
        if inside_value
            && let Some(value) = table.get_mut(name.as_str())
            && prune_value(value, pos)
        {
            return true;
        }
        table.remove(name.as_str());
        return true;
    }
    match nearest {
        Some((_, name)) => table
            .get_mut(name.as_str())
            .is_some_and(|value| prune_value(value, pos)),
        None => false,
    }
}

fn prune_value(value: &mut Spanned<DeValue<'_>>, pos: usize) -> bool {
    match value.get_mut() {
        DeValue::Table(t) => prune_table(t, pos),
        DeValue::Array(items) => {
            let index = items
                .iter()
                .position(|v| v.span().contains(&pos))
                .or_else(|| {
                    // The last array-of-tables element that starts before `pos`.
                    items
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| {
                            v.span().start <= pos && matches!(v.get_ref(), DeValue::Table(_))
                        })
                        .max_by_key(|(_, v)| v.span().start)
                        .map(|(i, _)| i)
                });
            let Some(index) = index else {
                return false;
            };
            if prune_value(&mut items.as_mut()[index], pos) {
                return true;
            }
            if !items[index].span().contains(&pos) {
                return false;
            }
            let kept: DeArray<'_> = items
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != index)
                .map(|(_, v)| v.clone())
                .collect();
            *items = kept;
            true
        }
        _ => false,
    }
}
