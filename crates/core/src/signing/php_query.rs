//! A faithful emulation of PHP 8.2 (8.2.24+) `parse_str()` and `http_build_query()`.
//!
//! The social-inbox signature is `HMAC(secret, http_build_query(parse_str(query) - sig))`, so
//! the bytes that get signed are whatever PHP makes of the query string. Rather than sign the
//! raw query, crmhub reproduces PHP step by step; every rule below is one PHP applies
//! (`main/php_variables.c`, `ext/standard/url.c`, `ext/standard/http.c`, `Zend/zend_hash.c`),
//! with the default ini settings (`arg_separator.input = "&"`, `max_input_vars = 1000`,
//! `max_input_nesting_level = 64`).
//!
//! Parsing (`parse_str`):
//! * the string is read as a C string, so it ends at the first NUL byte;
//! * fields are split on `&`, empty fields are skipped, at most [`MAX_INPUT_VARS`] are read;
//! * a field is `name=value` (or a bare `name`, whose value is `""`); both are URL-decoded with
//!   `+` → space and `%XX` → byte, an invalid escape being kept literally;
//! * the decoded name ends at its first NUL; leading spaces are dropped; up to the first `[`,
//!   `.` and space become `_`;
//! * `name[k]…` nests, `name[]` appends with PHP's next-free-index rule; an unmatched `[` on the
//!   first level turns the whole name into a plain one (`[`, `.`, space → `_`), on a deeper
//!   level drops the rest of the name; text after a `]` that is not `[` is ignored;
//! * numeric keys that PHP would store as integers (`"5"`, `"-3"`, not `"05"` or `"-0"`) are
//!   integers, which only matters for the next free index;
//! * a repeated name keeps its first position and takes the last value; assigning through `[`
//!   to a scalar replaces the scalar by an array in place;
//! * names that end up empty are dropped; so is a field whose variable name or any array key
//!   starts with `__Host-`/`__Secure-` when the field's name does not (PHP 8.2.24+), after the
//!   arrays on the way to it were created; a name nested more than
//!   [`MAX_INPUT_NESTING_LEVEL`] deep removes its whole top-level variable.
//!
//! The emulation was checked differentially against PHP 8.2.36 on random quirky queries.
//!
//! Building (`http_build_query`, `PHP_QUERY_RFC1738`, separator `&`): keys and values are
//! `urlencode`d (`A-Za-z0-9-_.` literal, space → `+`, every other byte `%XX` in uppercase),
//! arrays flatten to `a%5Bk%5D=v`, empty arrays produce nothing.

use std::collections::BTreeMap;
use std::fmt;

/// PHP's default `max_input_vars`: fields after the 1000th are ignored (with a warning in PHP).
pub const MAX_INPUT_VARS: usize = 1000;

/// PHP's default `max_input_nesting_level`.
pub const MAX_INPUT_NESTING_LEVEL: usize = 64;

/// An array key as PHP stores it: canonical decimal integers become integer keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PhpKey {
    Int(i64),
    Str(Vec<u8>),
}

impl PhpKey {
    /// The key PHP's "symtable" functions use for these bytes (`ZEND_HANDLE_NUMERIC_STR`).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match canonical_int(bytes) {
            Some(n) => Self::Int(n),
            None => Self::Str(bytes.to_vec()),
        }
    }

    fn append_encoded(&self, out: &mut String) {
        match self {
            // `-` and digits are literal under urlencode, so no encoding step is needed.
            Self::Int(n) => out.push_str(&n.to_string()),
            Self::Str(bytes) => urlencode_into(out, bytes),
        }
    }
}

impl fmt::Display for PhpKey {
    /// For logs and error messages: integer keys in decimal, string keys as UTF-8 (lossy).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(n) => write!(f, "{n}"),
            Self::Str(bytes) => f.write_str(&String::from_utf8_lossy(bytes)),
        }
    }
}

