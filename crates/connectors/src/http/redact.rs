//! Redaction for the request log and error messages: secret-bearing parameters by name, and
//! known secret values (credentials, session ids) wherever they appear, raw or URL-encoded.

use std::sync::Arc;

use crmhub_core::Secret;
use crmhub_core::secret::REDACTED;
use url::{Position, Url};

/// Whether a parameter or JSON key by this name carries a secret.
///
/// `code` is not such a name: it is how CRMs name their error (Vtiger's `"code":
/// "INVALID_SESSIONID"`), the one field that says what went wrong. A secret that travels as
/// `code` (an OAuth authorization code) is masked by value, through the call's `redact` list.
pub fn is_sensitive_name(name: &str) -> bool {
    // Folded to lowercase ASCII letters and digits without allocating: it runs for every key
    // of every logged body.
    let mut folded = [0u8; 64];
    let mut len = 0;
    for byte in name.bytes().filter(u8::is_ascii_alphanumeric) {
        if len == folded.len() {
            let long: String =
                name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
            return is_sensitive_folded(&long);
        }
        folded[len] = byte.to_ascii_lowercase();
        len += 1;
    }
    is_sensitive_folded(std::str::from_utf8(&folded[..len]).unwrap_or_default())
}

fn is_sensitive_folded(folded: &str) -> bool {
    const EXACT: &[&str] = &["sig", "key", "auth", "hash"];
    const CONTAINS: &[&str] =
        &["pass", "secret", "token", "apikey", "accesskey", "session", "signature", "authorization", "credential"];
    // One walk trying each needle where its first letter is, rather than a substring search
    // per needle: names are short, and setting up nine searches cost more than the walk.
    let bytes = folded.as_bytes();
    EXACT.contains(&folded)
        || (0..bytes.len()).any(|at| {
            CONTAINS
                .iter()
                .any(|needle| needle.as_bytes()[0] == bytes[at] && bytes[at..].starts_with(needle.as_bytes()))
        })
}

/// Values to mask wherever they appear, plus the name-based rules. Cheap to clone: a
/// connector keeps one and hands it to every call until the values change.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Every form a value is looked for in: raw, and URL-encoded where that differs.
    forms: Arc<[Secret]>,
    /// The longest form, in bytes.
    longest: usize,
}

impl Redactor {
    /// Values shorter than 4 characters are not masked by value (they would mask unrelated
    /// text); parameters named like secrets are masked whatever their length.
    pub fn new(values: impl IntoIterator<Item = Secret>) -> Self {
        let mut forms: Vec<Secret> = Vec::new();
        for value in values.into_iter().filter(|s| s.expose().chars().count() >= 4) {
            let encoded =
                Secret::new(url::form_urlencoded::byte_serialize(value.expose().as_bytes()).collect::<String>());
            for form in [value, encoded] {
                if !forms.contains(&form) {
                    forms.push(form);
                }
            }
        }
        let longest = forms.iter().map(|f| f.expose().len()).max().unwrap_or(0);
        Self { forms: forms.into(), longest }
    }

    pub fn text(&self, input: &str) -> String {
        let mut out = input.to_owned();
        // Every logged URL and body passes here and almost none holds a secret: look before
        // copying.
        for form in self.forms.iter().map(Secret::expose) {
            if out.contains(form) {
                out = out.replace(form, REDACTED);
            }
        }
        out
    }

    /// The URL with secret-named query parameters replaced, no user information, and known
    /// values masked. Written out from the URL's parts: cloning it and setting the query
    /// would parse the query once more.
    pub fn url(&self, url: &Url) -> String {
        let mut clean = String::with_capacity(url.as_str().len() + 16);
        clean.push_str(&url[..Position::AfterScheme]);
        if url.has_authority() {
            clean.push_str("://");
            clean.push_str(&url[Position::BeforeHost..Position::AfterPath]);
        } else {
            clean.push(':');
            clean.push_str(&url[Position::BeforePath..Position::AfterPath]);
        }
        if let Some(query) = url.query() {
            clean.push('?');
            clean.push_str(&redacted_pairs(query));
        }
        if let Some(fragment) = url.fragment() {
            clean.push('#');
            clean.push_str(fragment);
        }
        self.text(&clean)
    }

