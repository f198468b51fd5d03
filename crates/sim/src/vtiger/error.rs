//! The two ways a Vtiger call fails: a `WebServiceException` rendered as an error envelope
//! (HTTP 200), or a PHP fatal error (HTTP 500, empty body). Codes and messages are copied from the
//! contract's error table, typos included, because clients match on them.

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// `{"success":false,"error":{"message","code"}}` (in that order, as 8.2.0 writes it).
    Ws { code: &'static str, message: String },
    /// HTTP 500, `text/html`, empty body.
    Fatal,
}

pub(crate) type WsResult<T> = Result<T, Failure>;

fn ws(code: &'static str, message: impl Into<String>) -> Failure {
    Failure::Ws { code, message: message.into() }
}

pub(crate) const ACCESS_DENIED: &str = "ACCESS_DENIED";

pub(crate) fn no_username() -> Failure {
    ws(ACCESS_DENIED, "No username given")
}

pub(crate) fn unknown_username() -> Failure {
    ws(ACCESS_DENIED, "username does not exists")
}

pub(crate) fn invalid_credentials() -> Failure {
    ws("INVALID_USER_CREDENTIALS", "Invalid username or password")
}

pub(crate) fn invalid_token() -> Failure {
    ws("INVALID_AUTH_TOKEN", "Specified token is invalid or expired")
}

pub(crate) fn authentication_required() -> Failure {
    ws("AUTHENTICATION_REQUIRED", "Authencation required")
}

pub(crate) fn invalid_session() -> Failure {
    ws("INVALID_SESSIONID", "Session Identifier provided is Invalid")
}

/// Missing or deleted record, wrong module prefix, unknown module on create.
pub(crate) fn denied() -> Failure {
    ws(ACCESS_DENIED, "Permission to perform the operation is denied")
}

/// Malformed id (`abc`, `99x1`) or an id that is not there at all.
pub(crate) fn denied_for_id() -> Failure {
    ws(ACCESS_DENIED, "Permission to perform the operation is denied for id")
}

/// `query` sent as POST: the query parameter is read from the query string only.
pub(crate) fn denied_for_query() -> Failure {
    ws(ACCESS_DENIED, "Permission to perform the operation is denied for query")
}

pub(crate) fn denied_for_name(name: &str) -> Failure {
    ws(ACCESS_DENIED, format!("Permission to perform the operation is denied for name : {name}"))
}

/// Unknown column in a select list. The stray dots are Vtiger's (a PHP concatenation written
/// inside a double-quoted string).
pub(crate) fn denied_select_column(column: &str) -> Failure {
    ws(ACCESS_DENIED, format!("Permission to access '.{column}.' attribute denied."))
}

/// Unknown column in a WHERE (or ORDER BY) clause.
pub(crate) fn denied_where_column(column: &str) -> Failure {
    ws(ACCESS_DENIED, format!("Permission to access {column} attribute denied."))
}

/// An owner field naming a user or group that cannot be assigned.
pub(crate) fn cannot_assign() -> Failure {
    ws(ACCESS_DENIED, "Cannot assign record to the given user")
}

pub(crate) fn reference_invalid(field: &str) -> Failure {
    ws("REFERENCE_INVALID", format!("Invalid reference specified for {field}"))
}

pub(crate) fn mandatory_missing(field: &str) -> Failure {
    ws("MANDATORY_FIELDS_MISSING", format!("{field} does not have a value"))
}

pub(crate) fn syntax_error(message: String) -> Failure {
    ws("QUERY_SYNTAX_ERROR", message)
}

pub(crate) fn internal_error() -> Failure {
    ws("INTERNAL_SERVER_ERROR", "Unknown Error while processing request")
}

/// A syntax error the grammar's actions raise themselves rather than the parser generator.
pub(crate) fn syntax_error_in_query() -> Failure {
    ws("QUERY_SYNTAX_ERROR", "There is an syntax error in query")
}

/// A reference column compared with a value that is not a webservice id (no `x`).
pub(crate) fn invalid_id() -> Failure {
    ws("INVALID_ID_ATTRIBUTE", "Id specified is incorrect")
}