/// Whether PHP would treat `bytes` as an integer array key: an optional `-`, then 1–19 digits
/// with no leading zero (but `"0"` itself), within `i64`. `"-0"` stays a string, as in PHP.
fn canonical_int(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits[0] == b'0' && bytes.len() > 1 {
        return None;
    }
    // At most 19 digits: always fits in a u64.
    let magnitude = digits.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    if negative {
        // -9223372036854775808 is accepted, one more is not.
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// A parsed value: PHP's `parse_str` only ever produces strings and arrays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhpValue {
    /// The decoded bytes; not necessarily UTF-8 (`%FF` is a valid escape).
    Str(Vec<u8>),
    Array(PhpArray),
}

impl PhpValue {
    /// The value as text: `None` for an array or for bytes that are not UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(bytes) => std::str::from_utf8(bytes).ok(),
            Self::Array(_) => None,
        }
    }

    /// The raw decoded bytes of a scalar; `None` for an array.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Str(bytes) => Some(bytes),
            Self::Array(_) => None,
        }
    }

    pub fn as_array(&self) -> Option<&PhpArray> {
        match self {
            Self::Str(_) => None,
            Self::Array(array) => Some(array),
        }
    }

    pub fn is_array(&self) -> bool {
        matches!(self, Self::Array(_))
    }
}

/// An ordered PHP array: insertion order is kept, overwriting keeps the position, removal
/// leaves no gap in the iteration order.
#[derive(Debug, Clone)]
pub struct PhpArray {
    /// Slots in insertion order; `None` marks a removed element (PHP's `IS_UNDEF` bucket), so
    /// that removing stays cheap and the index stays valid.
    slots: Vec<Option<(PhpKey, PhpValue)>>,
    index: BTreeMap<PhpKey, usize>,
    /// PHP's `nNextFreeElement`: `i64::MIN` until an integer key is inserted, and then one past
    /// the largest integer key ever inserted (negative keys included, since PHP 8.0).
    next_free: i64,
}

impl Default for PhpArray {
    fn default() -> Self {
        Self { slots: Vec::new(), index: BTreeMap::new(), next_free: i64::MIN }
    }
}

impl PartialEq for PhpArray {
    /// Same elements in the same order; the next free index is bookkeeping, not content.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for PhpArray {}

impl PhpArray {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The element named `name`, looked up the way PHP does (`"5"` finds the integer key 5).
    pub fn get(&self, name: &str) -> Option<&PhpValue> {
        self.get_key(&PhpKey::from_bytes(name.as_bytes()))
    }

    pub fn get_key(&self, key: &PhpKey) -> Option<&PhpValue> {
        let slot = *self.index.get(key)?;
        self.slots.get(slot)?.as_ref().map(|(_, value)| value)
    }

    /// Removes and returns the element named `name`; the others keep their order.
    pub fn remove(&mut self, name: &str) -> Option<PhpValue> {
        self.remove_key(&PhpKey::from_bytes(name.as_bytes()))
    }

    pub fn remove_key(&mut self, key: &PhpKey) -> Option<PhpValue> {
        let slot = self.index.remove(key)?;
        self.slots.get_mut(slot)?.take().map(|(_, value)| value)
    }

    /// Elements in PHP's iteration order.
    pub fn iter(&self) -> impl Iterator<Item = (&PhpKey, &PhpValue)> {
        self.slots.iter().flatten().map(|(key, value)| (key, value))
    }

    /// `$array[$key] = $value`: overwrite in place, or append a new element.
    fn set(&mut self, key: PhpKey, value: PhpValue) {
        match self.index.get(&key).copied().and_then(|slot| self.value_mut(slot)) {
            Some(existing) => *existing = value,
            None => {
                self.insert_new(key, value);
            }
        }
    }

    /// Appends an element whose key is known to be absent; returns its slot.
    fn insert_new(&mut self, key: PhpKey, value: PhpValue) -> usize {
        if let PhpKey::Int(n) = key
            && n >= self.next_free
        {
            // PHP saturates instead of overflowing; the next append then collides and fails.
            self.next_free = n.saturating_add(1);
        }
        let slot = self.slots.len();
        self.index.insert(key.clone(), slot);
        self.slots.push(Some((key, value)));
        slot
    }

    fn value_mut(&mut self, slot: usize) -> Option<&mut PhpValue> {
        self.slots.get_mut(slot)?.as_mut().map(|(_, value)| value)
    }

    /// `$array[] = $value` (`zend_hash_next_index_insert`). `None` when the next index is
    /// already taken, which only happens once `PHP_INT_MAX` has been used; PHP then drops the
    /// value.
    fn push(&mut self, value: PhpValue) -> Option<&mut PhpValue> {
        let key = PhpKey::Int(if self.next_free == i64::MIN { 0 } else { self.next_free });
        if self.index.contains_key(&key) {
            return None;
        }
        let slot = self.insert_new(key, value);
        self.value_mut(slot)
    }

