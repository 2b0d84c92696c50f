//! Macro expansion: `%{tx.score}`, `%{MATCHED_VAR}`, `%{REQUEST_HEADERS.host}`,
//! `%{rule.id}`. Templates are parsed once at load; expansion asks a
//! resolver for each reference and leaves unknown ones empty, as
//! ModSecurity does.

/// A parsed template: literal text and references, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(Vec<u8>),
    /// `%{COLLECTION.key}` or `%{VARIABLE}`: collection upper-cased, key
    /// as written (lookups ignore its case).
    Ref {
        collection: String,
        key: Option<String>,
    },
}

/// Where references get their values.
pub trait Resolve {
    /// The first value of `collection` (and `key`), if any.
    fn resolve(&self, collection: &str, key: Option<&str>) -> Option<Vec<u8>>;
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
            parts.push(Part::Ref {
                collection: collection.trim().to_ascii_uppercase(),
                key,
            });
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
            Part::Ref { collection, key } => Some((collection.as_str(), key.as_deref())),
            Part::Text(_) => None,
        })
    }

    /// The text before the first reference (all of it when there is none).
    pub fn leading_text(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.extend_from_slice(t),
                Part::Ref { .. } => break,
            }
        }
        out
    }

    pub fn expand(&self, resolver: &dyn Resolve) -> Vec<u8> {
        let mut out = Vec::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t),
                Part::Ref { collection, key } => {
                    if let Some(v) = resolver.resolve(collection, key.as_deref()) {
                        out.extend_from_slice(&v);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Resolve for Fixed {
        fn resolve(&self, collection: &str, key: Option<&str>) -> Option<Vec<u8>> {
            match (collection, key) {
                ("TX", Some(k)) if k.eq_ignore_ascii_case("score") => Some(b"5".to_vec()),
                ("MATCHED_VAR", None) => Some(b"x".to_vec()),
                _ => None,
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
