//! Jinja templates as lm-evaluation-harness renders them (`jinja2` with
//! `StrictUndefined` and `keep_trailing_newline=True`), through `minijinja` with the
//! Python-method compatibility layer of `minijinja-contrib`, plus the list methods that
//! layer lacks (`list.index`, used by the harness's ARC definitions as
//! `choices.label.index(answerKey)`).

use minijinja::value::{Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior};

/// Builds the environment every task template renders in.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_keep_trailing_newline(true);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_unknown_method_callback(unknown_method);
    env
}

fn unknown_method(
    state: &State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if value.kind() == ValueKind::Seq && method == "index" {
        let [needle] = args else {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "list.index takes exactly one argument here",
            ));
        };
        for (i, item) in value.try_iter()?.enumerate() {
            if &item == needle {
                return Ok(Value::from(i));
            }
        }
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{needle} is not in list"),
        ));
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// If `template` is exactly one `{{ expression }}` block, the expression (so lists and
/// numbers can be read as values instead of as their printed form).
pub fn single_expression(template: &str) -> Option<&str> {
    let t = template.strip_prefix("{{")?.strip_suffix("}}")?;
    let t = t.strip_prefix('-').unwrap_or(t);
    let t = t.strip_suffix('-').unwrap_or(t);
    (!t.contains("{{") && !t.contains("}}") && !t.contains("{%")).then_some(t.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harness_style_python_methods_work() {
        let env = environment();
        let doc = serde_json::json!({"choices": {"label": ["A", "B", "C"]}, "answerKey": "C",
            "q": "  Why?  "});
        let s = env
            .render_str(
                "{{choices.label.index(answerKey)}}|{{q.strip()}}|{{q.replace('?', '!')}}",
                &doc,
            )
            .unwrap();
        assert_eq!(s, "2|Why?|  Why!  ");
        assert!(env.render_str("{{missing}}", &doc).is_err());
        assert_eq!(env.render_str("a\n", &doc).unwrap(), "a\n");
        assert_eq!(
            single_expression("{{ choices.text }}"),
            Some("choices.text")
        );
        assert_eq!(single_expression("{{a}} {{b}}"), None);
    }
}
