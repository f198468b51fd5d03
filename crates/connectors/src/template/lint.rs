//! Warnings about a template that parses but would fail at the remote side: a query in a
//! dialect the template declares (`dialect: vtql` on a parameter) that the CRM will refuse.
//! They do not stop a template from being stored; `crmhub template check` prints them.

use super::expr::{Scope, Source};
use super::model::{Dialect, ParamValue, Template};
use super::parse::TemplateError;

/// Every warning about the template, each with the path of the endpoint it concerns.
pub fn warnings(template: &Template) -> Vec<TemplateError> {
    let mut out = Vec::new();
    for (i, endpoint) in template.endpoints.iter().enumerate() {
        for param in &endpoint.params {
            let (Some(Dialect::Vtql), ParamValue::Expr(expr)) = (param.dialect, &param.value) else { continue };
            // References are rendered as a stand-in: the `vtql` filters make any value a quoted
            // literal, so only the template's own text can shape the query.
            let Ok(text) = expr.render(&StandIn) else { continue };
            for problem in vtql_problems(&text) {
                out.push(TemplateError {
                    path: format!("endpoints[{i}]"),
                    message: format!("parameter {:?} ({}): {problem}", param.name, endpoint.name),
                });
            }
        }
    }
    out
}

struct StandIn;

impl Scope for StandIn {
    fn lookup(&self, _: &Source) -> Option<String> {
        Some("x".to_owned())
    }
}

/// What Vtiger 8.2's VTQL parser refuses in a query that is otherwise plausible: grouping
/// parentheses (its grammar has none; only `IN (…)` and `count(*)` have parentheses) and a
/// missing trailing `;`.
fn vtql_problems(query: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut quoted = false;
    let mut word = String::new();
    let mut previous_word = String::new();
    let chars: Vec<char> = query.chars().collect();
    for (at, &c) in chars.iter().enumerate() {
        if c == '\'' {
            // A doubled quote inside a literal toggles twice, leaving it open.
            quoted = !quoted;
            continue;
        }
        if quoted {
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            previous_word = std::mem::take(&mut word);
        }
        if c == '(' {
            let count_all = previous_word.eq_ignore_ascii_case("count")
                && chars[at + 1..].iter().filter(|c| !c.is_whitespace()).take(2).eq(['*', ')'].iter());
            if !previous_word.eq_ignore_ascii_case("IN") && !count_all {
                problems.push(format!(
                    "VTQL has no grouping parentheses (Vtiger answers QUERY_SYNTAX_ERROR); write the \
                     conditions flat — AND binds tighter than OR — near {:?}",
                    chars[at..].iter().take(30).collect::<String>()
                ));
            }
        }
        if !c.is_whitespace() {
            previous_word.clear();
        }
    }
    if !query.trim_end().ends_with(';') || quoted {
        problems.push("a VTQL query must end with \";\" (Vtiger answers QUERY_SYNTAX_ERROR)".to_owned());
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::vtql_problems;

    #[test]
    fn grouping_parentheses_are_found_and_the_others_are_not() {
        for flat in [
            "SELECT * FROM Contacts WHERE firstname LIKE 'a' AND lastname LIKE 'b' OR email LIKE 'c';",
            "SELECT * FROM Contacts WHERE account_id IN ('11x2','11x3') ORDER BY id LIMIT 0,100;",
            "SELECT * FROM Contacts WHERE account_id in('11x2');",
            "SELECT count(*) FROM HelpDesk WHERE contact_id = '12x3';",
            "SELECT COUNT( * ) FROM HelpDesk;",
            "SELECT * FROM Contacts WHERE lastname = '(not) a group' OR lastname = 'O''Brien (x)';",
        ] {
            assert!(vtql_problems(flat).is_empty(), "{flat}: {:?}", vtql_problems(flat));
        }
        for grouped in [
            "SELECT * FROM Contacts WHERE (lastname LIKE 'a');",
            "SELECT * FROM Contacts WHERE lastname LIKE 'a' AND (firstname = 'b' OR email = 'c');",
            "SELECT * FROM Contacts WHERE lastname = 'it''s' OR (a = 'b');",
            "SELECT count(id) FROM Contacts;",
        ] {
            let problems = vtql_problems(grouped);
            assert_eq!(problems.len(), 1, "{grouped}: {problems:?}");
            assert!(problems[0].contains("no grouping parentheses"), "{problems:?}");
        }
        assert!(vtql_problems("SELECT * FROM Contacts")[0].contains("must end with"));
        assert!(vtql_problems("SELECT * FROM Contacts WHERE a = ';")[0].contains("must end with"));
    }
}
