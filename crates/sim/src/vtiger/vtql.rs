//! VTQL (contract §6 and the end of §10) as Vtiger 8.2.0 parses and runs it: a context-sensitive
//! lexer, a table of parser positions, and an evaluator over the simulated rows.
//!
//! Everything here reproduces behaviour observed on a real Vtiger 8.2.0 (see
//! `shared/contracts/vtiger-captures/vtql-grammar.txt` and the replay tests):
//!
//! * The module is taken first, by a regex over the raw text (`from\s+(\S+)`): no match →
//!   `… denied for query`, unknown (or wrong-case) module → `… denied for name : X`, whatever
//!   the rest of the text is.
//! * The lexer names tokens by where it is in the statement, not by what they look like: in a
//!   WHERE clause the first word is a `COLUMNNAME` and the next one a `VALUE`, after `ORDER BY`
//!   everything but `,`/`ASC`/`DESC` is a `COLUMNNAME`, after `LIMIT` a `VALUE`. Text no token
//!   rule matches (`"`, `.`, `!`, `''`, non-ASCII outside quotes) → `INTERNAL_SERVER_ERROR`, but
//!   only once the parser reads that far.
//! * No grouping parentheses: the only `(` the grammar takes is a value list after an operator.
//!   Conditions are a flat chain, sent to MySQL as written, so `AND` binds tighter than `OR`.
//! * One sort direction, after the last `ORDER BY` column, applying to that column only.
//! * Syntax errors carry the parser generator's message, including its odd "expected" lists.
//! * Columns are checked only after the whole statement parsed: select list first, then the
//!   WHERE columns in order. Reference values without `x` → `INVALID_ID_ATTRIBUTE`.
//! * Statements that parse but make invalid SQL (`ORDER BY nosuch`, `LIMIT -5`, a bare word as
//!   value, an id without `x`) return `[]`: the real server swallows the database error.

use std::cmp::Ordering;

use super::error::{self, WsResult};
use super::json::Out;
use super::modules::{self, FieldType, Schema};
use super::records::{Fields, render};

/// Vtiger never returns more rows than this from one `query` call.
pub(crate) const MAX_ROWS: u64 = 100;

// ---------------------------------------------------------------------------------------------
// Lexer

/// Token kinds, named as the parser generator names them in its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum T {
    Select,
    Frm,
    ColumnName,
    Asterisk,
    Count,
    ParenOpen,
    ParenClose,
    Comma,
    TableName,
    Where,
    And,
    Or,
    Value,
    Eq,
    Lt,
    Gt,
    Lte,
    Gte,
    Ne,
    In,
    Like,
    OrderBy,
    Asc,
    Desc,
    Limit,
    Semicolon,
    /// The lexer returned no token kind for a lexeme it read.
    Unknown,
}

impl T {
    fn name(self) -> &'static str {
        match self {
            T::Select => "SELECT",
            T::Frm => "FRM",
            T::ColumnName => "COLUMNNAME",
            T::Asterisk => "ASTERISK",
            T::Count => "COUNT",
            T::ParenOpen => "PARENOPEN",
            T::ParenClose => "PARENCLOSE",
            T::Comma => "COMMA",
            T::TableName => "TABLENAME",
            T::Where => "WHERE",
            T::And => "LOGICAL_AND",
            T::Or => "LOGICAL_OR",
            T::Value => "VALUE",
            T::Eq => "EQ",
            T::Lt => "LT",
            T::Gt => "GT",
            T::Lte => "LTE",
            T::Gte => "GTE",
            T::Ne => "NE",
            T::In => "IN",
            T::Like => "LIKE",
            T::OrderBy => "ORDERBY",
            T::Asc => "ASC",
            T::Desc => "DESC",
            T::Limit => "LIMIT",
            T::Semicolon => "SEMICOLON",
            T::Unknown => "Unknown",
        }
    }
}

/// Which clause the lexer believes it is in once the mandatory `SELECT … FROM <Module>` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clause {
    Where,
    OrderBy,
    Limit,
}

/// Where the lexer is in the mandatory part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    Select,
    Columns,
    From,
    Table,
    Done,
}

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    /// The last lexeme read (whitespace included): what syntax errors quote.
    value: String,
    line: u32,
    head: Head,
    clause: Clause,
    /// A WHERE column has been read and its value not yet.
    where_col: bool,
    /// Inside an `IN` value list.
    in_started: bool,
    /// `ORDER` was read (or the `ORDER BY` token was produced).
    orderby: bool,
    /// `count` was read in the select list.
    count: bool,
}

enum Lexeme {
    Token(usize),
    Space(usize),
}

