//! minijinja templates in spec values. A value that is exactly one `{{ expression }}` keeps its type (so
//! `"{{ max_model_len }}"` is a number and `"{{ none }}"` drops a flag); anything else renders to a string.
//! The environment has no loader and no access to files or the process environment: a template sees only
//! the variables the planner passes (the grid point and `model`, `host`, `port`).

use minijinja::{Environment, UndefinedBehavior, Value};
use std::collections::BTreeSet;

/// Bounds the work one template may do, so a spec cannot hang the planner (`range(10**9)` loops).
const FUEL: u64 = 50_000;
/// Bounds the work of all templates over a whole plan: 10,000 points × a few templates each just under
/// [`FUEL`] would otherwise run for minutes. Ordinary specs use a few instructions per template.
pub const PLAN_FUEL: u64 = 20_000_000;

pub struct Renderer {
    env: Environment<'static>,
    spent: std::cell::Cell<u64>,
}

/// The largest value a spec template may produce: an engine argument, a path, a number.
const MAX_VALUE_BYTES: usize = 1 << 20;
/// The most items a sequence or map produced or printed by a spec template may have.
const MAX_VALUE_ITEMS: usize = 100_000;

impl Default for Renderer {
    fn default() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        guard(&mut env, MAX_VALUE_BYTES, MAX_VALUE_ITEMS);
        Renderer { env, spent: std::cell::Cell::new(0) }
    }
}

/// What fuel does not bound, because it happens in one instruction: printing a huge sequence (`[1] * 10**9` is
/// lazy until printed) and growing a string with chained `replace`. Both are refused before the work is done.
/// Shared with the report templates.
pub fn guard(env: &mut Environment<'_>, max_bytes: usize, max_items: usize) {
    env.set_formatter(move |out, state, value| match value.len() {
        Some(n) if n > max_items && value.as_str().is_none() => Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("a value of {n} items is too large to print (at most {max_items})"),
        )),
        _ => minijinja::escape_formatter(out, state, value),
    });
    env.add_filter("replace", move |text: &str, from: &str, to: &str| {
        let hits = if from.is_empty() { text.chars().count() + 1 } else { text.matches(from).count() };
        if text.len() as u128 + hits as u128 * to.len() as u128 > max_bytes as u128 {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("replace would build a string over {} MiB", max_bytes >> 20),
            ));
        }
        Ok(text.replace(from, to))
    });
}

/// Err when a template's value is too large to be a spec value.
fn check_size(value: &Value) -> Result<(), String> {
    match (value.as_str(), value.len()) {
        (Some(s), _) if s.len() > MAX_VALUE_BYTES => {
            Err(format!("the template produced {} bytes; a spec value may have at most 1 MiB", s.len()))
        }
        (None, Some(n)) if n > MAX_VALUE_ITEMS => {
            Err(format!("the template produced a value of {n} items; at most {MAX_VALUE_ITEMS}"))
        }
        _ => Ok(()),
    }
}

/// Whether `text` contains template syntax at all; plain strings are used as they are.
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// The inner expression when `text` is exactly one `{{ ... }}` block.
fn single_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") || inner.contains("{#") {
        return None;
    }
    Some(inner.trim())
}

fn describe(e: &minijinja::Error) -> String {
    let mut msg = e.to_string();
    // minijinja appends "(in <string>:1)"; the spec location is reported by the caller instead.
    if let Some(at) = msg.find(" (in <") {
        msg.truncate(at);
    }
    msg
}

impl Renderer {
    /// The variables a template reads (top-level names only). Err on a syntax error.
    pub fn variables(&self, text: &str) -> Result<BTreeSet<String>, String> {
        if !is_template(text) {
            return Ok(BTreeSet::new());
        }
        let vars = match single_expression(text) {
            Some(expr) => self.env.compile_expression(expr).map_err(|e| describe(&e))?.undeclared_variables(false),
            None => self.env.template_from_str(text).map_err(|e| describe(&e))?.undeclared_variables(false),
        };
        Ok(vars.into_iter().collect())
    }

