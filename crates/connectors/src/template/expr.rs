//! Value expressions: literal text with `{{ source.name | filter }}` references.
//!
//! Sources: `host`, `field.NAME`, `credential.NAME`, `auth.token`, `auth.OUTPUT`,
//! `steps.ENDPOINT.OUTPUT`, `input.NAME`, `page`, `now.unix`, `now.iso`.
//! Filters (applied left to right): `vtql` (a quoted VTQL literal), `vtql_like` (a quoted VTQL
//! `LIKE '%…%'` pattern with wildcards neutralised), `digits_like` (`'%9%1%…%'`), `digits`,
//! `lower`, `upper`, `trim`, `first_word`, `last_word` (for "First Last" searches over
//! separate name fields), `title` (`not_held` → `Not Held`: words capitalised, `_` as
//! spaces, for CRMs whose picklists spell values that way), `trailing_digits` (`12x162` →
//! `162`: the record number in a module-prefixed id), `vtql_list` (`a,b` → `('a','b')`, for
//! `IN` over a comma-separated list such as `company_ids`).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Host,
    Field(String),
    Credential(String),
    Auth(String),
    Step(String, String),
    Input(String),
    Page,
    NowUnix,
    NowIso,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host => f.write_str("host"),
            Self::Field(n) => write!(f, "field.{n}"),
            Self::Credential(n) => write!(f, "credential.{n}"),
            Self::Auth(n) => write!(f, "auth.{n}"),
            Self::Step(e, o) => write!(f, "steps.{e}.{o}"),
            Self::Input(n) => write!(f, "input.{n}"),
            Self::Page => f.write_str("page"),
            Self::NowUnix => f.write_str("now.unix"),
            Self::NowIso => f.write_str("now.iso"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Vtql,
    VtqlLike,
    VtqlList,
    DigitsLike,
    Digits,
    Lower,
    Upper,
    Trim,
    FirstWord,
    LastWord,
    Title,
    TrailingDigits,
}

impl Filter {
    fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "vtql" => Self::Vtql,
            "vtql_like" => Self::VtqlLike,
            "vtql_list" => Self::VtqlList,
            "digits_like" => Self::DigitsLike,
            "digits" => Self::Digits,
            "lower" => Self::Lower,
            "upper" => Self::Upper,
            "trim" => Self::Trim,
            "title" => Self::Title,
            "first_word" => Self::FirstWord,
            "last_word" => Self::LastWord,
            "trailing_digits" => Self::TrailingDigits,
            _ => return None,
        })
    }

    fn apply(&self, value: String) -> Result<String, String> {
        Ok(match self {
            Self::Vtql => crate::vtiger::vtql::literal(&value).map_err(|e| e.to_string())?,
            Self::VtqlLike => crate::vtiger::vtql::contains(&value),
            Self::VtqlList => {
                let items = value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| crate::vtiger::vtql::literal(v).map_err(|e| e.to_string()))
                    .collect::<Result<Vec<_>, _>>()?;
                // `IN ()` is a syntax error; an empty list matches nothing instead.
                if items.is_empty() { "('')".to_owned() } else { format!("({})", items.join(",")) }
            }
            Self::DigitsLike => digits_like(&value),
            Self::Digits => value.chars().filter(char::is_ascii_digit).collect(),
            Self::Lower => value.to_lowercase(),
            Self::Upper => value.to_uppercase(),
            Self::Trim => value.trim().to_owned(),
            Self::FirstWord => value.split_whitespace().next().unwrap_or_default().to_owned(),
            Self::LastWord => value.split_whitespace().last().unwrap_or_default().to_owned(),
            Self::TrailingDigits => {
                let digits = value.chars().rev().take_while(char::is_ascii_digit).count();
                value[value.len() - digits..].to_owned()
            }
            Self::Title => value
                .split(['_', ' '])
                .filter(|w| !w.is_empty())
                .map(|w| {
                    let mut chars = w.chars();
                    chars
                        .next()
                        .map(|c| c.to_uppercase().chain(chars.flat_map(char::to_lowercase)).collect())
                        .unwrap_or_default()
                })
                .collect::<Vec<String>>()
                .join(" "),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub source: Source,
    pub filters: Vec<Filter>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Ref(Reference),
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    parts: Vec<Part>,
}

/// Looks up sources while rendering.
pub trait Scope {
    fn lookup(&self, source: &Source) -> Option<String>;
}

impl Expr {
    pub fn literal(text: &str) -> Self {
        Self { parts: vec![Part::Text(text.to_owned())] }
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = raw;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| format!("unclosed \"{{{{\" in {raw:?}"))?;
            parts.push(Part::Ref(parse_reference(&after[..end])?));
            rest = &after[end + 2..];
        }
        if rest.contains("}}") {
            return Err(format!("\"}}}}\" without \"{{{{\" in {raw:?}"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.parts.iter().filter_map(|p| match p {
            Part::Ref(r) => Some(r),
            Part::Text(_) => None,
        })
    }

    /// The expression is exactly one reference (`"{{input.limit}}"`), so a typed value may be
    /// taken from it.
    pub fn is_single_reference(&self) -> bool {
        matches!(self.parts.as_slice(), [Part::Ref(_)])
    }

    pub fn render(&self, scope: &dyn Scope) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Ref(reference) => {
                    let mut value = scope.lookup(&reference.source).unwrap_or_default();
                    for filter in &reference.filters {
                        value = filter.apply(value).map_err(|e| format!("{}: {e}", reference.source))?;
                    }
                    out.push_str(&value);
                }
            }
        }
        Ok(out)
    }
}