/// Lexer failure: Vtiger throws a plain exception, reported as `INTERNAL_SERVER_ERROR`.
struct Unlexable;

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer {
            src: src.as_bytes(),
            pos: 0,
            value: String::new(),
            line: 1,
            head: Head::Select,
            clause: Clause::Where,
            where_col: false,
            in_started: false,
            orderby: false,
            count: false,
        }
    }

    /// Length of the lexeme at `at`, by the token rules in their order of preference.
    fn lexeme_at(&self, at: usize) -> Option<Lexeme> {
        let s = &self.src[at..];
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let first = *s.first()?;
        if word(first) {
            return Some(Lexeme::Token(s.iter().take_while(|b| word(**b)).count()));
        }
        if first == b'\'' {
            if let Some(n) = quoted_len(s) {
                return Some(Lexeme::Token(n));
            }
        }
        let next = s.get(1).copied();
        let n = match first {
            b'(' | b')' | b',' | b'*' | b';' | b'=' => 1,
            b'+' | b'-' if next.is_some_and(|b| b.is_ascii_digit()) => {
                1 + s[1..].iter().take_while(|b| b.is_ascii_digit()).count()
            }
            b'<' | b'>' | b'!' if next == Some(b'=') => 2,
            b'<' | b'>' => 1,
            b' ' | b'\t' | b'\r' | b'\n' => {
                return Some(Lexeme::Space(s.iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')).count()));
            }
            _ => return None,
        };
        Some(Lexeme::Token(n))
    }

    /// The next token and its text; `Ok(None)` at the end of input.
    fn next(&mut self) -> Result<Option<(T, String)>, Unlexable> {
        loop {
            if self.pos >= self.src.len() {
                return Ok(None);
            }
            let lexeme = self.lexeme_at(self.pos).ok_or(Unlexable)?;
            let (len, space) = match lexeme {
                Lexeme::Token(n) => (n, false),
                Lexeme::Space(n) => (n, true),
            };
            let text = String::from_utf8_lossy(&self.src[self.pos..self.pos + len]).into_owned();
            self.pos += len;
            // Vtiger counts lines only for a whitespace run that is exactly one newline.
            if text == "\n" {
                self.line += 1;
            }
            self.value.clone_from(&text);
            if space {
                continue;
            }
            match self.classify(&text) {
                Some(t) => return Ok(Some((t, text))),
                // `ORDER` is swallowed: only the following `BY` becomes a token.
                None => continue,
            }
        }
    }

    /// Token kind of a lexeme, updating the lexer's notion of where it is. `None`: skipped.
    fn classify(&mut self, v: &str) -> Option<T> {
        let is = |w: &str| v.eq_ignore_ascii_case(w);
        match self.head {
            Head::Select => {
                return Some(if is("select") {
                    self.head = Head::Columns;
                    T::Select
                } else {
                    T::Unknown
                });
            }
            Head::Columns => {
                if is("from") {
                    self.head = Head::Table;
                    return Some(T::Frm);
                }
                return Some(match v {
                    "*" => {
                        if !self.count {
                            self.head = Head::From;
                        }
                        T::Asterisk
                    }
                    "(" => T::ParenOpen,
                    ")" => T::ParenClose,
                    "," => T::Comma,
                    _ if is("count") => {
                        self.count = true;
                        T::Count
                    }
                    _ => T::ColumnName,
                });
            }
            Head::From => {
                return Some(if is("from") {
                    self.head = Head::Table;
                    T::Frm
                } else {
                    T::Unknown
                });
            }
            Head::Table => {
                self.head = Head::Done;
                self.clause = Clause::Where;
                return Some(if is("where") { T::Unknown } else { T::TableName });
            }
            Head::Done => {}
        }
        if v == ";" {
            return Some(T::Semicolon);
        }
        if is("order") {
            self.orderby = true;
            return None;
        }
        if is("by") && self.orderby {
            self.orderby = false;
            self.clause = Clause::OrderBy;
        }
        if is("where") {
            self.clause = Clause::Where;
        } else if is("orderby") {
            self.clause = Clause::OrderBy;
        } else if is("limit") {
            self.clause = Clause::Limit;
        }
        Some(match self.clause {
            Clause::Where => self.where_token(v.trim()),
            Clause::OrderBy => {
                if !self.orderby {
                    self.orderby = true;
                    T::OrderBy
                } else if v == "," {
                    T::Comma
                } else if is("asc") {
                    T::Asc
                } else if is("desc") {
                    T::Desc
                } else {
                    T::ColumnName
                }
            }
            Clause::Limit => match v {
                _ if is("limit") => T::Limit,
                "(" => T::ParenOpen,
                ")" => T::ParenClose,
                "," => T::Comma,
                _ => T::Value,
            },
        })
    }

    fn where_token(&mut self, v: &str) -> T {
        let is = |w: &str| v.eq_ignore_ascii_case(w);
        match v {
            "=" => return T::Eq,
            _ if is("where") => return T::Where,
            "<" => return T::Lt,
            "<=" => return T::Lte,
            ">=" => return T::Gte,
            "!=" => return T::Ne,
            ">" => return T::Gt,
            "(" => return T::ParenOpen,
            ")" => {
                if self.in_started {
                    self.in_started = false;
                    self.where_col = false;
                }
                return T::ParenClose;
            }
            _ => {}
        }
        if is("and") {
            T::And
        } else if is("or") {
            T::Or
        } else if !self.where_col {
            self.where_col = true;
            T::ColumnName
        } else if is("in") {
            self.in_started = true;
            T::In
        } else if v == "," {
            T::Comma
        } else if is("like") {
            T::Like
        } else {
            if !self.in_started {
                self.where_col = false;
            }
            T::Value
        }
    }
}

/// Length of a single-quoted literal at the start of `s` (`'…'`, `''` inside, at least one
/// character inside), with the backtracking a regex engine does; `None` if there is none.
fn quoted_len(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    let mut last_pair = None;
    while i < s.len() {
        if s[i] != b'\'' {
            i += 1;
        } else if s.get(i + 1) == Some(&b'\'') {
            last_pair = Some(i);
            i += 2;
        } else {
            // A lone quote closes the literal, if anything came before it.
            return (i > 1).then_some(i + 1);
        }
    }
    // Unterminated: give back the last doubled quote and close on its first half.
    last_pair.filter(|p| *p > 1).map(|p| p + 1)
}

// ---------------------------------------------------------------------------------------------
// Parser

/// What the statement selects.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Selection {
    All,
    Count,
    Columns(Vec<String>),
}

