//! Declarative integration templates: a CRM or SMS API described in one YAML or JSON file,
//! run by a generic connector (format: `docs/templates.md`; schema: `docs/template.schema.json`).

mod engine;
mod expr;
mod lint;
mod model;
mod parse;
mod pointer;
mod request;
#[cfg(test)]
mod tests;

pub use engine::{TemplateConnector, connection_values};
pub use lint::warnings;
pub use model::{EndpointKind, FieldDef, Template, TemplateType, Trigger};
pub use parse::{SourceFormat, TemplateError, TemplateErrors, parse};

/// The JSON Schema of the template format, as published in `docs/`.
pub const JSON_SCHEMA: &str = include_str!("../../../../docs/template.schema.json");
