//! VTQL (contract §6 and the end of §10): a lexer, a recursive-descent parser and an evaluator.
//!
//! The parser mirrors the observable behaviour of Vtiger's LALR parser: checks run in the order
//! the grammar reduces (module right after `FROM <Module>`, select-list columns with it, WHERE
//! columns as each condition is read, the mandatory `;` last), the lexer only runs as far as the
//! parser reads, and syntax errors use the parser generator's message shape
//! (`Syntax Error on line N: token 'T' Unexpected NAME(VALUE), expected one of: A,B`). Where the
//! optional clauses could follow, the real parser first reduces them away, so the only token it
//! still expects there is `SEMICOLON`; that is reproduced too.

use std::cmp::Ordering;

use super::error::{self, Failure, WsResult};
use super::json::Out;
use super::modules::{self, FieldType, Schema};
use super::records::{Fields, parse_ws_id, render};

/// Vtiger never returns more rows than this from one `query` call.
pub(crate) const MAX_ROWS: u64 = 100;

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Number(String),
    Str(String),
    Comma,
    LParen,
    RParen,
    Star,
    Semi,
    Op(CmpOp),
    /// Input the lexer cannot read; a syntax error once the parser gets there.
    BadSyntax,
    /// Input that makes Vtiger fail outside the parser (double quotes, dotted reference
    /// paths): `INTERNAL_SERVER_ERROR` once the parser gets there.
    BadInternal,
    Eof,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// The source text of the token, as the error message quotes it.
    text: String,
    line: u32,
}

fn lex(input: &str) -> Vec<Token> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let slice = |a: usize, b: usize| chars[a..b].iter().collect::<String>();
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let tok = match c {
            '\n' => {
                line += 1;
                i += 1;
                continue;
            }
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                if chars.get(i) == Some(&'.') {
                    i += 1;
                    Tok::BadInternal
                } else {
                    Tok::Ident(slice(start, i))
                }
            }
            c if c.is_ascii_digit() => {
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                    i += 1;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                Tok::Number(slice(start, i))
            }
            '\'' => lex_string(&chars, &mut i),
            '"' => {
                i += 1;
                Tok::BadInternal
            }
            ',' | '(' | ')' | '*' | ';' | '=' => {
                i += 1;
                match c {
                    ',' => Tok::Comma,
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    '*' => Tok::Star,
                    ';' => Tok::Semi,
                    _ => Tok::Op(CmpOp::Eq),
                }
            }
            '<' | '>' | '!' => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('<', Some('=')) => (Some(CmpOp::Le), 2),
                    ('<', Some('>')) => (Some(CmpOp::Ne), 2),
                    ('>', Some('=')) => (Some(CmpOp::Ge), 2),
                    ('!', Some('=')) => (Some(CmpOp::Ne), 2),
                    ('<', _) => (Some(CmpOp::Lt), 1),
                    ('>', _) => (Some(CmpOp::Gt), 1),
                    _ => (None, 1),
                };
                i += len;
                op.map_or(Tok::BadSyntax, Tok::Op)
            }
            _ => {
                i += 1;
                Tok::BadSyntax
            }
        };
        let bad = matches!(tok, Tok::BadSyntax | Tok::BadInternal);
        tokens.push(Token { tok, text: slice(start, i), line });
        if bad {
            // Nothing after an unreadable token can be reached by the parser.
            break;
        }
    }
    tokens.push(Token { tok: Tok::Eof, text: String::new(), line });
    tokens
}