/// A comparison operator as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    In,
    Like,
}

/// One condition as the parser collected it: the column and the values' raw source text.
#[derive(Debug, Clone, PartialEq)]
struct RawCond {
    column: String,
    op: Op,
    values: Vec<String>,
}

/// Parser positions: after which part of the statement the next token comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pos {
    Start,
    AfterSelect,
    AfterColumn,
    AfterColumnComma,
    AfterStar,
    AfterCount,
    AfterCountOpen,
    AfterCountStar,
    AfterCountClose,
    AfterFrom,
    AfterTable,
    WhereColumn,
    AfterWhereColumn,
    AfterOp,
    ListOpen,
    ListValue,
    ListComma,
    AfterCond,
    AfterBareListComma,
    AfterConnective,
    OrderColumn,
    AfterOrderColumn,
    AfterOrderComma,
    AfterDirection,
    LimitFirst,
    AfterLimitFirst,
    LimitSecond,
    AfterLimitSecond,
    End,
    /// The real parser shifted a token it cannot use; the next one fails with this list.
    Stuck(&'static str),
}

const OPERATORS: &str = "EQ,LT,GT,LTE,GTE,NE,IN,LIKE";

/// A parsed statement, ready to run.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub(crate) selection: Selection,
    pub(crate) schema: &'static Schema,
    /// Sum of products: OR over AND-chains.
    filter: Vec<Vec<Atom>>,
    /// Columns, and whether the last one sorts descending.
    order: Vec<String>,
    order_desc: bool,
    /// `(offset, count)` after the 100-row cap.
    limit: (u64, u64),
    /// The statement parsed but its SQL fails on MySQL: Vtiger answers `[]`.
    sql_fails: bool,
}

/// The module a statement names, found as Vtiger finds it before parsing: the first `from`
/// followed by whitespace, then everything up to whitespace or `;`.
fn module_name(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    let mut i = 0;
    while i + 4 <= b.len() {
        if b[i..i + 4].eq_ignore_ascii_case(b"from") {
            let mut j = i + 4;
            let space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
            while j < b.len() && space(b[j]) {
                j += 1;
            }
            if j > i + 4 {
                let start = j;
                while j < b.len() && !space(b[j]) && b[j] != b';' {
                    j += 1;
                }
                if j > start {
                    return text.get(start..j);
                }
            }
        }
        i += 1;
    }
    None
}

pub(crate) fn parse(text: &str) -> WsResult<Query> {
    let module = module_name(text).ok_or_else(error::denied_for_query)?;
    let schema = modules::by_name(module).ok_or_else(|| error::denied_for_name(module))?;
    let raw = RawQuery::parse(text)?;
    raw.check(schema)
}

/// What the parser collected, before any column is checked.
#[derive(Debug, Default)]
struct RawQuery {
    columns: Vec<String>,
    star: bool,
    count: bool,
    conds: Vec<RawCond>,
    /// `true` for OR, between consecutive conditions.
    ors: Vec<bool>,
    order: Vec<String>,
    order_desc: bool,
    limit: Vec<String>,
    sql_fails: bool,
}

fn syntax(lex: &Lexer<'_>, tok: Option<(T, &str)>, expected: &str) -> error::Failure {
    let (name, value) = match tok {
        Some((t, v)) => (t.name(), v.to_owned()),
        None => ("End of Input", "0".to_owned()),
    };
    error::syntax_error(format!(
        "Syntax Error on line {}: token '{}' Unexpected {name}({value}), expected one of: {expected}",
        lex.line, lex.value
    ))
}