    /// The array stored under `key`, created at the end if missing; a scalar stored there is
    /// replaced by an empty array in place, as PHP does for `a=1&a[x]=2`. (Always `Some`; the
    /// `Option` only spares this function a panicking path.)
    fn array_at(&mut self, key: PhpKey) -> Option<&mut PhpArray> {
        let slot = match self.index.get(&key) {
            Some(&slot) => slot,
            None => self.insert_new(key, PhpValue::Array(PhpArray::default())),
        };
        let value = self.value_mut(slot)?;
        if !value.is_array() {
            *value = PhpValue::Array(PhpArray::default());
        }
        match value {
            PhpValue::Array(array) => Some(array),
            PhpValue::Str(_) => None,
        }
    }

    fn build_into(&self, out: &mut String, prefix: Option<&str>) {
        for (key, value) in self.iter() {
            match value {
                PhpValue::Array(inner) => {
                    // `a` at the top, `a%5Bk%5D` below, then `%5B` before the inner key.
                    let mut nested = String::new();
                    if let Some(prefix) = prefix {
                        nested.push_str(prefix);
                    }
                    key.append_encoded(&mut nested);
                    if prefix.is_some() {
                        nested.push_str("%5D");
                    }
                    nested.push_str("%5B");
                    inner.build_into(out, Some(&nested));
                }
                PhpValue::Str(bytes) => {
                    if !out.is_empty() {
                        out.push('&');
                    }
                    if let Some(prefix) = prefix {
                        out.push_str(prefix);
                    }
                    key.append_encoded(out);
                    if prefix.is_some() {
                        out.push_str("%5D");
                    }
                    out.push('=');
                    urlencode_into(out, bytes);
                }
            }
        }
    }
}

/// The result of `parse_str($query, $params)`: the top-level variables in PHP's order.
/// Two queries are equal when they hold the same PHP array, however many repeats it took.
#[derive(Debug, Clone, Default)]
pub struct PhpQuery {
    params: PhpArray,
    /// How many fields of the query string resolved to each top-level name. PHP silently keeps
    /// the last of repeated fields; the verifier needs to know that there were several.
    occurrences: BTreeMap<PhpKey, usize>,
}

impl PartialEq for PhpQuery {
    fn eq(&self, other: &Self) -> bool {
        self.params == other.params
    }
}

impl Eq for PhpQuery {}

impl PhpQuery {
    /// `parse_str($query, $result)` on a raw query string (the part after `?`, still
    /// percent-encoded). Never fails: like PHP, it makes something of any input.
    pub fn parse(query: &str) -> Self {
        let mut parsed = Self::default();
        // PHP copies the query into a C string and tokenises it with strtok: the first NUL
        // ends it and empty fields (`&&`) do not count.
        let raw = query.as_bytes();
        let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
        let fields = raw.split(|&b| b == b'&').filter(|field| !field.is_empty());
        for field in fields.take(MAX_INPUT_VARS) {
            let (name, value) = match field.iter().position(|&b| b == b'=') {
                Some(eq) => (&field[..eq], url_decode(&field[eq + 1..])),
                None => (field, Vec::new()),
            };
            let name = url_decode(name);
            // The name is handed on as a C string (the value is binary-safe), so a decoded
            // `%00` ends it.
            let name = name.split(|&b| b == 0).next().unwrap_or_default();
            parsed.register(name, value);
        }
        parsed
    }

    /// `http_build_query($params)` with PHP's defaults.
    pub fn build(&self) -> String {
        let mut out = String::new();
        self.params.build_into(&mut out, None);
        out
    }

    pub fn get(&self, name: &str) -> Option<&PhpValue> {
        self.params.get(name)
    }

