//! Macro expansion: `%{tx.score}`, `%{MATCHED_VAR}`, `%{REQUEST_HEADERS.host}`,
//! `%{rule.id}`. Templates are parsed once at load; expansion asks a
//! resolver for each reference and leaves unknown ones empty, as
//! ModSecurity does.

use super::seclang::ast::Var;

/// A parsed template: literal text and references, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(Vec<u8>),
    Ref(Reference),
}

/// `%{COLLECTION.key}` or `%{VARIABLE}`, resolved as far as it can be at
/// load: expansion runs in rule after rule of every transaction, so it
/// should not look names up again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Upper-cased, as written.
    pub collection: String,
    /// As written (lookups ignore its case).
    pub key: Option<String>,
    /// The variable `collection` names, if it is one.
    pub var: Option<Var>,
    /// `key` lower-cased: collections keep their names so.
    pub key_lower: Option<String>,
}

/// Where references get their values.
pub trait Resolve {
    /// Appends the first value of `reference` to `out`; nothing if it
    /// has none.
    fn resolve_into(&self, reference: &Reference, out: &mut Vec<u8>);
}

impl Template {
    pub fn parse(text: &str) -> Template {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("%{") {
            let Some(len) = rest[start + 2..].find('}') else {
                break;
            };
            if start > 0 {
                parts.push(Part::Text(rest.as_bytes()[..start].to_vec()));
            }
            let inner = &rest[start + 2..start + 2 + len];
            let (collection, key) = match inner.split_once(['.', ':']) {
                Some((c, k)) => (c, Some(k.to_string())),
                None => (inner, None),
            };
            let collection = collection.trim().to_ascii_uppercase();
            parts.push(Part::Ref(Reference {
                var: Var::from_name(&collection),
                key_lower: key.as_deref().map(str::to_ascii_lowercase),
                collection,
                key,
            }));
            rest = &rest[start + 2 + len + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.as_bytes().to_vec()));
        }
        Template { parts }
    }

    /// Whether the template has no references (its text is fixed).
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The fixed text of a template without references.
    pub fn static_text(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.parts {
            if let Part::Text(t) = p {
                out.extend_from_slice(t);
            }
        }
        out
    }

    /// The references, as (collection upper-cased, key as written).
    pub fn references(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.parts.iter().filter_map(|p| match p {
            Part::Ref(r) => Some((r.collection.as_str(), r.key.as_deref())),
            Part::Text(_) => None,
        })
    }

    /// The text before the first reference (all of it when there is none).
    pub fn leading_text(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.extend_from_slice(t),
                Part::Ref(_) => break,
            }
        }
        out
    }

    pub fn expand(&self, resolver: &dyn Resolve) -> Vec<u8> {
        // Room for the text and a short value per reference: growing from
        // nothing cost a reallocation or two per expansion in profiles.
        let room = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.len(),
                Part::Ref(_) => 16,
            })
            .sum();
        let mut out = Vec::with_capacity(room);
        self.expand_into(resolver, &mut out);
        out
    }

    /// Appends the expansion to `out`.
    pub fn expand_into(&self, resolver: &dyn Resolve, out: &mut Vec<u8>) {
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t),
                Part::Ref(r) => resolver.resolve_into(r, out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Resolve for Fixed {
        fn resolve_into(&self, r: &Reference, out: &mut Vec<u8>) {
            match (r.var, r.key_lower.as_deref()) {
                (Some(Var::Tx), Some("score")) => out.extend_from_slice(b"5"),
                (Some(Var::MatchedVar), None) => out.push(b'x'),
                _ => {}
            }
        }
    }

    #[test]
    fn expands_references_and_keeps_text() {
        let t = Template::parse("a %{tx.SCORE} b %{MATCHED_VAR} %{tx.none}!");
        assert!(!t.is_static());
        assert_eq!(t.expand(&Fixed), b"a 5 b x !");
        let s = Template::parse("plain %{ unterminated");
        assert_eq!(s.expand(&Fixed), b"plain %{ unterminated");
    }
}