    /// Renders `text` against `ctx`. Plain strings come back as string values unchanged.
    pub fn render(&self, text: &str, ctx: &Value) -> Result<Value, String> {
        if !is_template(text) {
            return Ok(Value::from(text));
        }
        // An expression is evaluated as `{% set %}` so that its value keeps its type and the state it leaves
        // says how much fuel it used.
        const SLOT: &str = "__servelab_value";
        let expression = single_expression(text);
        let source = match expression {
            Some(expr) => {
                self.env.compile_expression(expr).map_err(|e| describe(&e))?;
                format!("{{% set {SLOT} = ({expr}) %}}")
            }
            None => text.to_owned(),
        };
        let template = self.env.template_from_str(&source).map_err(|e| describe(&e))?;
        let captured = template.render_captured(ctx).map_err(|e| describe(&e))?;
        let state = captured.state();
        let used = state.fuel_levels().map_or(0, |(consumed, _)| consumed);
        self.spent.set(self.spent.get() + used);
        if self.spent.get() > PLAN_FUEL {
            return Err(format!(
                "the spec's templates ran out of fuel over the whole plan ({PLAN_FUEL} instructions); simplify them or make the grid smaller"
            ));
        }
        match expression {
            Some(expr) => {
                let value = state.lookup(SLOT).unwrap_or(Value::UNDEFINED);
                // Strict undefined only trips when a value is used; an expression's result is returned as is.
                if value.is_undefined() {
                    return Err(format!("`{expr}` is undefined"));
                }
                check_size(&value)?;
                Ok(value)
            }
            None => {
                let value = Value::from(captured.output());
                check_size(&value)?;
                Ok(value)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_expression_keeps_its_type() {
        let r = Renderer::default();
        let ctx = minijinja::context! { n => 512, flag => true };
        assert_eq!(r.render("{{ n }}", &ctx).unwrap().as_i64(), Some(512));
        assert_eq!(r.render("{{ n * 2 }}", &ctx).unwrap().as_i64(), Some(1024));
        assert!(r.render("{{ flag }}", &ctx).unwrap().is_true());
        assert_eq!(r.render("len-{{ n }}", &ctx).unwrap().as_str(), Some("len-512"));
        assert_eq!(r.render("plain", &ctx).unwrap().as_str(), Some("plain"));
    }

    #[test]
    fn undefined_variables_are_errors_and_are_listed() {
        let r = Renderer::default();
        assert!(r.render("{{ missing }}", &minijinja::context! {}).is_err());
        let vars = r.variables("a-{{ x }}-{{ y.z }}").unwrap();
        assert_eq!(vars.into_iter().collect::<Vec<_>>(), vec!["x", "y"]);
        assert!(r.variables("{{ unclosed").is_err());
    }

    #[test]
    fn templates_cannot_read_files_or_the_environment() {
        let r = Renderer::default();
        let ctx = minijinja::context! { n => 1 };
        // No loader: include/import of any path fails.
        assert!(r.render("{% include '/etc/passwd' %}", &ctx).is_err());
        assert!(r.render("{% import 'Cargo.toml' as x %}", &ctx).is_err());
        // Nothing but the passed variables: no `env`, no process environment, no globals that read them.
        assert!(r.render("{{ env.HOME }}", &ctx).is_err());
        assert!(r.render("{{ environ }}", &ctx).is_err());
        assert_eq!(r.variables("{{ env.PATH }}").unwrap().into_iter().collect::<Vec<_>>(), vec!["env"]);
    }

    #[test]
    fn values_that_fuel_does_not_bound_are_refused_before_they_are_built() {
        let r = Renderer::default();
        let ctx = minijinja::context! {};
        let e = r.render("{{ [1] * 10**9 }}", &ctx).unwrap_err();
        assert!(e.contains("1000000000 items"), "{e}");
        let e = r.render("x{{ [1] * 10**9 }}", &ctx).unwrap_err();
        assert!(e.contains("too large to print"), "{e}");
        let e = r.render("{{ ('x' * 100000000) | replace('x', 'xxxxxxxxxx') }}", &ctx).unwrap_err();
        assert!(e.contains("replace would build a string over 1 MiB"), "{e}");
        let e = r.render("{{ 'x' * 2000000 }}", &ctx).unwrap_err();
        assert!(e.contains("at most 1 MiB"), "{e}");
        assert_eq!(r.render("{{ 'a-b' | replace('-', '_') }}", &ctx).unwrap().as_str(), Some("a_b"));
    }

    #[test]
    fn a_whole_plan_has_a_fuel_budget_too() {
        let r = Renderer::default();
        let ctx = minijinja::context! {};
        // Each render stays under the per-template fuel; together they exceed the plan's.
        let heavy = "{% for i in range(10000) %}{% endfor %}";
        let mut error = None;
        for _ in 0..2_000 {
            if let Err(e) = r.render(heavy, &ctx) {
                error = Some(e);
                break;
            }
        }
        assert!(error.unwrap().contains("over the whole plan"));
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let r = Renderer::default();
        let err = r.render(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            &minijinja::context! {},
        );
        assert!(err.is_err());
    }
}