/// `'%d%d%…%'` over the value's digits. With fewer than three digits a phone pattern would
/// match nearly every record, so it becomes a literal that matches none.
fn digits_like(value: &str) -> String {
    let digits: String = value.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 3 { "'crmhub:no-digits'".to_owned() } else { crate::vtiger::vtql::digits_in_order(&digits) }
}

fn parse_reference(raw: &str) -> Result<Reference, String> {
    let mut pieces = raw.split('|').map(str::trim);
    let path = pieces.next().unwrap_or_default();
    let source = parse_source(path)?;
    let filters = pieces
        .map(|f| Filter::parse(f).ok_or_else(|| format!("unknown filter {f:?} in {{{{{raw}}}}}")))
        .collect::<Result<_, _>>()?;
    Ok(Reference { source, filters })
}

fn parse_source(path: &str) -> Result<Source, String> {
    let segments: Vec<&str> = path.split('.').collect();
    let name_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let bad = || format!("unknown reference {{{{{path}}}}}");
    match segments.as_slice() {
        ["host"] => Ok(Source::Host),
        ["page"] => Ok(Source::Page),
        ["now", "unix"] => Ok(Source::NowUnix),
        ["now", "iso"] => Ok(Source::NowIso),
        ["field", n] if name_ok(n) => Ok(Source::Field((*n).to_owned())),
        ["credential", n] if name_ok(n) => Ok(Source::Credential((*n).to_owned())),
        ["auth", n] if name_ok(n) => Ok(Source::Auth((*n).to_owned())),
        ["input", n] if name_ok(n) => Ok(Source::Input((*n).to_owned())),
        ["steps", e, o] if name_ok(e) && name_ok(o) => Ok(Source::Step((*e).to_owned(), (*o).to_owned())),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Map(Vec<(Source, &'static str)>);

    impl Scope for Map {
        fn lookup(&self, source: &Source) -> Option<String> {
            self.0.iter().find(|(s, _)| s == source).map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn renders_text_and_references_with_filters() {
        let e = Expr::parse("Bearer {{auth.token}}").unwrap();
        let scope = Map(vec![(Source::Auth("token".into()), "t0k")]);
        assert_eq!(e.render(&scope).unwrap(), "Bearer t0k");
        let e = Expr::parse("WHERE lastname LIKE {{ input.query | trim | vtql_like }};").unwrap();
        let scope = Map(vec![(Source::Input("query".into()), " O'Br%n ")]);
        assert_eq!(e.render(&scope).unwrap(), "WHERE lastname LIKE '%O''Br_n%';");
        assert!(Expr::parse("{{input.q}}").unwrap().is_single_reference());
    }

    #[test]
    fn malformed_expressions_say_why() {
        assert!(Expr::parse("{{input.q").unwrap_err().contains("unclosed"));
        assert!(Expr::parse("{{secret.x}}").unwrap_err().contains("unknown reference"));
        assert!(Expr::parse("{{input.q | shout}}").unwrap_err().contains("unknown filter"));
        assert!(Expr::parse("a }} b").is_err());
    }

    #[test]
    fn vtql_lists_quote_every_item() {
        let e = Expr::parse("account_id IN {{input.ids | vtql_list}};").unwrap();
        for (ids, want) in [
            ("11x2, 11x5", "account_id IN ('11x2','11x5');"),
            ("O'Brien", "account_id IN ('O''Brien');"),
            ("", "account_id IN ('');"),
        ] {
            let scope = Map(vec![(Source::Input("ids".into()), ids)]);
            assert_eq!(e.render(&scope).unwrap(), want, "{ids}");
        }
    }

    #[test]
    fn trailing_digits_are_the_record_number() {
        let e = Expr::parse("record={{input.id | trailing_digits}}").unwrap();
        for (id, want) in [("12x162", "record=162"), ("162", "record=162"), ("12x", "record="), ("", "record=")] {
            let scope = Map(vec![(Source::Input("id".into()), id)]);
            assert_eq!(e.render(&scope).unwrap(), want, "{id}");
        }
    }

    #[test]
    fn vtql_filter_refuses_backslashes() {
        let e = Expr::parse("{{input.q | vtql}}").unwrap();
        let scope = Map(vec![(Source::Input("q".into()), "a\\'b")]);
        assert!(e.render(&scope).is_err());
    }
}
