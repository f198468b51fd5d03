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

    /// The condition as a sum of products: a list of alternatives, each a list of comparisons
    /// that must all hold. Vtiger 8.2's VTQL has no grouping parentheses (contract §6), but
    /// `AND` binds tighter than `OR`, so every condition can be written flat in this form.
    fn sum_of_products(&self) -> Vec<Vec<String>> {
        match self {
            Self::Compare(column, op, value) => vec![vec![format!("{column} {op} {value}")]],
            Self::In(column, values) => vec![vec![format!("{column} IN ({})", values.join(","))]],
            Self::Or(parts) => {
                let mut out: Vec<Vec<String>> = Vec::new();
                for product in parts.iter().flat_map(Self::sum_of_products) {
                    if !out.contains(&product) {
                        out.push(product);
                    }
                }
                out
            }
            Self::And(parts) => {
                let mut out: Vec<Vec<String>> = vec![Vec::new()];
                for part in parts {
                    let alternatives = part.sum_of_products();
                    let mut next = Vec::with_capacity(out.len() * alternatives.len());
                    for prefix in &out {
                        for alternative in &alternatives {
                            let mut product = prefix.clone();
                            for term in alternative {
                                if !product.contains(term) {
                                    product.push(term.clone());
                                }
                            }
                            if !next.contains(&product) {
                                next.push(product);
                            }
                        }
                    }
                    out = next;
                }
                out
            }
        }
    }

    /// Writes the condition as its sum of products.
    fn write_products(products: &[Vec<String>], out: &mut String) {
        for (i, product) in products.iter().enumerate() {
            if i > 0 {
                out.push_str(" OR ");
            }
            out.push_str(&product.join(" AND "));
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
        // A product with no terms is always true: no WHERE at all.
        let products = self.filter.as_ref().map(Cond::sum_of_products).filter(|ps| ps.iter().all(|p| !p.is_empty()));
        if let Some(products) = products {
            out.push_str(" WHERE ");
            Cond::write_products(&products, &mut out);
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

/// A recogniser for the VTQL that Vtiger 8.2 parses (contract §6), so that tests can check
/// every query the connectors build without a Vtiger at hand.
#[cfg(test)]
pub(crate) mod grammar {
    #[derive(Debug, PartialEq)]
    enum Tok {
        Word(String),
        Value,
        Punct(char),
        Op,
    }

    fn lex(input: &str) -> Result<Vec<Tok>, String> {
        let chars: Vec<char> = input.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if c.is_ascii_alphabetic() || c == '_' {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                if chars.get(i) == Some(&'.') {
                    return Err("a dotted reference path".into());
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            } else if c.is_ascii_digit() {
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                out.push(Tok::Value);
            } else if c == '\'' {
                i += 1;
                let mut empty = true;
                loop {
                    match chars.get(i) {
                        None => return Err("an unterminated string".into()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => i += 2,
                        Some('\'') => break,
                        Some('\\') if chars.get(i + 1) == Some(&'\'') => return Err("a backslash-escaped quote".into()),
                        Some(_) => i += 1,
                    }
                    empty = false;
                }
                if empty {
                    return Err("an empty string literal (Vtiger fails on it)".into());
                }
                i += 1;
                out.push(Tok::Value);
            } else if matches!(c, '=' | '<' | '>' | '!') {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                if ["<=", ">=", "!="].contains(&two.as_str()) {
                    i += 2;
                } else if c == '!' || two == "<>" {
                    return Err(format!("the operator {two:?}"));
                } else {
                    i += 1;
                }
                out.push(Tok::Op);
            } else if matches!(c, ',' | '(' | ')' | '*' | ';') {
                out.push(Tok::Punct(c));
                i += 1;
            } else {
                return Err(format!("the character {c:?}"));
            }
        }
        Ok(out)
    }

    const KEYWORDS: &[&str] =
        &["select", "from", "where", "order", "by", "limit", "and", "or", "in", "like", "asc", "desc", "not", "is"];

    struct P {
        toks: Vec<Tok>,
        at: usize,
    }

    impl P {
        fn word(&mut self, kw: &str) -> bool {
            let hit = matches!(self.toks.get(self.at), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw));
            self.at += usize::from(hit);
            hit
        }
        fn expect(&mut self, kw: &str) -> Result<(), String> {
            if self.word(kw) { Ok(()) } else { Err(format!("expected {kw} at token {}", self.at)) }
        }
        fn punct(&mut self, c: char) -> bool {
            let hit = self.toks.get(self.at) == Some(&Tok::Punct(c));
            self.at += usize::from(hit);
            hit
        }
        fn tok(&mut self, t: &Tok) -> bool {
            let hit = self.toks.get(self.at) == Some(t);
            self.at += usize::from(hit);
            hit
        }
        fn name(&mut self) -> Result<(), String> {
            match self.toks.get(self.at) {
                Some(Tok::Word(w)) if !KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(w)) => {
                    self.at += 1;
                    Ok(())
                }
                other => Err(format!("expected a column name at token {}, found {other:?}", self.at)),
            }
        }
        fn condition(&mut self) -> Result<(), String> {
            if self.toks.get(self.at) == Some(&Tok::Punct('(')) {
                return Err("a grouping parenthesis".into());
            }
            self.name()?;
            if self.tok(&Tok::Op) || self.word("like") {
                return if self.tok(&Tok::Value) { Ok(()) } else { Err(format!("expected a value at {}", self.at)) };
            }
            if self.word("in") {
                if !self.punct('(') {
                    return Err("IN without its list".into());
                }
                loop {
                    if !self.tok(&Tok::Value) {
                        return Err("expected a value in IN (…)".into());
                    }
                    if self.punct(')') {
                        return Ok(());
                    }
                    if !self.punct(',') {
                        return Err("expected , or ) in IN (…)".into());
                    }
                }
            }
            Err(format!("expected an operator at token {}", self.at))
        }
    }

    /// `Ok` when Vtiger 8.2 would parse `query`; otherwise what it would refuse.
    pub(crate) fn check(query: &str) -> Result<(), String> {
        let mut p = P { toks: lex(query)?, at: 0 };
        p.expect("select")?;
        if p.word("count") {
            if !(p.punct('(') && p.punct('*') && p.punct(')')) {
                return Err("count must be count(*)".into());
            }
        } else if !p.punct('*') {
            p.name()?;
            while p.punct(',') {
                p.name()?;
            }
        }
        p.expect("from")?;
        p.name()?;
        if p.word("where") {
            p.condition()?;
            while p.word("and") || p.word("or") {
                p.condition()?;
            }
        }
        if p.word("order") {
            p.expect("by")?;
            loop {
                p.name()?;
                let _ = p.word("asc") || p.word("desc");
                if !p.punct(',') {
                    break;
                }
            }
        }
        if p.word("limit") {
            if !p.tok(&Tok::Value) {
                return Err("LIMIT needs a number".into());
            }
            if p.punct(',') && !p.tok(&Tok::Value) {
                return Err("LIMIT offset, needs a count".into());
            }
        }
        if !p.punct(';') {
            return Err(format!("expected ; at token {}", p.at));
        }
        if p.at != p.toks.len() {
            return Err("text after ;".into());
        }
        Ok(())
    }

    #[test]
    fn the_recogniser_refuses_what_vtiger_refuses() {
        let ok = [
            "SELECT id,lastname FROM Contacts WHERE firstname LIKE '%Susan%' AND lastname LIKE '%Red%' OR lastname LIKE '%Brien%';",
            "SELECT id,lastname FROM Contacts WHERE lastname IN ('Red','Redford');",
            "SELECT id,lastname FROM Contacts WHERE lastname = 'O''Brien';",
            "select id,lastname from Contacts where lastname = 'Red';",
            "SELECT count(*) FROM Contacts WHERE lastname = 'Bulk';",
            "SELECT id FROM Contacts WHERE lastname = 'Bulk' ORDER BY lastname, id LIMIT 100,100;",
            "SELECT id,lastname FROM Contacts WHERE lastname != 'Bulk' ORDER BY id DESC LIMIT 3;",
        ];
        for q in ok {
            check(q).unwrap_or_else(|e| panic!("{e}: {q}"));
        }
        let refused = [
            "SELECT id,lastname FROM Contacts WHERE (lastname LIKE '%Red%');",
            "SELECT id,lastname FROM Contacts WHERE lastname LIKE '%Red%' AND (firstname LIKE '%Susan%');",
            "SELECT id,lastname FROM Contacts WHERE lastname = 'O\\'Brien';",
            "SELECT id,lastname FROM Contacts WHERE lastname = \"Red\";",
            "SELECT id,lastname FROM Contacts WHERE lastname = 'Red'",
            "SELECT id,account_id.accountname FROM Contacts WHERE lastname = 'Red';",
            "SELECT id,lastname FROM Contacts WHERE lastname <> 'Bulk' LIMIT 3;",
            "SELECT id,lastname FROM Contacts WHERE lastname NOT LIKE '%Bulk%' LIMIT 3;",
            "SELECT id,lastname FROM Contacts WHERE lastname IS NULL;",
            "SELECT id,lastname FROM Contacts WHERE lastname = '';",
        ];
        for q in refused {
            assert!(check(q).is_err(), "accepted: {q}");
        }
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
            "SELECT id, lastname FROM Contacts WHERE lastname LIKE '%red%' OR email = 'a@b.c' ORDER BY id LIMIT 200,100;"
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