    /// A request or response body for the log: form and JSON bodies are redacted by key; any
    /// body has known values masked and is cut to `limit` bytes (on a character boundary).
    ///
    /// Only what the log keeps is worked on: a JSON body is redacted as it is read and the
    /// reading stops a little past `limit`, so a large answer costs its preview, not its size
    /// (a search's page of records is tens of kilobytes; the preview is 2 KiB by default).
    /// The little past is the longest known value, so that a value crossing the cut is masked
    /// whole before the cut.
    pub fn body(&self, body: &[u8], content_type: Option<&str>, limit: usize) -> Option<String> {
        if body.is_empty() {
            return None;
        }
        // The strict check is the fast one; the lossy pass only for a body that fails it.
        let text = std::str::from_utf8(body).map_or_else(|_| String::from_utf8_lossy(body), std::borrow::Cow::Borrowed);
        let content_type = content_type.unwrap_or_default();
        let room = limit.saturating_add(self.longest);
        let structured = if content_type.contains("x-www-form-urlencoded") {
            Some((redacted_pairs(&text), 0))
        } else if content_type.contains("json") || text.trim_start().starts_with(['{', '[']) {
            json_preview(&text, room).map(|(preview, read)| (preview, text.len() - read))
        } else {
            None
        };
        let (kept, unread) = match &structured {
            Some((preview, unread)) => (preview.as_str(), *unread),
            None => {
                let end = char_floor(&text, room);
                (&text[..end], text.len() - end)
            }
        };
        Some(cut(&self.text(kept), limit, unread))
    }
}

/// Form-encoded pairs (a query string or a form body) with secret-named values replaced,
/// written back in their canonical encoding: the raw and encoded forms that masking by value
/// looks for then cover every value, however it was encoded when sent.
fn redacted_pairs(encoded: &str) -> String {
    redacted_canonical_pairs(encoded).unwrap_or_else(|| rewritten_pairs(encoded))
}

/// What [`rewritten_pairs`] writes, for pairs already in canonical encoding (as every URL and
/// form crmhub builds is), copied rather than decoded and encoded again; `None` for any other
/// input. A pair is canonical when each of its bytes is one the encoding keeps, `+`, or an
/// upper-case `%XX` for a byte it must escape, and its decoded text is UTF-8.
fn redacted_canonical_pairs(encoded: &str) -> Option<String> {
    let mut out = String::with_capacity(encoded.len());
    let mut decoded = Vec::new();
    for (at, pair) in encoded.split('&').enumerate() {
        let (name, value) = pair.split_once('=')?;
        let sensitive = is_sensitive_name(canonical_text(name, &mut decoded)?);
        canonical_text(value, &mut decoded)?;
        if at > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        if sensitive {
            out.extend(url::form_urlencoded::byte_serialize(REDACTED.as_bytes()));
        } else {
            out.push_str(value);
        }
    }
    Some(out)
}

/// A canonically encoded name or value, decoded into `buffer`; `None` when not canonical.
fn canonical_text<'b>(encoded: &str, buffer: &'b mut Vec<u8>) -> Option<&'b str> {
    let kept = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_');
    let upper_hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    buffer.clear();
    let mut bytes = encoded.bytes();
    while let Some(byte) = bytes.next() {
        match byte {
            b'+' => buffer.push(b' '),
            b'%' => {
                let escaped = upper_hex(bytes.next()?)? << 4 | upper_hex(bytes.next()?)?;
                if kept(escaped) || escaped == b' ' {
                    return None;
                }
                buffer.push(escaped);
            }
            b if kept(b) => buffer.push(b),
            _ => return None,
        }
    }
    std::str::from_utf8(buffer).ok()
}

/// Decodes every pair and encodes it again, replacing secret-named values.
fn rewritten_pairs(encoded: &str) -> String {
    let pairs = url::form_urlencoded::parse(encoded.as_bytes())
        .map(|(k, v)| if is_sensitive_name(&k) { (k, REDACTED.into()) } else { (k, v) });
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// What an open container expects next.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    /// In an object, before a key (`true`) or a value (`false`).
    Object {
        key_next: bool,
    },
    Array,
}