    /// `unset($params[$name])`, returning what was there.
    pub fn remove(&mut self, name: &str) -> Option<PhpValue> {
        self.params.remove(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PhpKey, &PhpValue)> {
        self.params.iter()
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    pub fn as_array(&self) -> &PhpArray {
        &self.params
    }

    /// How many fields of the query string assigned to the top-level variable `name`,
    /// including repeats that PHP silently overwrote (`q=a&q=b` → 2, `q=a&q[]=b` → 2).
    pub fn occurrences(&self, name: &str) -> usize {
        self.occurrences.get(&PhpKey::from_bytes(name.as_bytes())).copied().unwrap_or(0)
    }

    /// `php_register_variable_ex`: stores one decoded field.
    ///
    /// The steps run in PHP's order because PHP can stop half-way and keep what it did so far:
    /// a forbidden key or a failed append drops the value, but arrays already created or
    /// converted on the way stay (`x=1&x[__Host-a]=2` leaves `x` an empty array).
    fn register(&mut self, name: &[u8], value: Vec<u8>) {
        // Leading spaces are not part of the name, not even for the prefix check below.
        let start = name.iter().position(|&b| b != b' ').unwrap_or(name.len());
        let name = &name[start..];
        let Some(Resolved { top, path, too_deep }) = resolve_name(name) else {
            return;
        };
        if is_forbidden(&top, name) {
            return;
        }
        let top = PhpKey::from_bytes(&top);
        *self.occurrences.entry(top.clone()).or_default() += 1;

        let Some((last, inner)) = path.split_last() else {
            self.params.set(top, PhpValue::Str(value));
            return;
        };
        let Some(mut table) = self.params.array_at(top.clone()) else {
            return;
        };
        for step in inner {
            let next = match step {
                Step::Key(key) if is_forbidden(key, name) => None,
                Step::Key(key) => table.array_at(PhpKey::from_bytes(key)),
                Step::Append => match table.push(PhpValue::Array(PhpArray::default())) {
                    Some(PhpValue::Array(array)) => Some(array),
                    _ => None,
                },
            };
            // A forbidden key, or the next index already taken: PHP drops the field here.
            let Some(next) = next else { return };
            table = next;
        }
        if too_deep {
            // PHP deletes the whole top-level variable, whatever earlier fields put there.
            self.params.remove_key(&top);
            return;
        }
        match last {
            Step::Key(key) if is_forbidden(key, name) => {}
            Step::Key(key) => table.set(PhpKey::from_bytes(key), PhpValue::Str(value)),
            Step::Append => {
                // A failed append drops the value, as in PHP.
                let _ = table.push(PhpValue::Str(value));
            }
        }
    }
}

/// One `[...]` level of a variable name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// `[k]`: the key bytes exactly as written between the brackets.
    Key(Vec<u8>),
    /// `[]` (or `[` + one whitespace + `]`): the next free integer index.
    Append,
}

/// Where a decoded variable name sends its value: `$params[top][path[0]]…[path[n-1]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    top: Vec<u8>,
    path: Vec<Step>,
    /// Nested deeper than [`MAX_INPUT_NESTING_LEVEL`]: PHP walks `top` and all but the last
    /// step of `path` (creating arrays), then deletes `top` instead of assigning.
    too_deep: bool,
}

/// PHP's name handling in `php_register_variable_ex`, separated from the storing so that it
/// can be reasoned about (and tested) on its own. `name` is decoded, NUL-free and has no
/// leading spaces. `None` when PHP ignores the name (it is empty before any `[`).
fn resolve_name(name: &[u8]) -> Option<Resolved> {
    // Up to the first `[`, spaces and dots become underscores (PHP variable names cannot
    // contain them); what follows the `[` is left as written.
    let mut buf = name.to_vec();
    let mut first_open = None;
    for (i, b) in buf.iter_mut().enumerate() {
        match *b {
            b' ' | b'.' => *b = b'_',
            b'[' => {
                first_open = Some(i);
                break;
            }
            _ => {}
        }
    }
    let top = buf[..first_open.unwrap_or(buf.len())].to_vec();
    if top.is_empty() {
        return None;
    }
    let plain = |top: Vec<u8>| Some(Resolved { top, path: Vec::new(), too_deep: false });
    let Some(mut open) = first_open else {
        return plain(top);
    };

    let mut path = Vec::new();
    let mut level = 0;
    loop {
        level += 1;
        if level > MAX_INPUT_NESTING_LEVEL {
            return Some(Resolved { top, path, too_deep: true });
        }
        let key_start = open + 1;
        // One whitespace character (C `isspace`) right after `[` is skipped when looking for an
        // empty `[]`, but stays part of a non-empty key.
        let mut probe = key_start;
        if buf.get(probe).is_some_and(|&b| is_c_space(b)) {
            probe += 1;
        }
        let close;
        if buf.get(probe) == Some(&b']') {
            close = probe;
            path.push(Step::Append);
        } else {
            let found = buf.get(probe..).and_then(|rest| rest.iter().position(|&b| b == b']'));
            let Some(offset) = found else {
                // An unmatched `[`.
                if level == 1 {
                    // Not an array after all: the `[` becomes `_` and the rest of the name is
                    // mangled like a plain name.
                    buf[open] = b'_';
                    for b in &mut buf[key_start..] {
                        if matches!(*b, b' ' | b'.' | b'[') {
                            *b = b'_';
                        }
                    }
                    return plain(buf);
                }
                // Deeper down PHP assigns to the key of the previous level and ignores the
                // rest (`a[x][y=1` sets `a[x]`).
                return Some(Resolved { top, path, too_deep: false });
            };
            close = probe + offset;
            path.push(Step::Key(buf[key_start..close].to_vec()));
        }
        // Only an immediately following `[` continues; anything else after `]` is ignored.
        match buf.get(close + 1) {
            Some(b'[') => open = close + 1,
            _ => {
                return Some(Resolved { top, path, too_deep: false });
            }
        }
    }
}

/// PHP refuses any key of a field (the variable name or an array index) that starts with
/// `__Host-` or `__Secure-` unless the field's name itself starts with it (cookie-prefix
/// spoofing fix, CVE-2022-31629 and its 2024 completion, in PHP 8.2.24+; applied to every
/// input, `parse_str` included). `name` is the field's name before mangling.
fn is_forbidden(key: &[u8], name: &[u8]) -> bool {
    const PREFIXES: [&[u8]; 2] = [b"__Host-", b"__Secure-"];
    PREFIXES.iter().any(|prefix| key.starts_with(prefix) && !name.starts_with(prefix))
}

/// C `isspace` in the "C" locale, which is what PHP 8 runs `parse_str` under.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// PHP `urldecode`: `+` is a space, `%XX` (two hex digits, any case) is a byte, anything else,
/// including a `%` without two hex digits after it, is kept as it is.
pub fn url_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (input.get(i + 1).and_then(hex_value), input.get(i + 2).and_then(hex_value)) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    out
}