impl RawQuery {
    fn parse(text: &str) -> WsResult<RawQuery> {
        let mut lex = Lexer::new(text);
        let mut q = RawQuery::default();
        let mut pos = Pos::Start;
        loop {
            let tok = lex.next().map_err(|Unlexable| error::internal_error())?;
            let Some((t, v)) = tok else {
                if pos == Pos::End {
                    return Ok(q);
                }
                return Err(syntax(&lex, None, eof_expected(pos)));
            };
            let fail = |expected: &str| Err(syntax(&lex, Some((t, &v)), expected));
            pos = match (pos, t) {
                (Pos::Start, T::Select) => Pos::AfterSelect,
                (Pos::Start, _) => return fail("SELECT"),

                (Pos::AfterSelect | Pos::AfterColumnComma, T::ColumnName) => {
                    q.columns.push(v.clone());
                    Pos::AfterColumn
                }
                (Pos::AfterSelect, T::Asterisk) => {
                    q.star = true;
                    Pos::AfterStar
                }
                (Pos::AfterSelect, T::Count) => Pos::AfterCount,
                (Pos::AfterSelect, _) => return fail("COLUMNNAME"),
                (Pos::AfterColumn | Pos::AfterCountClose, T::Comma) => Pos::AfterColumnComma,
                (Pos::AfterColumn | Pos::AfterCountClose | Pos::AfterStar, T::Frm) => Pos::AfterFrom,
                (Pos::AfterCountClose, T::ColumnName) => Pos::Stuck("SELECT"),
                (Pos::AfterColumn | Pos::AfterColumnComma | Pos::AfterCountClose, _) => return fail("SELECT"),
                (Pos::AfterStar, _) => return fail("FRM,COMMA"),
                (Pos::AfterCount, T::ParenOpen) => Pos::AfterCountOpen,
                (Pos::AfterCount, _) => return fail("PARENOPEN"),
                (Pos::AfterCountOpen, T::Asterisk) => Pos::AfterCountStar,
                (Pos::AfterCountOpen, _) => return fail("ASTERISK"),
                (Pos::AfterCountStar, T::ParenClose) => {
                    q.count = true;
                    Pos::AfterCountClose
                }
                (Pos::AfterCountStar, _) => return fail("PARENCLOSE"),
                (Pos::AfterFrom, T::TableName) => Pos::AfterTable,
                (Pos::AfterFrom, _) => return fail("TABLENAME"),

                (Pos::AfterTable, T::Where) => Pos::WhereColumn,
                (Pos::AfterTable, T::OrderBy) | (Pos::AfterCond, T::OrderBy) => Pos::OrderColumn,
                (Pos::AfterTable | Pos::AfterCond | Pos::AfterOrderColumn | Pos::AfterDirection, T::Limit) => {
                    Pos::LimitFirst
                }
                (
                    Pos::AfterTable
                    | Pos::AfterCond
                    | Pos::AfterOrderColumn
                    | Pos::AfterDirection
                    | Pos::AfterLimitFirst
                    | Pos::AfterLimitSecond,
                    T::Semicolon,
                ) => Pos::End,
                // The grammar action for the table name fails when anything else follows it.
                (Pos::AfterTable, _) => return Err(error::syntax_error_in_query()),

                (Pos::WhereColumn | Pos::AfterConnective, T::ColumnName) => {
                    q.conds.push(RawCond { column: v.clone(), op: Op::Eq, values: Vec::new() });
                    Pos::AfterWhereColumn
                }
                (Pos::WhereColumn, _) => return fail("COLUMNNAME"),
                (Pos::AfterWhereColumn, _) => {
                    let op = match t {
                        T::Eq => Op::Eq,
                        T::Lt => Op::Lt,
                        T::Gt => Op::Gt,
                        T::Lte => Op::Le,
                        T::Gte => Op::Ge,
                        T::Ne => Op::Ne,
                        T::In => Op::In,
                        T::Like => Op::Like,
                        _ => return fail(OPERATORS),
                    };
                    if let Some(c) = q.conds.last_mut() {
                        c.op = op;
                    }
                    Pos::AfterOp
                }
                (Pos::AfterOp, T::Value) | (Pos::AfterBareListComma, T::Value) => {
                    q.push_value(v.clone());
                    Pos::AfterCond
                }
                (Pos::AfterOp, T::ParenOpen) => Pos::ListOpen,
                (Pos::ListOpen | Pos::ListComma, T::Value) => {
                    q.push_value(v.clone());
                    Pos::ListValue
                }
                (Pos::AfterOp | Pos::ListOpen | Pos::ListComma | Pos::AfterBareListComma, _) => return fail("VALUE"),
                (Pos::ListValue, T::Comma) => Pos::ListComma,
                (Pos::ListValue, T::ParenClose) => Pos::AfterCond,
                // An unclosed list is accepted by the parser; the SQL it makes fails.
                (Pos::ListValue, T::Semicolon) => {
                    q.sql_fails = true;
                    Pos::End
                }
                (Pos::ListValue, T::OrderBy) => {
                    q.sql_fails = true;
                    Pos::OrderColumn
                }
                (Pos::ListValue, T::Limit) => {
                    q.sql_fails = true;
                    Pos::LimitFirst
                }
                (Pos::ListValue, T::And | T::Or) => {
                    q.sql_fails = true;
                    q.ors.push(t == T::Or);
                    Pos::AfterConnective
                }
                (Pos::ListValue, _) => return fail("SEMICOLON"),
                // Only `IN` keeps the lexer in its value list, so only `IN 'a', 'b'` gets here.
                (Pos::AfterCond, T::Comma) => Pos::AfterBareListComma,
                (Pos::AfterCond, T::And | T::Or) => {
                    q.ors.push(t == T::Or);
                    Pos::AfterConnective
                }
                (Pos::AfterConnective, T::Where) => Pos::AfterConnective,
                (Pos::AfterConnective, T::Semicolon | T::OrderBy | T::Limit) => return fail("COLUMNNAME"),
                (Pos::AfterConnective, _) => return fail("SEMICOLON"),

                (Pos::OrderColumn | Pos::AfterOrderComma, T::ColumnName) => {
                    q.order.push(v.clone());
                    Pos::AfterOrderColumn
                }
                (Pos::OrderColumn, _) => return fail("COLUMNNAME"),
                (Pos::AfterOrderComma, T::Semicolon | T::Limit) => return fail("COLUMNNAME"),
                (Pos::AfterOrderComma, _) => return fail("SEMICOLON"),
                (Pos::AfterOrderColumn, T::Comma) => Pos::AfterOrderComma,
                (Pos::AfterOrderColumn, T::Asc | T::Desc) => {
                    q.order_desc = t == T::Desc;
                    Pos::AfterDirection
                }
                (Pos::AfterOrderColumn | Pos::AfterLimitSecond, T::OrderBy) => Pos::Stuck("SEMICOLON"),

                (Pos::LimitFirst, T::Value) => {
                    q.limit.push(v.clone());
                    Pos::AfterLimitFirst
                }
                (Pos::AfterLimitFirst, T::Comma) => Pos::LimitSecond,
                (Pos::AfterLimitFirst, T::Limit) => Pos::Stuck("SEMICOLON"),
                (Pos::LimitSecond, T::Value) => {
                    q.limit.push(v.clone());
                    Pos::AfterLimitSecond
                }
                (Pos::LimitFirst | Pos::LimitSecond, _) => return fail("VALUE"),
                (
                    Pos::AfterCond
                    | Pos::AfterOrderColumn
                    | Pos::AfterDirection
                    | Pos::AfterLimitFirst
                    | Pos::AfterLimitSecond,
                    _,
                ) => return fail("SEMICOLON"),
                (Pos::End, _) => return fail(""),
                (Pos::Stuck(expected), _) => return fail(expected),
            };
        }
    }