/// A single-quoted literal starting at `chars[*i]`. `''` is an embedded quote; a backslash is an
/// ordinary character except before a quote, where Vtiger fails with a syntax error.
fn lex_string(chars: &[char], i: &mut usize) -> Tok {
    let mut value = String::new();
    *i += 1;
    loop {
        match chars.get(*i) {
            None => return Tok::BadSyntax,
            Some('\'') if chars.get(*i + 1) == Some(&'\'') => {
                value.push('\'');
                *i += 2;
            }
            Some('\'') => {
                *i += 1;
                return Tok::Str(value);
            }
            Some('\\') if chars.get(*i + 1) == Some(&'\'') => {
                *i += 2;
                return Tok::BadSyntax;
            }
            Some(c) => {
                value.push(*c);
                *i += 1;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AST

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Selection {
    All,
    Count,
    Columns(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Cmp { column: String, op: CmpOp, value: String },
    In { column: String, values: Vec<String> },
    Like { column: String, pattern: String },
}

#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub(crate) selection: Selection,
    pub(crate) schema: &'static Schema,
    pub(crate) filter: Option<Cond>,
    /// `(column, descending)`.
    pub(crate) order: Vec<(String, bool)>,
    /// `(offset, count)` as written, before the row cap.
    pub(crate) limit: Option<(u64, u64)>,
}

// ---------------------------------------------------------------------------------------------
// Parser

const KEYWORDS: &[&str] =
    &["SELECT", "FROM", "WHERE", "ORDER", "BY", "LIMIT", "AND", "OR", "IN", "LIKE", "ASC", "DESC"];

/// After a complete clause the real parser reduces the optional clauses away, leaving `;` as the
/// only expected token.
const AFTER_CLAUSE: &[&str] = &["SEMICOLON"];

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

pub(crate) fn parse(input: &str) -> WsResult<Query> {
    let mut p = Parser { tokens: lex(input), pos: 0 };
    p.query()
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.pos).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        self.tokens.get(self.pos + ahead).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn bump(&mut self) {
        self.pos += 1;
    }

    fn at_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(w) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        let hit = self.at_keyword(kw);
        if hit {
            self.bump();
        }
        hit
    }

    fn expect_keyword(&mut self, kw: &str, expected: &[&str]) -> WsResult<()> {
        if self.eat_keyword(kw) { Ok(()) } else { Err(self.unexpected(expected)) }
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        let hit = self.peek() == tok;
        if hit {
            self.bump();
        }
        hit
    }

    /// A non-keyword identifier (column or module name).
    fn name(&mut self, expected: &[&str]) -> WsResult<String> {
        match self.peek() {
            Tok::Ident(w) if !is_keyword(w) => {
                let w = w.clone();
                self.bump();
                Ok(w)
            }
            _ => Err(self.unexpected(expected)),
        }
    }

    fn unexpected(&self, expected: &[&str]) -> Failure {
        let Some(token) = self.tokens.get(self.pos) else {
            return error::internal_error();
        };
        let (shown, name, value) = match &token.tok {
            Tok::BadInternal => return error::internal_error(),
            Tok::Eof => {
                // The lexer's value is still the last token read.
                let last = self.pos.checked_sub(1).and_then(|i| self.tokens.get(i)).map_or("", |t| t.text.as_str());
                (last.to_owned(), "End of Input".to_owned(), "0".to_owned())
            }
            tok => {
                let name = match tok {
                    Tok::Ident(w) if is_keyword(w) => w.to_ascii_uppercase(),
                    // At the start the lexer only knows SELECT; any other word is unknown.
                    Tok::Ident(_) if self.pos == 0 => "Unknown".into(),
                    Tok::Ident(_) => "COLUMNNAME".into(),
                    Tok::Number(_) | Tok::Str(_) => "VALUE".into(),
                    Tok::Comma => "COMMA".into(),
                    Tok::LParen => "PARENOPEN".into(),
                    Tok::RParen => "PARENCLOSE".into(),
                    Tok::Star => "ASTERISK".into(),
                    Tok::Semi => "SEMICOLON".into(),
                    Tok::Op(op) => op_token_name(*op).into(),
                    Tok::BadSyntax | Tok::BadInternal | Tok::Eof => "Unknown".into(),
                };
                (token.text.clone(), name, token.text.clone())
            }
        };
        error::syntax_error(format!(
            "Syntax Error on line {}: token '{shown}' Unexpected {name}({value}), expected one of: {}",
            token.line,
            expected.join(",")
        ))
    }

    fn query(&mut self) -> WsResult<Query> {
        self.expect_keyword("SELECT", &["SELECT"])?;
        let selection = self.selection()?;
        let after_select: &[&str] =
            if matches!(selection, Selection::Columns(_)) { &["COMMA", "FROM"] } else { &["FROM"] };
        self.expect_keyword("FROM", after_select)?;
        let module = self.name(&["TABLENAME"])?;
        let schema = modules::by_name(&module).ok_or_else(|| error::denied_for_name(&module))?;
        if let Selection::Columns(columns) = &selection {
            if let Some(bad) = columns.iter().find(|c| !is_column(schema, c)) {
                return Err(error::denied_select_column(bad));
            }
        }
        let filter = if self.eat_keyword("WHERE") { Some(self.or_cond(schema)?) } else { None };
        let mut order = Vec::new();
        if self.eat_keyword("ORDER") {
            self.expect_keyword("BY", &["BY"])?;
            loop {
                let column = self.name(&["COLUMNNAME"])?;
                if !is_column(schema, &column) {
                    return Err(error::denied_where_column(&column));
                }
                let descending = if self.eat_keyword("DESC") {
                    true
                } else {
                    self.eat_keyword("ASC");
                    false
                };
                order.push((column, descending));
                if !self.eat(&Tok::Comma) {
                    break;
                }
            }
        }
        let limit = if self.eat_keyword("LIMIT") {
            let first = self.number()?;
            if self.eat(&Tok::Comma) { Some((first, self.number()?)) } else { Some((0, first)) }
        } else {
            None
        };
        if !self.eat(&Tok::Semi) {
            return Err(self.unexpected(AFTER_CLAUSE));
        }
        if *self.peek() != Tok::Eof {
            return Err(self.unexpected(&["End of Input"]));
        }
        Ok(Query { selection, schema, filter, order, limit })
    }

    fn selection(&mut self) -> WsResult<Selection> {
        if self.eat(&Tok::Star) {
            return Ok(Selection::All);
        }
        if self.at_keyword("count") && *self.peek_at(1) == Tok::LParen {
            self.bump();
            self.bump();
            if !self.eat(&Tok::Star) {
                return Err(self.unexpected(&["ASTERISK"]));
            }
            if !self.eat(&Tok::RParen) {
                return Err(self.unexpected(&["PARENCLOSE"]));
            }
            return Ok(Selection::Count);
        }
        let mut columns = vec![self.name(&["COLUMNNAME", "ASTERISK", "COUNT"])?];
        while self.eat(&Tok::Comma) {
            columns.push(self.name(&["COLUMNNAME"])?);
        }
        Ok(Selection::Columns(columns))
    }

    fn number(&mut self) -> WsResult<u64> {
        match self.peek() {
            Tok::Number(n) if n.bytes().all(|b| b.is_ascii_digit()) => {
                // Out-of-range limits saturate rather than fail; they are capped anyway.
                let v = n.parse::<u64>().unwrap_or(u64::MAX);
                self.bump();
                Ok(v)
            }
            _ => Err(self.unexpected(&["VALUE"])),
        }
    }

    fn or_cond(&mut self, schema: &Schema) -> WsResult<Cond> {
        let mut left = self.and_cond(schema)?;
        while self.eat_keyword("OR") {
            let right = self.and_cond(schema)?;
            left = Cond::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_cond(&mut self, schema: &Schema) -> WsResult<Cond> {
        let mut left = self.primary(schema)?;
        while self.eat_keyword("AND") {
            let right = self.primary(schema)?;
            left = Cond::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn primary(&mut self, schema: &Schema) -> WsResult<Cond> {
        if self.eat(&Tok::LParen) {
            let inner = self.or_cond(schema)?;
            if !self.eat(&Tok::RParen) {
                return Err(self.unexpected(&["PARENCLOSE"]));
            }
            return Ok(inner);
        }
        let column = self.name(&["COLUMNNAME", "PARENOPEN"])?;
        if !is_column(schema, &column) {
            return Err(error::denied_where_column(&column));
        }
        if let Tok::Op(op) = *self.peek() {
            self.bump();
            let value = self.value()?;
            return Ok(Cond::Cmp { column, op, value });
        }
        if self.eat_keyword("LIKE") {
            let pattern = self.value()?;
            return Ok(Cond::Like { column, pattern });
        }
        if self.eat_keyword("IN") {
            if !self.eat(&Tok::LParen) {
                return Err(self.unexpected(&["PARENOPEN"]));
            }
            let mut values = vec![self.value()?];
            while self.eat(&Tok::Comma) {
                values.push(self.value()?);
            }
            if !self.eat(&Tok::RParen) {
                return Err(self.unexpected(&["COMMA", "PARENCLOSE"]));
            }
            return Ok(Cond::In { column, values });
        }
        Err(self.unexpected(&["EQ", "NE", "LT", "GT", "LTE", "GTE", "LIKE", "IN"]))
    }

    fn value(&mut self) -> WsResult<String> {
        match self.peek() {
            Tok::Str(s) | Tok::Number(s) => {
                let s = s.clone();
                self.bump();
                Ok(s)
            }
            _ => Err(self.unexpected(&["VALUE"])),
        }
    }
}

fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

fn op_token_name(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "EQ",
        CmpOp::Ne => "NE",
        CmpOp::Lt => "LT",
        CmpOp::Gt => "GT",
        CmpOp::Le => "LTE",
        CmpOp::Ge => "GTE",
    }
}

fn is_column(schema: &Schema, column: &str) -> bool {
    column == "id" || schema.field(column).is_some()
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/// How a column compares: ids and references by crmid, numbers numerically, dates as datetimes,
/// everything else as text under a case-insensitive collation (MySQL's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Id,
    Reference,
    Numeric,
    Temporal,
    Text,
}

fn kind(schema: &Schema, column: &str) -> Kind {
    if column == "id" {
        return Kind::Id;
    }
    match schema.field(column).map(|f| f.ty) {
        Some(FieldType::Reference | FieldType::Owner) => Kind::Reference,
        Some(t) if t.is_numeric() => Kind::Numeric,
        Some(FieldType::Date | FieldType::DateTime) => Kind::Temporal,
        _ => Kind::Text,
    }
}

/// One row being evaluated: its crmid and its stored fields.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row<'a> {
    pub(crate) crmid: u64,
    pub(crate) fields: &'a Fields,
}

impl Row<'_> {
    fn value(&self, schema: &Schema, column: &str) -> String {
        if column == "id" {
            format!("{}x{}", schema.prefix, self.crmid)
        } else {
            self.fields.get(column).cloned().unwrap_or_default()
        }
    }
}

/// Case-insensitive, trailing-space-insensitive text key (MySQL `PAD SPACE` collations).
fn text_key(s: &str) -> String {
    s.trim_end_matches(' ').to_lowercase()
}

/// A date compares equal to midnight of that day, as MySQL converts it.
fn temporal_key(s: &str) -> String {
    let s = s.trim();
    if s.len() == 10 { format!("{s} 00:00:00") } else { s.to_owned() }
}

fn crmid_of(stored: &str) -> u64 {
    parse_ws_id(stored).map_or(0, |(_, id)| id)
}

/// `stored <op> literal`, or `None` when the comparison is SQL NULL (never true).
fn compare(kind: Kind, stored: &str, literal: &str) -> Option<Ordering> {
    match kind {
        Kind::Id | Kind::Reference => {
            // The literal's prefix is dropped, as Vtiger converts it to a crmid.
            let (_, wanted) = parse_ws_id(literal.trim())?;
            Some(crmid_of(stored).cmp(&wanted))
        }
        Kind::Numeric => match (stored.trim().parse::<f64>(), literal.trim().parse::<f64>()) {
            (Ok(a), Ok(b)) => a.partial_cmp(&b),
            _ => Some(text_key(stored).cmp(&text_key(literal))),
        },
        Kind::Temporal => Some(temporal_key(stored).cmp(&temporal_key(literal))),
        Kind::Text => Some(text_key(stored).cmp(&text_key(literal))),
    }
}

/// SQL `LIKE`: `%` any run, `_` one character, case-insensitive, no padding.
fn like(value: &str, pattern: &str) -> bool {
    let v: Vec<char> = value.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    // Iterative matcher with backtracking to the last `%`.
    let (mut vi, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        match p.get(pi) {
            Some('%') => {
                star = Some((pi, vi));
                pi += 1;
            }
            Some('_') => {
                vi += 1;
                pi += 1;
            }
            Some(c) if *c == v[vi] => {
                vi += 1;
                pi += 1;
            }
            _ => match star {
                Some((sp, sv)) => {
                    pi = sp + 1;
                    vi = sv + 1;
                    star = Some((sp, sv + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '%')
}

fn matches(cond: &Cond, schema: &Schema, row: &Row<'_>) -> bool {
    match cond {
        Cond::And(a, b) => matches(a, schema, row) && matches(b, schema, row),
        Cond::Or(a, b) => matches(a, schema, row) || matches(b, schema, row),
        Cond::Cmp { column, op, value } => {
            let stored = row.value(schema, column);
            let Some(ord) = compare(kind(schema, column), &stored, value) else {
                return false;
            };
            match op {
                CmpOp::Eq => ord == Ordering::Equal,
                CmpOp::Ne => ord != Ordering::Equal,
                CmpOp::Lt => ord == Ordering::Less,
                CmpOp::Gt => ord == Ordering::Greater,
                CmpOp::Le => ord != Ordering::Greater,
                CmpOp::Ge => ord != Ordering::Less,
            }
        }
        Cond::In { column, values } => {
            let stored = row.value(schema, column);
            let k = kind(schema, column);
            values.iter().any(|v| compare(k, &stored, v) == Some(Ordering::Equal))
        }
        Cond::Like { column, pattern } => like(&row.value(schema, column), pattern),
    }
}

fn sort_cmp(schema: &Schema, order: &[(String, bool)], a: &Row<'_>, b: &Row<'_>) -> Ordering {
    for (column, descending) in order {
        let (x, y) = (a.value(schema, column), b.value(schema, column));
        let ord = match kind(schema, column) {
            Kind::Id | Kind::Reference => crmid_of(&x).cmp(&crmid_of(&y)),
            // Empty numeric cells are NULL and sort first, like MySQL.
            Kind::Numeric => match (x.trim().parse::<f64>(), y.trim().parse::<f64>()) {
                (Ok(p), Ok(q)) => p.partial_cmp(&q).unwrap_or(Ordering::Equal),
                (Err(_), Ok(_)) => Ordering::Less,
                (Ok(_), Err(_)) => Ordering::Greater,
                (Err(_), Err(_)) => Ordering::Equal,
            },
            Kind::Temporal => temporal_key(&x).cmp(&temporal_key(&y)),
            Kind::Text => text_key(&x).cmp(&text_key(&y)),
        };
        let ord = if *descending { ord.reverse() } else { ord };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// Runs a parsed query over a module's live rows (in creation order). With `shuffle_ties`, rows
/// with equal sort keys come back in arbitrary order, as MySQL returns them.
pub(crate) fn execute(query: &Query, rows: Vec<Row<'_>>, shuffle_ties: bool) -> Out {
    let schema = query.schema;
    let mut rows: Vec<Row<'_>> =
        rows.into_iter().filter(|r| query.filter.as_ref().is_none_or(|c| matches(c, schema, r))).collect();
    if query.selection == Selection::Count {
        return Out::Arr(vec![Out::obj([("count", Out::Str(rows.len().to_string()))])]);
    }
    if !query.order.is_empty() {
        if shuffle_ties {
            use rand::seq::SliceRandom;
            rows.shuffle(&mut rand::rng());
        }
        // Stable sort: after the shuffle above, ties keep the shuffled (arbitrary) order.
        rows.sort_by(|a, b| sort_cmp(schema, &query.order, a, b));
    }
    let (offset, count) = query.limit.unwrap_or((0, MAX_ROWS));
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    let count = usize::try_from(count.min(MAX_ROWS)).unwrap_or(0);
    Out::Arr(rows.iter().skip(offset).take(count).map(|r| project(query, r)).collect())
}

fn project(query: &Query, row: &Row<'_>) -> Out {
    let schema = query.schema;
    match &query.selection {
        Selection::Columns(columns) => {
            let mut pairs: Vec<(String, Out)> = Vec::new();
            for c in columns {
                if !pairs.iter().any(|(k, _)| k == c) {
                    pairs.push((c.clone(), Out::Str(row.value(schema, c))));
                }
            }
            // `id` is always returned, last when it was not asked for.
            if !pairs.iter().any(|(k, _)| k == "id") {
                pairs.push(("id".into(), Out::Str(row.value(schema, "id"))));
            }
            Out::Obj(pairs)
        }
        Selection::All | Selection::Count => render(schema, row.crmid, row.fields, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: WsResult<Query>) -> (String, String) {
        match r {
            Err(Failure::Ws { code, message }) => (code.to_owned(), message),
            Err(Failure::Fatal) => ("FATAL".into(), String::new()),
            Ok(q) => ("OK".into(), format!("{q:?}")),
        }
    }

    #[test]
    fn missing_semicolon_and_misspelt_select_give_the_observed_messages() {
        assert_eq!(
            message(parse("SELECT * FROM Contacts")),
            (
                "QUERY_SYNTAX_ERROR".into(),
                "Syntax Error on line 1: token 'Contacts' Unexpected End of Input(0), expected one of: SEMICOLON"
                    .into()
            )
        );
        assert_eq!(
            message(parse("SELEC * FROM Contacts;")),
            (
                "QUERY_SYNTAX_ERROR".into(),
                "Syntax Error on line 1: token 'SELEC' Unexpected Unknown(SELEC), expected one of: SELECT".into()
            )
        );
        assert_eq!(
            message(parse("SELECT * FROM Contacts WHERE lastname = 'x' LIMIT 5")).1,
            "Syntax Error on line 1: token '5' Unexpected End of Input(0), expected one of: SEMICOLON"
        );
    }

    #[test]
    fn keywords_are_case_insensitive_and_modules_are_not() {
        assert!(parse("select firstname from Contacts where lastname like 'a%' order by id desc limit 3;").is_ok());
        assert_eq!(
            message(parse("SELECT * FROM contacts;")).1,
            "Permission to perform the operation is denied for name : contacts"
        );
    }

    #[test]
    fn string_literals() {
        let q = parse("SELECT * FROM Contacts WHERE lastname = 'O''Brien';").map(|q| q.filter);
        assert_eq!(q, Ok(Some(Cond::Cmp { column: "lastname".into(), op: CmpOp::Eq, value: "O'Brien".into() })));
        assert_eq!(message(parse(r"SELECT * FROM Contacts WHERE lastname = 'O\'Brien';")).0, "QUERY_SYNTAX_ERROR");
        assert_eq!(message(parse(r"SELECT * FROM Contacts WHERE lastname = 'x\'';")).0, "QUERY_SYNTAX_ERROR");
        assert_eq!(message(parse(r#"SELECT * FROM Contacts WHERE lastname = "x";"#)).0, "INTERNAL_SERVER_ERROR");
        assert_eq!(message(parse("SELECT * FROM Contacts WHERE lastname = 'open;")).0, "QUERY_SYNTAX_ERROR");
        // A backslash not before a quote is an ordinary character.
        assert!(parse(r"SELECT * FROM Contacts WHERE description = 'C:\dir';").is_ok());
    }

    #[test]
    fn dotted_paths_are_internal_errors() {
        assert_eq!(message(parse("SELECT account_id.accountname FROM Contacts;")).0, "INTERNAL_SERVER_ERROR");
        assert_eq!(
            message(parse("SELECT id FROM Contacts WHERE account_id.accountname = 'x';")).0,
            "INTERNAL_SERVER_ERROR"
        );
    }

    #[test]
    fn unknown_columns() {
        assert_eq!(
            message(parse("SELECT nosuchfield FROM Contacts;")).1,
            "Permission to access '.nosuchfield.' attribute denied."
        );
        assert_eq!(
            message(parse("SELECT * FROM Contacts WHERE nosuch = '1';")).1,
            "Permission to access nosuch attribute denied."
        );
    }

    #[test]
    fn precedence_and_parentheses() {
        let q = parse("SELECT * FROM Contacts WHERE a_x = '1' OR lastname = '2' AND firstname = '3';");
        // Unknown column `a_x` is reported first.
        assert_eq!(message(q).1, "Permission to access a_x attribute denied.");
        let q = parse("SELECT * FROM Contacts WHERE (lastname = '1' OR lastname = '2') AND firstname IN ('a','b');")
            .map(|q| q.filter);
        assert!(matches!(q, Ok(Some(Cond::And(_, _)))));
    }

    #[test]
    fn limits() {
        assert_eq!(parse("SELECT * FROM Contacts LIMIT 5;").map(|q| q.limit), Ok(Some((0, 5))));
        assert_eq!(parse("SELECT * FROM Contacts LIMIT 200, 100;").map(|q| q.limit), Ok(Some((200, 100))));
        assert_eq!(message(parse("SELECT * FROM Contacts LIMIT x;")).0, "QUERY_SYNTAX_ERROR");
    }

    #[test]
    fn like_patterns() {
        assert!(like("N14-77", "n14%"));
        assert!(like("Smith", "%MIT%"));
        assert!(like("abc", "a_c"));
        assert!(!like("abc", "a_"));
        assert!(like("", "%"));
        assert!(!like("x", ""));
        assert!(like("aXbXc", "%x%x%"));
    }

    /// Arbitrary input must produce a result or a documented error, never a panic.
    #[test]
    fn random_input_never_panics() {
        use rand::Rng;
        const PIECES: &[&str] = &[
            "SELECT",
            "select",
            "*",
            "count(*)",
            "count",
            "(",
            ")",
            "FROM",
            "Contacts",
            "Users",
            "contacts",
            "WHERE",
            "id",
            "lastname",
            "firstname",
            "account_id",
            "modifiedtime",
            "=",
            "!=",
            "<>",
            "<",
            ">",
            "<=",
            ">=",
            "!",
            "LIKE",
            "IN",
            "AND",
            "OR",
            "ORDER",
            "BY",
            "ASC",
            "DESC",
            "LIMIT",
            "0",
            "100",
            "99999999999999999999999",
            ",",
            ";",
            "'x'",
            "'O''Brien'",
            "'%a_%'",
            "'12x3'",
            "\\'",
            "'",
            "\"",
            ".",
            "a.b",
            "\n",
            " ",
            "é",
            "\0",
        ];
        let mut rng = rand::rng();
        let fields: Fields = [("lastname", "Smith"), ("firstname", "Ann"), ("account_id", "11x2")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for _ in 0..3000 {
            let len = rng.random_range(0..14);
            let mut text = String::new();
            // Mostly well-formed prefixes, so the fuzzing reaches the later clauses.
            if rng.random_bool(0.7) {
                text.push_str("SELECT * FROM Contacts ");
            }
            for _ in 0..len {
                text.push_str(PIECES[rng.random_range(0..PIECES.len())]);
                text.push(' ');
            }
            if let Ok(q) = parse(&text) {
                let rows = vec![Row { crmid: 3, fields: &fields }];
                let _ = execute(&q, rows, true);
            }
        }
        for _ in 0..3000 {
            let mut sample = |n: usize| -> String {
                (0..rng.random_range(0..n)).map(|_| ['a', 'b', '%', '_', 'A'][rng.random_range(0..5)]).collect()
            };
            let (v, p) = (sample(8), sample(6));
            let _ = like(&v, &p);
        }
    }

    #[test]
    fn trailing_tokens_after_semicolon_are_rejected() {
        assert_eq!(message(parse("SELECT * FROM Contacts; DROP")).0, "QUERY_SYNTAX_ERROR");
    }
}