fn hex_value(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// PHP `urlencode` (RFC 1738 flavour): `A-Za-z0-9-_.` literal, space → `+`, every other byte
/// `%XX` with uppercase hex. Note that `~` is encoded, unlike in `rawurlencode`.
pub fn urlencode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len());
    urlencode_into(&mut out, input);
    out
}

fn urlencode_into(out: &mut String, input: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in input {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0x0f)]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `parse_str` then `http_build_query`: the C of the signature, before any removal.
    fn roundtrip(query: &str) -> String {
        PhpQuery::parse(query).build()
    }

    fn text<'a>(q: &'a PhpQuery, name: &str) -> Option<&'a str> {
        q.get(name).and_then(PhpValue::as_str)
    }

    #[test]
    fn urlencode_matches_php() {
        assert_eq!(urlencode(b"AZaz09-_."), "AZaz09-_.");
        assert_eq!(urlencode(b"john s"), "john+s");
        assert_eq!(urlencode(b"~*+/"), "%7E%2A%2B%2F");
        assert_eq!(urlencode("é".as_bytes()), "%C3%A9");
        assert_eq!(urlencode(b"\0\xff"), "%00%FF");
        assert_eq!(urlencode(b""), "");
    }

    #[test]
    fn url_decode_matches_php() {
        assert_eq!(url_decode(b"john+s"), b"john s");
        assert_eq!(url_decode(b"john%20s"), b"john s");
        assert_eq!(url_decode(b"%2B%2b%7e~"), b"++~~");
        assert_eq!(url_decode(b"%C3%A9"), "é".as_bytes());
        // Invalid or truncated escapes stay literal.
        assert_eq!(url_decode(b"%"), b"%");
        assert_eq!(url_decode(b"%4"), b"%4");
        assert_eq!(url_decode(b"%4g%zz100%"), b"%4g%zz100%");
        assert_eq!(url_decode(b"%%41"), b"%A");
        assert_eq!(url_decode(b"%00"), b"\0");
    }

    #[test]
    fn canonical_int_follows_zend_rules() {
        assert_eq!(canonical_int(b"0"), Some(0));
        assert_eq!(canonical_int(b"5"), Some(5));
        assert_eq!(canonical_int(b"-3"), Some(-3));
        assert_eq!(canonical_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(canonical_int(b"-9223372036854775808"), Some(i64::MIN));
        for not_int in [
            &b""[..],
            b"-",
            b"-0",
            b"05",
            b"00",
            b"+5",
            b"5 ",
            b"1e3",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999",
        ] {
            assert_eq!(canonical_int(not_int), None, "{:?}", String::from_utf8_lossy(not_int));
        }
    }

    #[test]
    fn the_search_example_is_unchanged() {
        assert_eq!(roundtrip("q=red&expires=1500472622"), "q=red&expires=1500472622");
    }

    #[test]
    fn values_are_reencoded_from_their_decoded_form() {
        assert_eq!(roundtrip("q=john%20s"), "q=john+s");
        assert_eq!(roundtrip("q=john+s"), "q=john+s");
        assert_eq!(roundtrip("q=john%2Bs"), "q=john%2Bs");
        assert_eq!(roundtrip("q=~"), "q=%7E");
        assert_eq!(roundtrip("q=%7E"), "q=%7E");
        assert_eq!(roundtrip("q=%7e"), "q=%7E");
        assert_eq!(roundtrip("q=*"), "q=%2A");
        assert_eq!(roundtrip("q=a/b"), "q=a%2Fb");
        assert_eq!(roundtrip("q=%C3%A9"), "q=%C3%A9");
        assert_eq!(roundtrip("q=é"), "q=%C3%A9");
        assert_eq!(roundtrip("q=%zz"), "q=%25zz");
        assert_eq!(roundtrip("q=50%"), "q=50%25");
        assert_eq!(roundtrip("q=a%00b"), "q=a%00b");
    }

    #[test]
    fn bare_and_empty_values() {
        assert_eq!(roundtrip("flag"), "flag=");
        assert_eq!(roundtrip("e="), "e=");
        assert_eq!(roundtrip("a==b"), "a=%3Db");
        let q = PhpQuery::parse("flag&e=");
        assert_eq!(text(&q, "flag"), Some(""));
        assert_eq!(text(&q, "e"), Some(""));
    }

    #[test]
    fn empty_fields_and_names_are_skipped() {
        assert_eq!(roundtrip(""), "");
        assert_eq!(roundtrip("&&a=1&&&b=2&"), "a=1&b=2");
        assert_eq!(roundtrip("=1&[]=2&[x]=3&%20=4&+=5&a=6"), "a=6");
    }

    #[test]
    fn duplicate_names_keep_the_first_position_and_the_last_value() {
        assert_eq!(roundtrip("q=zzz&expires=1&q=jo"), "q=jo&expires=1");
        let q = PhpQuery::parse("q=zzz&expires=1&q=jo");
        assert_eq!(q.occurrences("q"), 2);
        assert_eq!(q.occurrences("expires"), 1);
        assert_eq!(q.occurrences("nope"), 0);
    }

    #[test]
    fn names_are_mangled_like_php_variable_names() {
        assert_eq!(roundtrip("a.b=1"), "a_b=1");
        assert_eq!(roundtrip("a+b=1"), "a_b=1");
        assert_eq!(roundtrip("a%20b=1"), "a_b=1");
        assert_eq!(roundtrip("a b=1"), "a_b=1");
        assert_eq!(roundtrip("+++a=1"), "a=1");
        assert_eq!(roundtrip("%20a.b%20=1"), "a_b_=1");
        // Only spaces are dropped at the start, not other whitespace.
        assert_eq!(roundtrip("%09a=1"), "%09a=1");
        // Other characters are kept (and re-encoded).
        assert_eq!(roundtrip("a]b=1&a-b=2&%C3%A9=3"), "a%5Db=1&a-b=2&%C3%A9=3");
        // Both spellings end up as the same variable.
        assert_eq!(roundtrip("a.b=1&a_b=2"), "a_b=2");
    }

    #[test]
    fn an_unmatched_bracket_becomes_an_underscore() {
        assert_eq!(roundtrip("a[b=1"), "a_b=1");
        assert_eq!(roundtrip("a[=1"), "a_=1");
        assert_eq!(roundtrip("a[b.c d[e=1"), "a_b_c_d_e=1");
        assert_eq!(roundtrip("a.x[b=1"), "a_x_b=1");
        // Deeper down, the rest of the name is ignored.
        assert_eq!(roundtrip("a[x][y=1"), "a%5Bx%5D=1");
        assert_eq!(roundtrip("a[][y=1"), "a%5B0%5D=1");
    }

    #[test]
    fn arrays_nest_and_flatten() {
        assert_eq!(roundtrip("a[]=x"), "a%5B0%5D=x");
        assert_eq!(roundtrip("a[k][z]=1"), "a%5Bk%5D%5Bz%5D=1");
        assert_eq!(roundtrip("a[]=x&a[]=y&b=2&a[k]=z"), "a%5B0%5D=x&a%5B1%5D=y&a%5Bk%5D=z&b=2");
        // Text after `]` that is not `[` is ignored.
        assert_eq!(roundtrip("a[x]junk=1"), "a%5Bx%5D=1");
        assert_eq!(roundtrip("a[x]junk[y]=1"), "a%5Bx%5D=1");
        // Keys inside brackets are not mangled, but are re-encoded.
        assert_eq!(roundtrip("a[b.c d]=1"), "a%5Bb.c+d%5D=1");
        assert_eq!(roundtrip("a[b[c]=1"), "a%5Bb%5Bc%5D=1");
        // `[ ]` counts as `[]`; a leading space in a longer key is kept.
        assert_eq!(roundtrip("a[ ]=1&a[ x]=2&a[%09]=3&a[  ]=4"), "a%5B0%5D=1&a%5B+x%5D=2&a%5B1%5D=3&a%5B++%5D=4");
        let q = PhpQuery::parse("a[]=x");
        assert!(q.get("a").is_some_and(PhpValue::is_array));
        assert_eq!(q.get("a").and_then(PhpValue::as_str), None);
    }

    #[test]
    fn appends_use_php_next_free_index() {
        assert_eq!(roundtrip("a[5]=x&a[]=y"), "a%5B5%5D=x&a%5B6%5D=y");
        // PHP >= 8.0: n + 1 even for a negative n.
        assert_eq!(roundtrip("a[-3]=x&a[]=y"), "a%5B-3%5D=x&a%5B-2%5D=y");
        // Non-canonical numbers are string keys and do not move the index.
        assert_eq!(roundtrip("a[05]=x&a[]=y&a[-0]=z&a[]=w"), "a%5B05%5D=x&a%5B0%5D=y&a%5B-0%5D=z&a%5B1%5D=w");
        // "5" and 5 are the same key.
        assert_eq!(roundtrip("a[5]=x&a[4]=y&a[5]=z"), "a%5B5%5D=z&a%5B4%5D=y");
        // Once PHP_INT_MAX is used the next append fails and PHP drops the value.
        assert_eq!(roundtrip("a[9223372036854775807]=x&a[]=y&a[][k]=z"), "a%5B9223372036854775807%5D=x");
        // Appending to a nested array.
        assert_eq!(roundtrip("a[][x]=1&a[][x]=2"), "a%5B0%5D%5Bx%5D=1&a%5B1%5D%5Bx%5D=2");
    }

    #[test]
    fn scalars_and_arrays_replace_each_other_in_place() {
        assert_eq!(roundtrip("a=1&b=2&a[]=3"), "a%5B0%5D=3&b=2");
        assert_eq!(roundtrip("a[]=1&b=2&a=3"), "a=3&b=2");
        assert_eq!(roundtrip("a[x]=1&a[x][y]=2"), "a%5Bx%5D%5By%5D=2");
    }

    #[test]
    fn a_nul_ends_the_query_or_the_name() {
        assert_eq!(roundtrip("a%00b=1"), "a=1");
        assert_eq!(roundtrip("%00=1&b=2"), "b=2");
        assert_eq!(roundtrip("a=1\0&b=2"), "a=1");
    }

    /// Expected outputs recorded from PHP 8.2.36 (`php -r 'parse_str($q, $p); echo
    /// http_build_query($p);'`).
    #[test]
    fn cookie_prefixes_are_refused_unless_the_name_really_has_them() {
        let php = [
            ("__Host-a=1&..Host-b=2&_.Secure-c=3&__Secure-d=4", "__Host-a=1&__Secure-d=4"),
            ("+__Host-a=1", "__Host-a=1"),
            ("_[Host-a", ""),
            ("x[__Host-a", "x___Host-a="),
            ("x[__Host-a]", ""),
            ("x[y][__Host-a]", ""),
            ("x[a__Host-]", "x%5Ba__Host-%5D="),
            ("x[ __Host-a]", "x%5B+__Host-a%5D="),
            ("x[__host-a]", "x%5B__host-a%5D="),
            ("__Host-a[__Host-b]", "__Host-a%5B__Host-b%5D="),
            ("__Host-a[__Secure-b]", ""),
            ("..Host-[a]", ""),
            // Arrays made on the way to a refused key stay.
            ("x=1&x[__Host-a]=2", ""),
            ("x=1&y=2&x[a][__Host-a]=2", "y=2"),
            ("x[][__Host-a]=1&x[]=2", "x%5B1%5D=2"),
            ("x[5]=1&x[__Host-a]=2&x[]=3", "x%5B5%5D=1&x%5B6%5D=3"),
        ];
        for (query, expected) in php {
            assert_eq!(roundtrip(query), expected, "{query}");
        }
    }

    #[test]
    fn numeric_top_level_names_are_integers() {
        let q = PhpQuery::parse("5=a&05=b");
        assert_eq!(
            q.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            vec![PhpKey::Int(5), PhpKey::Str(b"05".to_vec())]
        );
        assert_eq!(text(&q, "5"), Some("a"));
        assert_eq!(q.build(), "5=a&05=b");
    }

    #[test]
    fn nesting_is_limited_like_php() {
        let deep = |levels: usize| format!("a{}=1", "[x]".repeat(levels));
        let allowed = PhpQuery::parse(&deep(MAX_INPUT_NESTING_LEVEL));
        assert_eq!(allowed.build(), format!("a{}=1", "%5Bx%5D".repeat(MAX_INPUT_NESTING_LEVEL)));
        // Too deep: PHP deletes the whole variable, including what earlier fields stored there.
        let too_deep = format!("b=0&a=1&{}&c=2", deep(MAX_INPUT_NESTING_LEVEL + 1));
        let q = PhpQuery::parse(&too_deep);
        assert_eq!(q.build(), "b=0&c=2");
        assert_eq!(q.occurrences("a"), 2);
        // A later field recreates it at the end.
        assert_eq!(roundtrip(&format!("{too_deep}&a=3")), "b=0&c=2&a=3");
    }

    #[test]
    fn only_max_input_vars_fields_are_read() {
        let mut query: Vec<String> = (0..MAX_INPUT_VARS).map(|i| format!("k{i}=v")).collect();
        query.push("last=1".to_owned());
        let q = PhpQuery::parse(&query.join("&"));
        assert_eq!(q.len(), MAX_INPUT_VARS);
        assert!(q.get("k999").is_some());
        assert!(q.get("last").is_none());
        // Empty fields do not count towards the limit.
        let q = PhpQuery::parse(&format!("{}a=1", "&".repeat(5000)));
        assert_eq!(text(&q, "a"), Some("1"));
    }

    #[test]
    fn remove_keeps_the_order_of_the_rest() {
        let mut q = PhpQuery::parse("a=1&sig=x&b=2&c=3");
        assert_eq!(q.remove("sig"), Some(PhpValue::Str(b"x".to_vec())));
        assert_eq!(q.remove("sig"), None);
        assert_eq!(q.build(), "a=1&b=2&c=3");
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn resolve_name_cases() {
        let key = |k: &str| Step::Key(k.as_bytes().to_vec());
        let resolved =
            |top: &str, path: Vec<Step>| Some(Resolved { top: top.as_bytes().to_vec(), path, too_deep: false });
        assert_eq!(resolve_name(b"a[b][]"), resolved("a", vec![key("b"), Step::Append]));
        assert_eq!(resolve_name(b""), None);
        assert_eq!(resolve_name(b"[a]"), None);
        assert_eq!(resolve_name(b"x.y[a.b]"), resolved("x_y", vec![key("a.b")]));
        assert_eq!(resolve_name(b"_[Host-a"), resolved("__Host-a", vec![]));
    }

    /// Characters that exercise every branch of the parser.
    fn quirky_query() -> impl Strategy<Value = String> {
        let alphabet = prop::sample::select(vec![
            "[", "]", "=", "&", "%", "+", ".", " ", "\t", "a", "b", "0", "5", "-", "_", "%5B", "%5D", "%20", "%2",
            "%00", "%41", "%C3%A9", "é", "~", "__Host-", "\0",
        ]);
        prop::collection::vec(alphabet, 0..48).prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_build_is_stable(query in any::<String>()) {
            let once = roundtrip(&query);
            prop_assert_eq!(roundtrip(&once), once);
        }

        #[test]
        fn quirky_queries_build_stably(query in quirky_query()) {
            let once = roundtrip(&query);
            let twice = roundtrip(&once);
            prop_assert_eq!(&twice, &once);
            // The rebuilt string is ASCII: everything else is percent-encoded.
            prop_assert!(once.is_ascii());
        }

        #[test]
        fn encode_then_decode_is_identity(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(url_decode(urlencode(&bytes).as_bytes()), bytes);
        }
    }
}
