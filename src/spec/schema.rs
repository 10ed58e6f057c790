//! The JSON schema of the spec, for editors (yaml-language-server) and for `servelab schema`.

use super::model::Spec;

/// The schema as pretty JSON with a trailing newline, exactly what `schemas/experiment.schema.json` holds.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Spec);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}