    fn push_value(&mut self, v: String) {
        if let Some(c) = self.conds.last_mut() {
            c.values.push(v);
        }
    }
}

/// What the real parser lists when the input ends at `pos`.
fn eof_expected(pos: Pos) -> &'static str {
    match pos {
        Pos::Start => "SELECT",
        Pos::AfterSelect | Pos::WhereColumn | Pos::AfterConnective | Pos::OrderColumn | Pos::AfterOrderComma => {
            "COLUMNNAME"
        }
        Pos::AfterColumn | Pos::AfterColumnComma | Pos::AfterCountClose => "SELECT",
        Pos::AfterStar => "FRM,COMMA",
        Pos::AfterCount => "PARENOPEN",
        Pos::AfterCountOpen => "ASTERISK",
        Pos::AfterCountStar => "PARENCLOSE",
        Pos::AfterFrom => "TABLENAME",
        Pos::AfterWhereColumn => OPERATORS,
        Pos::AfterOp
        | Pos::ListOpen
        | Pos::ListComma
        | Pos::AfterBareListComma
        | Pos::LimitFirst
        | Pos::LimitSecond => "VALUE",
        Pos::ListValue => "PARENCLOSE,COMMA",
        Pos::AfterTable
        | Pos::AfterCond
        | Pos::AfterOrderColumn
        | Pos::AfterDirection
        | Pos::AfterLimitFirst
        | Pos::AfterLimitSecond
        | Pos::End => "SEMICOLON",
        Pos::Stuck(expected) => expected,
    }
}

// ---------------------------------------------------------------------------------------------
// Checks and SQL semantics

/// How a column compares on MySQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `id`: compared by crmid, the literal's prefix dropped.
    Id,
    /// A reference field: like `id`, and its literals must contain an `x`.
    Reference,
    /// An owner field (`assigned_user_id`): like `id`.
    Owner,
    Numeric,
    Temporal,
    /// Text under `utf8_general_ci`: case- and accent-insensitive, trailing spaces ignored.
    Text,
}

fn kind(schema: &Schema, column: &str) -> Kind {
    if column == "id" {
        return Kind::Id;
    }
    match schema.field(column).map(|f| f.ty) {
        Some(FieldType::Reference) => Kind::Reference,
        Some(FieldType::Owner) => Kind::Owner,
        Some(t) if t.is_numeric() => Kind::Numeric,
        Some(FieldType::Date | FieldType::DateTime) => Kind::Temporal,
        _ => Kind::Text,
    }
}

fn is_column(schema: &Schema, column: &str) -> bool {
    column == "id" || schema.field(column).is_some()
}

/// A literal as MySQL receives it.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Num(f64),
    /// A LIKE on an id whose literal has no `x`: Vtiger sends `LIKE ''`.
    Nothing,
}

#[derive(Debug, Clone, PartialEq)]
struct Atom {
    column: String,
    kind: Kind,
    op: Op,
    lits: Vec<Lit>,
}

/// A MySQL single-quoted literal's content (`'…'` given whole): `''` and backslash escapes
/// undone, `\%` and `\_` kept for LIKE. `None` when MySQL would read the quotes differently
/// (an escaped closing quote) and the statement fails.
fn mysql_string(raw: &str) -> Option<String> {
    let inner = raw.strip_prefix('\'')?.strip_suffix('\'')?;
    let mut out = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                '0' => out.push('\0'),
                'b' => out.push('\u{8}'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'Z' => out.push('\u{1a}'),
                e @ ('%' | '_') => {
                    out.push('\\');
                    out.push(e);
                }
                e => out.push(e),
            },
            '\'' => {
                if chars.next() != Some('\'') {
                    return None;
                }
                out.push('\'');
            }
            c => out.push(c),
        }
    }
    Some(out)
}

fn is_integer_literal(s: &str) -> bool {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// PHP 8's `$value > 100` for a LIMIT token: numeric strings compare as numbers, others as
/// strings against `"100"`.
fn php_greater_than_100(v: &str) -> bool {
    let (mantissa, exponent) = match v.find(['e', 'E']) {
        Some(i) => (&v[..i], Some(&v[i + 1..])),
        None => (v, None),
    };
    let numeric = is_integer_literal(mantissa) && exponent.is_none_or(is_integer_literal);
    match v.parse::<f64>() {
        Ok(n) if numeric => n > 100.0,
        _ => v > "100",
    }
}

/// A LIMIT number as MySQL accepts it (unsigned digits), or `None`.
fn limit_number(v: &str) -> Option<u64> {
    (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())).then(|| v.parse().unwrap_or(u64::MAX))
}