/// `text` as compact JSON whose secret-named keys (see [`is_sensitive_name`]) have their
/// scalar values replaced, written until the output reaches `room` bytes: the output, and how
/// many bytes of `text` it covers. `None` when what was read is not JSON. Strings with escapes
/// are written as serde_json writes them, so a known value is found whatever its escaping.
fn json_preview(text: &str, room: usize) -> Option<(String, usize)> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(room.min(text.len()) + 16);
    let mut open: Vec<Open> = Vec::new();
    let mut redact_next = false;
    let mut at = 0;
    loop {
        while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        let Some(&byte) = bytes.get(at) else { break };
        if out.len() >= room {
            return Some((out, at));
        }
        match byte {
            b'{' | b'[' => {
                // A container under a secret name is walked into; its own keys decide.
                redact_next = false;
                open.push(if byte == b'{' { Open::Object { key_next: true } } else { Open::Array });
                out.push(char::from(byte));
                at += 1;
            }
            b'}' | b']' => {
                let expected =
                    if byte == b'}' { matches!(open.pop()?, Open::Object { .. }) } else { open.pop()? == Open::Array };
                if !expected {
                    return None;
                }
                out.push(char::from(byte));
                at += 1;
            }
            b',' | b':' => {
                if let (b',', Some(Open::Object { key_next })) = (byte, open.last_mut()) {
                    *key_next = true;
                }
                out.push(char::from(byte));
                at += 1;
            }
            b'"' => {
                let end = string_end(bytes, at)?;
                let token = &text[at..end];
                if let Some(Open::Object { key_next }) =
                    open.last_mut().filter(|o| matches!(o, Open::Object { key_next: true }))
                {
                    *key_next = false;
                    let name = decoded(token)?;
                    redact_next = is_sensitive_name(&name);
                    write_string(&mut out, token)?;
                } else if std::mem::take(&mut redact_next) {
                    write_redacted(&mut out);
                } else {
                    write_string(&mut out, token)?;
                }
                at = end;
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                let len =
                    bytes[at..].iter().position(|b| matches!(b, b',' | b'}' | b']' | b':') || b.is_ascii_whitespace());
                let end = at + len.unwrap_or(bytes.len() - at);
                if std::mem::take(&mut redact_next) {
                    write_redacted(&mut out);
                } else {
                    out.push_str(&text[at..end]);
                }
                at = end;
            }
            _ => return None,
        }
    }
    open.is_empty().then_some((out, at))
}

/// Where the string starting at `start` (its opening quote) ends, past its closing quote.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    loop {
        match bytes.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
}

/// A string token's text.
fn decoded(token: &str) -> Option<std::borrow::Cow<'_, str>> {
    if token.contains('\\') {
        serde_json::from_str::<String>(token).ok().map(std::borrow::Cow::Owned)
    } else {
        Some(std::borrow::Cow::Borrowed(&token[1..token.len() - 1]))
    }
}

fn write_string(out: &mut String, token: &str) -> Option<()> {
    if token.contains('\\') {
        out.push_str(&serde_json::to_string(&decoded(token)?).ok()?);
    } else {
        out.push_str(token);
    }
    Some(())
}

fn write_redacted(out: &mut String) {
    out.push('"');
    out.push_str(REDACTED);
    out.push('"');
}

