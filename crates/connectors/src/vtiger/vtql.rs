//! Building VTQL. Values are always single-quoted with embedded quotes doubled, so a search for
//! `O'Brien` or `x' OR '1'='1` is a literal value, never syntax.
//!
//! Vtiger's lexer rejects `\'` and its treatment of other backslashes is undocumented, so a
//! value never carries one into a query: exact values with a backslash are refused, and in
//! LIKE patterns a backslash — like the wildcards `%` and `_` — becomes `_` (any one
//! character). Such a pattern matches a superset; callers filter the rows for the literal
//! term afterwards.

use std::fmt::Write;

use crmhub_core::crm::CrmError;

/// Most rows one query returns; Vtiger caps every page at 100.
pub const PAGE: u32 = 100;

/// A quoted literal for an exact comparison.
pub fn literal(value: &str) -> Result<String, CrmError> {
    if value.contains('\\') {
        return Err(CrmError::validation("value", "must not contain a backslash"));
    }
    Ok(format!("'{}'", value.replace('\'', "''")))
}

/// A quoted `LIKE` pattern matching values that contain `term` (case-insensitively on
/// Vtiger's default collation).
pub fn contains(term: &str) -> String {
    let mut out = String::with_capacity(term.len() + 4);
    out.push_str("'%");
    for c in term.chars() {
        match c {
            '\'' => out.push_str("''"),
            '%' | '_' | '\\' => out.push('_'),
            c => out.push(c),
        }
    }
    out.push_str("%'");
    out
}

/// `'%d1%d2%…%'`: matches any text containing these digits in order, whatever separators a
/// person typed between them.
pub fn digits_in_order(digits: &str) -> String {
    let mut out = String::from("'%");
    for d in digits.chars().filter(char::is_ascii_digit) {
        out.push(d);
        out.push('%');
    }
    out.push('\'');
    out
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A column or module name; anything else would be injected into the query text.
pub fn identifier(name: &str) -> Result<&str, CrmError> {
    if is_identifier(name) {
        Ok(name)
    } else {
        Err(CrmError::validation("field", format!("{name:?} is not a Vtiger field or module name")))
    }
}

#[derive(Debug, Clone)]
pub enum Cond {
    /// `column <op> <already-quoted value>`
    Compare(String, &'static str, String),
    In(String, Vec<String>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
}

impl Cond {
    pub fn eq(column: &str, value: &str) -> Result<Self, CrmError> {
        Ok(Self::Compare(identifier(column)?.to_owned(), "=", literal(value)?))
    }

    pub fn gt(column: &str, value: &str) -> Result<Self, CrmError> {
        Ok(Self::Compare(identifier(column)?.to_owned(), ">", literal(value)?))
    }

    /// `column LIKE <pattern>` where the pattern came from `contains` or `digits_in_order`.
    pub fn like(column: &str, pattern: String) -> Result<Self, CrmError> {
        Ok(Self::Compare(identifier(column)?.to_owned(), "LIKE", pattern))
    }

    pub fn is_in(column: &str, values: &[String]) -> Result<Self, CrmError> {
        let quoted = values.iter().map(|v| literal(v)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self::In(identifier(column)?.to_owned(), quoted))
    }

    fn write(&self, out: &mut String) {
        match self {
            Self::Compare(column, op, value) => {
                let _ = write!(out, "{column} {op} {value}");
            }
            Self::In(column, values) => {
                let _ = write!(out, "{column} IN ({})", values.join(","));
            }
            Self::And(parts) | Self::Or(parts) => {
                let joiner = if matches!(self, Self::And(_)) { " AND " } else { " OR " };
                out.push('(');
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        out.push_str(joiner);
                    }
                    part.write(out);
                }
                out.push(')');
            }
        }
    }
}

/// `SELECT … FROM <Module> [WHERE …] [ORDER BY …] [LIMIT offset,n];`
#[derive(Debug, Clone)]
pub struct Query {
    columns: Vec<String>,
    module: String,
    filter: Option<Cond>,
    order: Vec<(String, bool)>,
    limit: Option<(u64, u32)>,
}

impl Query {
    /// `columns` empty selects `*`.
    pub fn select(columns: &[&str], module: &str) -> Result<Self, CrmError> {
        let columns = columns.iter().map(|c| identifier(c).map(str::to_owned)).collect::<Result<_, _>>()?;
        Ok(Self { columns, module: identifier(module)?.to_owned(), filter: None, order: Vec::new(), limit: None })
    }

    pub fn count(module: &str) -> Result<Self, CrmError> {
        Ok(Self { columns: vec!["count(*)".into()], ..Self::select(&[], module)? })
    }

    pub fn filter(mut self, cond: Cond) -> Self {
        self.filter = Some(cond);
        self
    }

    pub fn order_by(mut self, column: &str, descending: bool) -> Result<Self, CrmError> {
        self.order.push((identifier(column)?.to_owned(), descending));
        Ok(self)
    }

    pub fn limit(mut self, offset: u64, rows: u32) -> Self {
        self.limit = Some((offset, rows.min(PAGE)));
        self
    }

    pub fn module(&self) -> &str {
        &self.module
    }

    pub fn render(&self) -> String {
        let mut out = String::from("SELECT ");
        out.push_str(&if self.columns.is_empty() { "*".to_owned() } else { self.columns.join(", ") });
        let _ = write!(out, " FROM {}", self.module);
        if let Some(filter) = &self.filter {
            out.push_str(" WHERE ");
            filter.write(&mut out);
        }
        if !self.order.is_empty() {
            let order: Vec<String> =
                self.order.iter().map(|(c, desc)| if *desc { format!("{c} DESC") } else { c.clone() }).collect();
            let _ = write!(out, " ORDER BY {}", order.join(", "));
        }
        if let Some((offset, rows)) = self.limit {
            let _ = write!(out, " LIMIT {offset},{rows}");
        }
        out.push(';');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled_and_injection_stays_literal() {
        assert_eq!(literal("O'Brien").unwrap(), "'O''Brien'");
        assert_eq!(literal("x' OR '1'='1").unwrap(), "'x'' OR ''1''=''1'");
        assert!(literal("a\\'b").is_err());
        assert_eq!(contains("O'Brien"), "'%O''Brien%'");
        assert_eq!(contains("50%_\\"), "'%50___%'");
        assert_eq!(digits_in_order("+84 91"), "'%8%4%9%1%'");
    }

    #[test]
    fn queries_render_with_paging_and_a_trailing_semicolon() {
        let q = Query::select(&["id", "lastname"], "Contacts")
            .unwrap()
            .filter(Cond::Or(vec![
                Cond::like("lastname", contains("red")).unwrap(),
                Cond::eq("email", "a@b.c").unwrap(),
            ]))
            .order_by("id", false)
            .unwrap()
            .limit(200, 500);
        assert_eq!(
            q.render(),
            "SELECT id, lastname FROM Contacts WHERE (lastname LIKE '%red%' OR email = 'a@b.c') ORDER BY id LIMIT 200,100;"
        );
        assert_eq!(Query::count("HelpDesk").unwrap().render(), "SELECT count(*) FROM HelpDesk;");
    }

    #[test]
    fn names_cannot_inject() {
        assert!(Query::select(&["id; DROP"], "Contacts").is_err());
        assert!(Query::select(&[], "Contacts WHERE 1").is_err());
        assert!(Cond::eq("a.b", "x").is_err());
    }
}