impl RawQuery {
    /// The checks Vtiger runs once the statement parsed, in its order, and the SQL meaning.
    fn check(self, schema: &'static Schema) -> WsResult<Query> {
        let selection = if self.count {
            Selection::Count
        } else if self.star {
            Selection::All
        } else {
            if let Some(bad) = self.columns.iter().find(|c| !is_column(schema, c)) {
                return Err(error::denied_select_column(bad));
            }
            Selection::Columns(self.columns.clone())
        };
        let mut sql_fails = self.sql_fails;
        let mut atoms = Vec::new();
        for cond in &self.conds {
            if !is_column(schema, &cond.column) {
                return Err(error::denied_where_column(&cond.column));
            }
            let kind = kind(schema, &cond.column);
            if kind == Kind::Reference && cond.values.iter().any(|v| !v.contains('x')) {
                return Err(error::invalid_id());
            }
            let mut lits = Vec::new();
            for raw in &cond.values {
                match literal(kind, cond.op, raw) {
                    Some(l) => lits.push(l),
                    None => sql_fails = true,
                }
            }
            atoms.push(Atom { column: cond.column.clone(), kind, op: cond.op, lits });
        }
        // Sum of products: MySQL gives AND precedence over OR.
        let mut filter: Vec<Vec<Atom>> = Vec::new();
        for (i, atom) in atoms.into_iter().enumerate() {
            let or_before = i > 0 && self.ors.get(i - 1).copied().unwrap_or(false);
            match filter.last_mut() {
                Some(chain) if !or_before => chain.push(atom),
                _ => filter.push(vec![atom]),
            }
        }
        if self.order.iter().any(|c| !is_column(schema, c)) {
            sql_fails = true;
        }
        let capped = |v: &String| if php_greater_than_100(v) { "100".to_owned() } else { v.clone() };
        let limit = match self.limit.as_slice() {
            [] => Some((0, MAX_ROWS)),
            [n] => limit_number(&capped(n)).map(|n| (0, n)),
            [offset, n, ..] => limit_number(offset).zip(limit_number(&capped(n))),
        };
        let limit = limit.unwrap_or_else(|| {
            sql_fails = true;
            (0, 0)
        });
        Ok(Query { selection, schema, filter, order: self.order, order_desc: self.order_desc, limit, sql_fails })
    }
}