/// The largest character boundary at or below `at`.
fn char_floor(text: &str, at: usize) -> usize {
    let mut end = at.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// `text` cut to `limit` bytes, saying how many were cut (with `unread` more never read).
fn cut(text: &str, limit: usize, unread: usize) -> String {
    if text.len() <= limit && unread == 0 {
        return text.to_owned();
    }
    let end = char_floor(text, limit);
    format!("{}… [{} bytes cut]", &text[..end], text.len() - end + unread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_carry_secrets() {
        for name in [
            "sessionName",
            "accessKey",
            "api_key",
            "access_token",
            "refresh_token",
            "client_secret",
            "sig",
            "password",
            "Authorization",
            "X-Api-Key",
        ] {
            assert!(is_sensitive_name(name), "{name}");
        }
        for name in ["operation", "query", "username", "elementType", "id", "q", "expires", "code"] {
            assert!(!is_sensitive_name(name), "{name}");
        }
    }

    #[test]
    fn urls_lose_secret_parameters_and_known_values() {
        let r = Redactor::new([Secret::new("5c1ad80d610a7a7aabe2e")]);
        let url = Url::parse(
            "https://crm.example.com/webservice.php?operation=query&sessionName=5c1ad80d610a7a7aabe2e&query=SELECT",
        )
        .unwrap();
        let logged = r.url(&url);
        assert!(!logged.contains("5c1ad80d610a7a7aabe2e"), "{logged}");
        assert!(logged.contains("operation=query"));
        // Named like a secret however it is spelled; a known value is masked however it was
        // encoded (`%63` is `c`).
        let spelled =
            Url::parse("https://x.io/a?q=Ann+Lee%21&session%4eame=s3&api_key=&flag&x=5%631ad80d610a7a7aabe2e").unwrap();
        assert_eq!(
            r.url(&spelled),
            "https://x.io/a?q=Ann+Lee%21&sessionName=%5Bredacted%5D&api_key=%5Bredacted%5D&flag=&x=[redacted]"
        );
        let in_path = Url::parse("https://x.io/hooks/5c1ad80d610a7a7aabe2e/in").unwrap();
        assert!(!r.url(&in_path).contains("5c1ad80d610a7a7aabe2e"));
        // User information never reaches the log; port, path, query and fragment do.
        let with_user = Url::parse("http://admin:hunter22@[::1]:8080/a/b?x=1#top").unwrap();
        assert_eq!(r.url(&with_user), "http://[::1]:8080/a/b?x=1#top");
        assert_eq!(r.url(&Url::parse("https://x.io").unwrap()), "https://x.io/");
        assert_eq!(r.url(&Url::parse("https://x.io/?").unwrap()), "https://x.io/?");
    }

    proptest::proptest! {
        /// The copy taken for canonical pairs writes what decoding and encoding them again
        /// writes, and canonical pairs (as a serializer writes them) take it.
        #[test]
        fn canonical_pairs_are_copied_as_they_would_be_rewritten(
            pairs in proptest::collection::vec(("[a-zA-Z_ %=&é\\[\\]+*.-]{0,12}", "[a-z0-9 %=&+é'*._-]{0,12}"), 0..5),
            noise in "[a-zA-Z0-9%=&+é'*._-]{0,24}",
        ) {
            let canonical = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
            if !canonical.is_empty() {
                proptest::prop_assert_eq!(redacted_canonical_pairs(&canonical), Some(rewritten_pairs(&canonical)));
            }
            for input in [noise.clone(), format!("{canonical}&{noise}")] {
                if let Some(copied) = redacted_canonical_pairs(&input) {
                    proptest::prop_assert_eq!(copied, rewritten_pairs(&input), "{}", input);
                }
            }
        }
    }

    #[test]
    fn pairs_not_in_canonical_form_are_rewritten() {
        for odd in ["a=%63", "a=%2a", "a=%20", "a", "a=1&&b=2", "a=%FF", "a=%5b", "a='", "a=1=2", ""] {
            assert_eq!(redacted_canonical_pairs(odd), None, "{odd}");
        }
        assert_eq!(redacted_pairs("session%4eame=s3&a=%63"), "sessionName=%5Bredacted%5D&a=c");
        assert_eq!(redacted_pairs("sessionName=s3&q=%27x%27"), "sessionName=%5Bredacted%5D&q=%27x%27");
    }

    #[test]
    fn bodies_are_redacted_by_key_and_value_and_cut() {
        let r = Redactor::new([Secret::new("topsecret-value")]);
        let form = b"operation=login&username=admin&accessKey=abc123";
        let logged = r.body(form, Some("application/x-www-form-urlencoded"), 1000).unwrap();
        assert!(logged.contains("username=admin") && !logged.contains("abc123"), "{logged}");

        let json = br#"{"success":true,"result":{"sessionName":"s-1","userId":"19x1","note":"topsecret-value"}}"#;
        let logged = r.body(json, Some("application/json"), 1000).unwrap();
        assert!(!logged.contains("s-1") && !logged.contains("topsecret-value") && logged.contains("19x1"), "{logged}");

        // An error's code names the problem and stays; a secret echoed in its message does not.
        let json = br#"{"success":false,"error":{"code":"INVALID_SESSIONID","message":"bad topsecret-value"}}"#;
        let logged = r.body(json, Some("application/json"), 1000).unwrap();
        assert!(logged.contains(r#""code":"INVALID_SESSIONID""#) && !logged.contains("topsecret-value"), "{logged}");

        let long = "é".repeat(100);
        let cut = r.body(long.as_bytes(), Some("text/plain"), 11).unwrap();
        assert!(cut.starts_with("ééééé") && cut.contains("bytes cut"), "{cut}");
    }

    #[test]
    fn a_large_json_body_is_redacted_only_as_far_as_the_log_keeps_it() {
        let secret = "0123456789abcdef-session";
        let r = Redactor::new([Secret::new(secret)]);
        let records: Vec<String> = (0..500).map(|i| format!(r#"{{"id":"12x{i}","lastname":"Red {i}"}}"#)).collect();
        let body = format!(r#"{{"success":true,"sessionName":"{secret}","result":[{}]}}"#, records.join(","));
        let logged = r.body(body.as_bytes(), Some("application/json"), 200).unwrap();
        let start = format!(r#"{{"success":true,"sessionName":"{REDACTED}","result":[{{"id":"12x0""#);
        assert!(logged.starts_with(&start), "{logged}");
        let (kept, rest) = logged.split_once('…').unwrap();
        assert_eq!(kept.len(), 200, "cut at the limit");
        let cut: usize = rest.trim_start_matches(" [").trim_end_matches(" bytes cut]").parse().unwrap();
        assert!(cut > body.len() - 400 && cut < body.len(), "the bytes cut count the unread ones: {cut}");

        // A known value crossing the limit is masked whole before the cut: no prefix of it shows.
        let body = format!(r#"{{"note":"{}{secret}","more":"{}"}}"#, "x".repeat(190), "y".repeat(1000));
        let logged = r.body(body.as_bytes(), Some("application/json"), 200).unwrap();
        assert!(!logged.contains("0123456789"), "{logged}");
        let raw = r.body(body.as_bytes(), Some("text/plain"), 200).unwrap();
        assert!(!raw.contains("0123456789"), "unstructured bodies too: {raw}");
    }

    #[test]
    fn json_escapes_do_not_hide_a_known_value_and_secret_named_containers_are_walked_into() {
        let r = Redactor::new([Secret::new("abc/def-ghi")]);
        let body = br#"{"note":"abc\/def-ghi", "access_token" : 12345, "auth": {"user": "ann", "password": null},
            "tokens": ["t1", "t2"], "quote": "say \"hi\"", "ok": [true, false, -1.5e3]}"#;
        let logged = r.body(body, Some("application/json"), 10_000).unwrap();
        let expected = r#"{"note":"R","access_token":"R","auth":{"user":"ann","password":"R"},"tokens":["t1","t2"],"quote":"say \"hi\"","ok":[true,false,-1.5e3]}"#;
        assert_eq!(logged, expected.replace('R', REDACTED));
    }

    #[test]
    fn what_is_not_json_is_masked_as_text() {
        let r = Redactor::new([Secret::new("topsecret-value")]);
        for body in [r#"{"unterminated": "topsecret-value"#, r#"{not json topsecret-value}"#, r#"[1, 2}"#] {
            let logged = r.body(body.as_bytes(), Some("application/json"), 1000).unwrap();
            assert!(!logged.contains("topsecret"), "{logged}");
            assert_eq!(logged, body.replace("topsecret-value", REDACTED), "kept as it was, masked");
        }
    }

    #[test]
    fn long_names_are_folded_too() {
        let long = format!("{}_Access_Token", "x".repeat(80));
        assert!(is_sensitive_name(&long));
        assert!(!is_sensitive_name(&"x".repeat(80)));
        assert!(is_sensitive_name("Ünïcode-Session"));
    }
}
