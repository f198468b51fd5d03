//! A tiny HTML builder for the contact card. Markup can only come from `&'static str`
//! (written in this crate); everything else — CRM data, the untrusted `message_*` values —
//! goes through [`escape_into`], and links only through [`Href`], which admits `http:`/`https:`
//! URLs alone. So a value cannot end up as markup or as a script URL by accident.

use std::fmt;

/// Appends `text` escaped for HTML text content and for double- or single-quoted attribute
/// values (the five characters that can end either).
pub fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// A URL that may be put in an `href`: absolute, with a host, and `http:` or `https:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Href(url::Url);

impl Href {
    /// Only `https:` URLs (the rule for the untrusted `message_socialsignin_url`).
    pub fn https(url: url::Url) -> Option<Self> {
        (url.scheme() == "https" && url.host().is_some()).then_some(Self(url))
    }

    /// `http:` or `https:` URLs (the CRM's own record links, from the operator's connection).
    pub fn web(raw: &str) -> Option<Self> {
        let url = url::Url::parse(raw).ok()?;
        (matches!(url.scheme(), "http" | "https") && url.host().is_some()).then_some(Self(url))
    }
}

impl fmt::Display for Href {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// An HTML document under construction.
#[derive(Debug, Default)]
pub struct Html {
    out: String,
}

impl Html {
    pub fn new() -> Self {
        Self { out: String::with_capacity(4096) }
    }

    /// Trusted markup: only string literals of this crate.
    pub fn markup(&mut self, markup: &'static str) -> &mut Self {
        self.out.push_str(markup);
        self
    }

    /// Text, escaped.
    pub fn text(&mut self, text: &str) -> &mut Self {
        escape_into(&mut self.out, text);
        self
    }

    /// `<tag class="class">`.
    pub fn open(&mut self, tag: &'static str, class: &'static str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(tag);
        if !class.is_empty() {
            self.out.push_str(" class=\"");
            self.out.push_str(class);
            self.out.push('"');
        }
        self.out.push('>');
        self
    }

    pub fn close(&mut self, tag: &'static str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    /// `<tag class="class">text</tag>`, the text escaped.
    pub fn element(&mut self, tag: &'static str, class: &'static str, text: &str) -> &mut Self {
        self.open(tag, class).text(text).close(tag)
    }

    /// A link that opens outside the iframe and tells the target nothing about where it was
    /// followed from.
    pub fn link(&mut self, href: &Href, text: &str) -> &mut Self {
        self.out.push_str("<a href=\"");
        escape_into(&mut self.out, href.0.as_str());
        self.out.push_str("\" target=\"_blank\" rel=\"noopener noreferrer\">");
        self.text(text);
        self.out.push_str("</a>");
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        escape_into(&mut out, text);
        out
    }

    #[test]
    fn escapes_everything_that_can_end_text_or_an_attribute() {
        assert_eq!(escaped("<script>alert(1)</script>"), "&lt;script&gt;alert(1)&lt;/script&gt;");
        assert_eq!(escaped(r#""><img src=x onerror=alert(1)>"#), "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;");
        assert_eq!(escaped("Tom & 'Jerry'"), "Tom &amp; &#39;Jerry&#39;");
        assert_eq!(escaped("&amp;"), "&amp;amp;", "already-escaped text is escaped again, not trusted");
        assert_eq!(escaped("Ngọc Ánh — 日本"), "Ngọc Ánh — 日本");
        assert_eq!(escaped(""), "");
    }

    #[test]
    fn escaped_text_never_contains_a_markup_character() {
        let nasty: String = (0u8..128).map(char::from).chain("é€😀".chars()).collect();
        let out = escaped(&nasty);
        assert!(!out.contains(['<', '>', '"', '\'']));
        // Every `&` starts one of the five entities.
        for (i, _) in out.match_indices('&') {
            let rest = &out[i..];
            assert!(["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].iter().any(|e| rest.starts_with(e)), "{rest}");
        }
    }

    #[test]
    fn only_web_urls_become_hrefs() {
        assert!(Href::web("https://crm.example.com/index.php?module=Contacts&record=5").is_some());
        assert!(Href::web("http://127.0.0.1:8080/x").is_some());
        for bad in ["javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,x", "//evil.example", "/relative", ""]
        {
            assert_eq!(Href::web(bad), None, "{bad}");
        }
        let http = url::Url::parse("http://example.com/").unwrap();
        assert_eq!(Href::https(http), None);
        assert!(Href::https(url::Url::parse("https://example.com/").unwrap()).is_some());
    }

    #[test]
    fn the_builder_escapes_text_and_hrefs() {
        let href = Href::web("https://example.com/?a=1&b=\"2\"").unwrap();
        let mut html = Html::new();
        html.open("p", "note").text("<b>").close("p").element("h1", "", "a&b").link(&href, "<open>");
        assert_eq!(
            html.finish(),
            "<p class=\"note\">&lt;b&gt;</p><h1>a&amp;b</h1>\
             <a href=\"https://example.com/?a=1&amp;b=%222%22\" target=\"_blank\" rel=\"noopener noreferrer\">\
             &lt;open&gt;</a>"
        );
    }
}