/// The literal MySQL compares with, or `None` when the SQL Vtiger builds from it fails.
fn literal(kind: Kind, op: Op, raw: &str) -> Option<Lit> {
    match kind {
        Kind::Id | Kind::Reference | Kind::Owner => {
            // Vtiger strips quotes, splits on `x` and splices the second part into the SQL.
            let trimmed = raw.trim_matches(['\'', '"']);
            let Some(crmid) = trimmed.split('x').nth(1) else {
                return (op == Op::Like).then_some(Lit::Nothing);
            };
            if op == Op::Like {
                return Some(Lit::Str(crmid.to_owned()));
            }
            let crmid = crmid.trim();
            is_integer_literal(crmid).then(|| Lit::Num(crmid.parse().unwrap_or(f64::MAX)))
        }
        _ if raw.starts_with('\'') => mysql_string(raw).map(Lit::Str),
        _ if is_integer_literal(raw) => Some(Lit::Num(raw.parse().unwrap_or(f64::MAX))),
        // A bare word is an SQL identifier: an unknown column.
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

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

/// `utf8_general_ci` folding of one character: case and the common Latin accents dropped.
fn fold_char(c: char) -> char {
    let c = c.to_lowercase().next().unwrap_or(c);
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => 'a',
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => 'c',
        'ď' | 'đ' => 'd',
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => 'e',
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => 'g',
        'ĥ' | 'ħ' => 'h',
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => 'i',
        'ĵ' => 'j',
        'ķ' => 'k',
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => 'l',
        'ñ' | 'ń' | 'ņ' | 'ň' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ō' | 'ŏ' | 'ő' => 'o',
        'ŕ' | 'ŗ' | 'ř' => 'r',
        'ś' | 'ŝ' | 'ş' | 'š' | 'ß' => 's',
        'ţ' | 'ť' | 'ŧ' => 't',
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => 'u',
        'ŵ' => 'w',
        'ý' | 'ÿ' | 'ŷ' => 'y',
        'ź' | 'ż' | 'ž' => 'z',
        c => c,
    }
}

fn fold(s: &str) -> String {
    s.chars().map(fold_char).collect()
}

/// Text sort and comparison key: folded, trailing spaces ignored (`PAD SPACE`).
fn text_key(s: &str) -> String {
    fold(s.trim_end_matches(' '))
}

/// A stored or literal datetime as MySQL reads it; a date is midnight, garbage is the zero date.
fn temporal_key(s: &str) -> String {
    let s = s.trim();
    let digits_at = |i: &[usize]| i.iter().all(|&i| s.as_bytes().get(i).is_some_and(u8::is_ascii_digit));
    let date = s.len() >= 10 && digits_at(&[0, 1, 2, 3, 5, 6, 8, 9]) && &s[4..5] == "-" && &s[7..8] == "-";
    if date && s.len() == 10 {
        format!("{s} 00:00:00")
    } else if date && s.len() == 19 && digits_at(&[11, 12, 14, 15, 17, 18]) {
        s.to_owned()
    } else {
        "0000-00-00 00:00:00".to_owned()
    }
}

/// The number MySQL makes of a string: its longest numeric prefix, else 0.
fn numeric_prefix(s: &str) -> f64 {
    let t = s.trim_start();
    let b = t.as_bytes();
    let mut end = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    while end < b.len() && b[end].is_ascii_digit() {
        end += 1;
    }
    if b.get(end) == Some(&b'.') {
        end += 1;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
    }
    t[..end].parse().unwrap_or(0.0)
}

fn crmid_of(stored: &str) -> Option<f64> {
    stored.split_once('x').and_then(|(_, id)| id.parse().ok())
}

/// An empty reference is stored as 0, not NULL: `account_id != '11x2'` includes contacts
/// without an account (observed on 8.2.0).
fn reference_of(stored: &str) -> f64 {
    crmid_of(stored).unwrap_or(0.0)
}

/// `stored <=> literal`, or `None` when the comparison is SQL NULL (never true).
fn compare(kind: Kind, stored: &str, lit: &Lit) -> Option<Ordering> {
    match (kind, lit) {
        (_, Lit::Nothing) => None,
        (Kind::Id | Kind::Reference | Kind::Owner, Lit::Num(n)) => reference_of(stored).partial_cmp(n),
        (Kind::Id | Kind::Reference | Kind::Owner, Lit::Str(s)) => reference_of(stored).partial_cmp(&numeric_prefix(s)),
        (Kind::Numeric, _) if stored.trim().is_empty() => None,
        (Kind::Numeric, Lit::Num(n)) => numeric_prefix(stored).partial_cmp(n),
        (Kind::Numeric, Lit::Str(s)) => numeric_prefix(stored).partial_cmp(&numeric_prefix(s)),
        (Kind::Temporal, _) if stored.trim().is_empty() => None,
        (Kind::Temporal, Lit::Str(s)) => Some(temporal_key(stored).cmp(&temporal_key(s))),
        (Kind::Temporal | Kind::Text, Lit::Num(n)) => numeric_prefix(stored).partial_cmp(n),
        (Kind::Text, Lit::Str(s)) => Some(text_key(stored).cmp(&text_key(s))),
    }
}

/// SQL `LIKE` under the collation: `%` any run, `_` one character, `\` escapes.
fn like(value: &str, pattern: &str) -> bool {
    let v: Vec<char> = value.chars().map(fold_char).collect();
    let mut p: Vec<(char, bool)> = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => p.push((fold_char(chars.next().unwrap_or('\\')), false)),
            '%' | '_' => p.push((c, true)),
            c => p.push((fold_char(c), false)),
        }
    }
    // Iterative matcher with backtracking to the last `%`.
    let (mut vi, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        match p.get(pi) {
            Some(('%', true)) => {
                star = Some((pi, vi));
                pi += 1;
            }
            Some(('_', true)) => {
                vi += 1;
                pi += 1;
            }
            Some((c, false)) if *c == v[vi] => {
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
    p[pi..].iter().all(|c| *c == ('%', true))
}

fn matches_atom(atom: &Atom, schema: &Schema, row: &Row<'_>) -> bool {
    let stored = row.value(schema, &atom.column);
    let cmp = |lit: &Lit| compare(atom.kind, &stored, lit);
    match atom.op {
        Op::In => atom.lits.iter().any(|l| cmp(l) == Some(Ordering::Equal)),
        Op::Like => atom.lits.iter().any(|l| match (atom.kind, l) {
            (_, Lit::Nothing) => false,
            (Kind::Id | Kind::Reference | Kind::Owner, Lit::Str(p)) => {
                crmid_of(&stored).is_some_and(|_| like(stored.split_once('x').map_or("", |(_, id)| id), p))
            }
            (Kind::Numeric | Kind::Temporal, _) if stored.trim().is_empty() => false,
            (_, Lit::Str(p)) => like(&stored, p),
            (_, Lit::Num(n)) => like(&stored, &n.to_string()),
        }),
        op => atom.lits.first().and_then(cmp).is_some_and(|ord| match op {
            Op::Eq => ord == Ordering::Equal,
            Op::Ne => ord != Ordering::Equal,
            Op::Lt => ord == Ordering::Less,
            Op::Gt => ord == Ordering::Greater,
            Op::Le => ord != Ordering::Greater,
            Op::Ge => ord != Ordering::Less,
            Op::In | Op::Like => false,
        }),
    }
}

fn matches(query: &Query, row: &Row<'_>) -> bool {
    query.filter.is_empty() || query.filter.iter().any(|chain| chain.iter().all(|a| matches_atom(a, query.schema, row)))
}

/// Sort key of one cell; NULLs (`None`) sort first, as on MySQL.
fn sort_key(schema: &Schema, column: &str, row: &Row<'_>) -> (Option<f64>, String) {
    let v = row.value(schema, column);
    match kind(schema, column) {
        Kind::Id | Kind::Reference | Kind::Owner => (Some(reference_of(&v)), String::new()),
        Kind::Numeric if v.trim().is_empty() => (None, String::new()),
        Kind::Numeric => (Some(numeric_prefix(&v)), String::new()),
        Kind::Temporal if v.trim().is_empty() => (None, String::new()),
        Kind::Temporal => (Some(0.0), temporal_key(&v)),
        Kind::Text => (Some(0.0), text_key(&v)),
    }
}

fn sort_cmp(query: &Query, a: &Row<'_>, b: &Row<'_>) -> Ordering {
    let last = query.order.len().saturating_sub(1);
    for (i, column) in query.order.iter().enumerate() {
        let (ka, kb) = (sort_key(query.schema, column, a), sort_key(query.schema, column, b));
        let ord = ka.0.partial_cmp(&kb.0).unwrap_or(Ordering::Equal).then_with(|| ka.1.cmp(&kb.1));
        // `ORDER BY a, b DESC`: the one direction applies to the last column only.
        let ord = if i == last && query.order_desc { ord.reverse() } else { ord };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// Runs a parsed query over a module's live rows (in creation order). With `shuffle_ties`, rows
/// with equal sort keys come back in arbitrary order, as MySQL returns them.
pub(crate) fn execute(query: &Query, rows: Vec<Row<'_>>, shuffle_ties: bool) -> Out {
    if query.sql_fails {
        return Out::Arr(Vec::new());
    }
    let mut rows: Vec<Row<'_>> = rows.into_iter().filter(|r| matches(query, r)).collect();
    let (offset, count) = query.limit;
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    if query.selection == Selection::Count {
        let one = Out::obj([("count", Out::Str(rows.len().to_string()))]);
        return Out::Arr(std::iter::once(one).skip(offset).take(count).collect());
    }
    if !query.order.is_empty() {
        if shuffle_ties {
            use rand::seq::SliceRandom;
            rows.shuffle(&mut rand::rng());
        }
        // Stable sort: after the shuffle above, ties keep the shuffled (arbitrary) order.
        rows.sort_by(|a, b| sort_cmp(query, a, b));
    }
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
    use crate::vtiger::error::Failure;

    fn outcome(text: &str) -> (String, String) {
        match parse(text) {
            Err(Failure::Ws { code, message }) => (code.to_owned(), message),
            Err(Failure::Fatal) => ("FATAL".into(), String::new()),
            Ok(q) => ("OK".into(), format!("{q:?}")),
        }
    }

    #[test]
    fn quoted_literals_backtrack_like_the_regex() {
        assert_eq!(quoted_len(b"'a';"), Some(3));
        assert_eq!(quoted_len(b"'O''Brien';"), Some(10));
        assert_eq!(quoted_len(b"'';"), None);
        assert_eq!(quoted_len(b"''''"), Some(4));
        assert_eq!(quoted_len(b"'x'';"), Some(3));
        assert_eq!(quoted_len(b"'open"), None);
    }

    #[test]
    fn mysql_string_literals() {
        assert_eq!(mysql_string("'O''Brien'").as_deref(), Some("O'Brien"));
        assert_eq!(mysql_string(r"'Slash\\Match'").as_deref(), Some(r"Slash\Match"));
        assert_eq!(mysql_string(r"'Slash\Match'").as_deref(), Some("SlashMatch"));
        assert_eq!(mysql_string(r"'50\%'").as_deref(), Some(r"50\%"));
        assert_eq!(mysql_string(r"'x\'"), None);
    }

    #[test]
    fn limit_values_follow_php_comparison() {
        assert!(php_greater_than_100("abc"));
        assert!(php_greater_than_100("150"));
        assert!(php_greater_than_100("1e3"));
        assert!(!php_greater_than_100("0100"));
        assert!(!php_greater_than_100("'5'"));
        assert!(!php_greater_than_100("-5"));
    }

    #[test]
    fn module_comes_from_the_first_from() {
        assert_eq!(module_name("SELECT * FROM Contacts;"), Some("Contacts"));
        assert_eq!(module_name("select id from\tAccounts"), Some("Accounts"));
        assert_eq!(module_name("SELECT id FROM Contacts, Accounts;"), Some("Contacts,"));
        assert_eq!(module_name("SELECT id FROM ;"), None);
        assert_eq!(
            outcome("SELECT * FROM contacts WHERE (x;").1,
            "Permission to perform the operation is denied for name : contacts"
        );
    }

    #[test]
    fn collation_folds_case_and_accents() {
        assert_eq!(text_key("Renée  "), "renee");
        assert!(like("Seán", "%a%"));
        assert!(like("50% Match", r"%\%%"));
        assert!(!like("5 Match", r"%\%%"));
        assert!(like("abc", "a_c"));
        assert!(!like("abc", "a_"));
        assert!(like("", "%"));
        assert!(!like("x", ""));
        assert!(like("aXbXc", "%x%x%"));
    }

    #[test]
    fn grouping_parentheses_are_refused() {
        assert_eq!(
            outcome("SELECT id FROM Contacts WHERE (lastname = 'a');"),
            (
                "QUERY_SYNTAX_ERROR".into(),
                "Syntax Error on line 1: token '(' Unexpected PARENOPEN((), expected one of: COLUMNNAME".into()
            )
        );
        assert_eq!(
            outcome("SELECT id FROM Contacts WHERE lastname = 'a' OR (lastname = 'b');").1,
            "Syntax Error on line 1: token '(' Unexpected PARENOPEN((), expected one of: SEMICOLON"
        );
    }

    #[test]
    fn line_numbers_count_lone_newlines_only() {
        assert_eq!(
            outcome("SELECT id\nFROM Contacts\nWHERE (").1,
            "Syntax Error on line 3: token '(' Unexpected PARENOPEN((), expected one of: COLUMNNAME"
        );
        assert_eq!(
            outcome("SELECT id \nFROM Contacts WHERE (").1,
            "Syntax Error on line 1: token '(' Unexpected PARENOPEN((), expected one of: COLUMNNAME"
        );
    }

    /// Arbitrary input must produce a result or a documented error, never a panic.
    #[test]
    fn random_input_never_panics() {
        use rand::RngExt;
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
            "assigned_user_id",
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
            "ORDERBY",
            "ASC",
            "DESC",
            "LIMIT",
            "0",
            "100",
            "-5",
            "+3",
            "1e3",
            "99999999999999999999999",
            ",",
            ";",
            "'x'",
            "'O''Brien'",
            "'%a_%'",
            "'12x3'",
            "'x'",
            "\\'",
            "'",
            "''",
            "\"",
            ".",
            "a.b",
            "\n",
            " ",
            "é",
            "'é'",
            "\0",
        ];
        let mut rng = rand::rng();
        let fields: Fields = [
            ("lastname", "Smith"),
            ("firstname", "Ann"),
            ("account_id", "11x2"),
            ("modifiedtime", "2024-01-01 00:00:00"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for _ in 0..5000 {
            let len = rng.random_range(0..14);
            let mut text = String::new();
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
    }
}
