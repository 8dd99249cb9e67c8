//! Jinja templates as lm-evaluation-harness renders them (`jinja2` with
//! `StrictUndefined` and `keep_trailing_newline=True`), through `minijinja` with the
//! Python-method compatibility layer of `minijinja-contrib`, plus the list methods that
//! layer lacks (`list.index`, used by the harness's ARC definitions as
//! `choices.label.index(answerKey)`).
//!
//! A task file is untrusted input, so the work of a template is bounded
//! (`docs/eval.md`, "Templates"): at most [`MAX_FUEL`] engine instructions and
//! [`MAX_RENDER_BYTES`] of output per render, `join`/`replace` drawing from the same
//! byte budget, and constructs that let values outgrow the inputs refused when the task
//! loads ([`check`]).

use std::cell::Cell;
use std::io::Write;

use minijinja::machinery::ast::{self, CallArg, CallType, Expr, Stmt};
use minijinja::value::{Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior};

/// Engine instructions one render (or `doc_to_choice` expression) may run; harness
/// templates run hundreds.
pub const MAX_FUEL: u64 = 1_000_000;

/// The most text one render may produce, and the budget `join` and `replace` draw from
/// per render: the most text Glass tokenizes at once.
pub const MAX_RENDER_BYTES: usize = glass_data::sources::MAX_DOCUMENT_BYTES;

/// Builds the environment every task template renders in.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_keep_trailing_newline(true);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_unknown_method_callback(unknown_method);
    env.set_fuel(Some(MAX_FUEL));
    env.add_filter("join", join_filter);
    env.add_filter("replace", replace_filter);
    env
}

thread_local! {
    /// Bytes `join` and `replace` may still build in the current render.
    static BUDGET: Cell<usize> = const { Cell::new(MAX_RENDER_BYTES) };
}

fn charge(bytes: usize, what: &str) -> Result<(), Error> {
    BUDGET.with(|b| {
        let left = b.get();
        if bytes > left {
            Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "{what} would build {bytes} bytes, past the {} MiB a template may build per render",
                    MAX_RENDER_BYTES >> 20
                ),
            ))
        } else {
            b.set(left - bytes);
            Ok(())
        }
    })
}

/// Why a render stopped, when it was Glass's bound (not the template's own error).
pub fn limit_message(e: &Error) -> Option<String> {
    (e.kind() == ErrorKind::OutOfFuel).then(|| {
        format!(
            "ran past {MAX_FUEL} instructions, the limit for one render (a loop that does not end, or one far longer than any task needs)"
        )
    })
}

/// An output that refuses to grow past [`MAX_RENDER_BYTES`].
struct Bounded {
    out: Vec<u8>,
    overflow: bool,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > MAX_RENDER_BYTES {
            self.overflow = true;
            return Err(std::io::Error::other("render too large"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders `source` over `ctx` within the bounds: fuel, output and byte budget.
pub fn render<S: serde::Serialize>(
    env: &Environment<'_>,
    source: &str,
    ctx: S,
) -> Result<String, Error> {
    BUDGET.with(|b| b.set(MAX_RENDER_BYTES));
    let t = env.template_from_str(source)?;
    let mut w = Bounded {
        out: Vec::new(),
        overflow: false,
    };
    match t.render_captured_to(ctx, &mut w) {
        Ok(_) => {}
        Err(_) if w.overflow => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "renders more than {} MiB, the most text Glass tokenizes at once",
                    MAX_RENDER_BYTES >> 20
                ),
            ))
        }
        Err(e) => return Err(e),
    }
    String::from_utf8(w.out)
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, "renders invalid UTF-8"))
}

/// Evaluates the expression `expr` over `ctx` within the same bounds.
pub fn eval_expression<S: serde::Serialize>(
    env: &Environment<'_>,
    expr: &str,
    ctx: S,
) -> Result<Value, Error> {
    BUDGET.with(|b| b.set(MAX_RENDER_BYTES));
    env.compile_expression(expr)?.eval(ctx)
}

/// The length of `x` as text (as `join` writes it).
fn text_len(x: &Value) -> usize {
    match x.as_str() {
        Some(s) => s.len(),
        None => x.to_string().len(),
    }
}

/// `join`, with the result's size charged to the render's budget before it is built.
fn join_filter(
    value: &Value,
    joiner: Option<&str>,
    attribute: Option<&Value>,
) -> Result<String, Error> {
    let joiner = joiner.unwrap_or("");
    let items: Vec<Value> = match value.as_str() {
        Some(s) => s.chars().map(Value::from).collect(),
        None => value.try_iter()?.collect(),
    };
    let items: Vec<Value> = match attribute {
        Some(a) => items
            .iter()
            .map(|x| x.get_item(a))
            .collect::<Result<_, _>>()?,
        None => items,
    };
    let bytes = items.iter().map(text_len).sum::<usize>()
        + joiner.len().saturating_mul(items.len().saturating_sub(1));
    charge(bytes, "join")?;
    let mut out = String::with_capacity(bytes);
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(joiner);
        }
        match x.as_str() {
            Some(s) => out.push_str(s),
            None => out.push_str(&x.to_string()),
        }
    }
    Ok(out)
}

/// How many bytes `s.replace(old, new, count)` makes, as Python counts matches (an empty
/// `old` matches before every character and at the end).
fn replaced_len(s: &str, old: &str, new: &str, count: Option<usize>) -> usize {
    let matches = if old.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(old).count()
    };
    let matches = count.map_or(matches, |c| c.min(matches));
    (s.len() - matches.saturating_mul(old.len()).min(s.len()))
        .saturating_add(matches.saturating_mul(new.len()))
}

/// `replace` (the filter), with the result's size charged to the budget first.
fn replace_filter(s: &str, old: &str, new: &str, count: Option<usize>) -> Result<String, Error> {
    charge(replaced_len(s, old, new, count), "replace")?;
    Ok(match count {
        Some(c) => s.replacen(old, new, c),
        None => s.replace(old, new),
    })
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
    // The methods that can multiply their input draw from the render's byte budget.
    if let Some(s) = value.as_str() {
        match (method, args) {
            ("replace", [old, new, rest @ ..]) => {
                if let (Some(old), Some(new)) = (old.as_str(), new.as_str()) {
                    let count = rest
                        .first()
                        .and_then(|c| i64::try_from(c.clone()).ok())
                        .and_then(|c| usize::try_from(c).ok());
                    charge(replaced_len(s, old, new, count), "str.replace")?;
                }
            }
            ("join", [items]) => {
                let items: Vec<Value> = match items.as_str() {
                    Some(t) => t.chars().map(Value::from).collect(),
                    None => items.try_iter()?.collect(),
                };
                let bytes = items.iter().map(text_len).sum::<usize>()
                    + s.len().saturating_mul(items.len().saturating_sub(1));
                charge(bytes, "str.join")?;
            }
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Filters that never make their output much larger than their input (or are bounded
/// by the byte budget: `join`, `replace`).
pub const ALLOWED_FILTERS: &[&str] = &[
    "abs",
    "attr",
    "bool",
    "capitalize",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "int",
    "items",
    "join",
    "last",
    "length",
    "list",
    "lower",
    "max",
    "min",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "sort",
    "string",
    "striptags",
    "sum",
    "title",
    "trim",
    "truncate",
    "unique",
    "upper",
    "wordcount",
];

/// Functions a template may call.
pub const ALLOWED_FUNCTIONS: &[&str] = &["range", "dict"];

/// A construct refused by [`check`]: the template line and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Line within the template (1-based).
    pub line: usize,
    /// What is refused and why.
    pub message: String,
}

/// Checks that a template uses nothing that lets its values grow with every
/// instruction instead of with its inputs: macros and `call` (recursion), `set` inside a
/// loop, binding a variable (`set`, `with`, a loop's sequence) from a value that reads
/// another variable the template bound, `{% set %}…{% endset %}` and `{% filter %}`
/// blocks, `*` and `**`, functions other than `range` and `dict`, filters outside
/// [`ALLOWED_FILTERS`], `str.format`, and `include`/`import`/`extends`/`block`. A template
/// that does not parse is left to the render, which reports it per row.
pub fn check(source: &str) -> Result<(), Refusal> {
    let Ok(stmt) =
        minijinja::machinery::parse(source, "<template>", Default::default(), Default::default())
    else {
        return Ok(());
    };
    let mut c = Checker::default();
    c.stmt(&stmt, false)
}

/// [`check`] on every template of a task file (`doc_to_text`, `doc_to_target`,
/// `doc_to_choice`, `description`), refusing naming the file, line and key.
pub fn check_task(root: &crate::yaml::Node, source: &str) -> Result<(), crate::EvalError> {
    for key in [
        "doc_to_text",
        "doc_to_target",
        "doc_to_choice",
        "description",
    ] {
        if let Some(crate::yaml::Node::Scalar { value, line, .. }) = root.get(key) {
            if let Err(r) = check(value) {
                return Err(crate::EvalError::Task(format!(
                    "{source}:{line}: `{key}`, line {} of the template: {}",
                    r.line, r.message
                )));
            }
        }
    }
    Ok(())
}

#[derive(Default)]
struct Checker<'a> {
    /// Names the template binds (`set`, `with`, loop variables).
    bound: Vec<&'a str>,
}

fn refuse(span: minijinja::machinery::Span, message: impl Into<String>) -> Refusal {
    Refusal {
        line: span.start_line as usize,
        message: message.into(),
    }
}

fn statement(span: minijinja::machinery::Span, what: &str) -> Refusal {
    refuse(
        span,
        format!("the `{what}` statement is not allowed in a task template (it lets a template's work or values grow without bound)"),
    )
}

impl<'a> Checker<'a> {
    fn body(&mut self, stmts: &[Stmt<'a>], in_loop: bool) -> Result<(), Refusal> {
        stmts.iter().try_for_each(|s| self.stmt(s, in_loop))
    }

    fn targets(&mut self, e: &Expr<'a>) {
        match e {
            Expr::Var(v) => self.bound.push(v.id),
            Expr::List(l) => l.items.iter().for_each(|i| self.targets(i)),
            _ => {}
        }
    }

    /// Checks an expression that binds a variable: besides [`Checker::expr`], it must not
    /// read a variable the template bound.
    fn binding(&self, e: &Expr<'a>, what: &str) -> Result<(), Refusal> {
        let mut vars = Vec::new();
        self.expr(e, &mut vars)?;
        if let Some(v) = vars.iter().find(|v| self.bound.contains(v)) {
            return Err(refuse(
                e.span(),
                format!("binding a variable ({what}) from a value that reads `{v}`, which the template bound, lets values double per statement or nesting level"),
            ));
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt<'a>, in_loop: bool) -> Result<(), Refusal> {
        match s {
            Stmt::Template(t) => self.body(&t.children, in_loop),
            Stmt::EmitExpr(e) => self.expr(&e.expr, &mut Vec::new()),
            Stmt::EmitRaw(_) => Ok(()),
            Stmt::IfCond(c) => {
                self.expr(&c.expr, &mut Vec::new())?;
                self.body(&c.true_body, in_loop)?;
                self.body(&c.false_body, in_loop)
            }
            Stmt::ForLoop(f) => {
                if f.recursive {
                    return Err(refuse(
                        f.span(),
                        "a `recursive` loop is not allowed in a task template",
                    ));
                }
                self.binding(&f.iter, "a loop's sequence")?;
                self.targets(&f.target);
                if let Some(e) = &f.filter_expr {
                    self.expr(e, &mut Vec::new())?;
                }
                self.body(&f.body, true)?;
                self.body(&f.else_body, in_loop)
            }
            Stmt::WithBlock(w) => {
                for (target, value) in &w.assignments {
                    self.binding(value, "`with`")?;
                    self.targets(target);
                }
                self.body(&w.body, in_loop)
            }
            Stmt::Set(set) => {
                if in_loop {
                    return Err(refuse(
                        set.span(),
                        "`set` inside a loop is not allowed in a task template (a value rebound on every iteration can grow without bound)",
                    ));
                }
                if !matches!(set.target, Expr::Var(_)) {
                    return Err(refuse(set.span(), "`set` may only bind a plain variable"));
                }
                self.binding(&set.expr, "`set`")?;
                self.targets(&set.target);
                Ok(())
            }
            Stmt::SetBlock(b) => Err(statement(b.span(), "set … endset")),
            Stmt::AutoEscape(b) => self.body(&b.body, in_loop),
            Stmt::FilterBlock(b) => Err(statement(b.span(), "filter")),
            Stmt::Block(b) => Err(statement(b.span(), "block")),
            Stmt::Import(b) => Err(statement(b.span(), "import")),
            Stmt::FromImport(b) => Err(statement(b.span(), "from … import")),
            Stmt::Extends(b) => Err(statement(b.span(), "extends")),
            Stmt::Include(b) => Err(statement(b.span(), "include")),
            Stmt::Macro(b) => Err(statement(b.span(), "macro")),
            Stmt::CallBlock(b) => Err(statement(b.span(), "call")),
            Stmt::Do(b) => Err(statement(b.span(), "do")),
            #[allow(unreachable_patterns)]
            _ => Err(refuse(
                minijinja::machinery::Span::default(),
                "a statement Glass does not allow in task templates",
            )),
        }
    }

    fn args(&self, args: &[CallArg<'a>], vars: &mut Vec<&'a str>) -> Result<(), Refusal> {
        for a in args {
            match a {
                CallArg::Pos(e)
                | CallArg::Kwarg(_, e)
                | CallArg::PosSplat(e)
                | CallArg::KwargSplat(e) => self.expr(e, vars)?,
            }
        }
        Ok(())
    }

    /// Checks `e` and collects the variables it reads into `vars`.
    fn expr(&self, e: &Expr<'a>, vars: &mut Vec<&'a str>) -> Result<(), Refusal> {
        match e {
            Expr::Var(v) => {
                vars.push(v.id);
                Ok(())
            }
            Expr::Const(_) => Ok(()),
            Expr::Slice(s) => {
                self.expr(&s.expr, vars)?;
                for x in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                    self.expr(x, vars)?;
                }
                Ok(())
            }
            Expr::UnaryOp(u) => self.expr(&u.expr, vars),
            Expr::BinOp(b) => {
                if matches!(b.op, ast::BinOpKind::Mul | ast::BinOpKind::Pow) {
                    return Err(refuse(
                        b.span(),
                        "`*` and `**` are not allowed in a task template (repetition: a string times a number grows without bound)",
                    ));
                }
                self.expr(&b.left, vars)?;
                self.expr(&b.right, vars)
            }
            Expr::Compare(c) => {
                self.expr(&c.expr, vars)?;
                c.ops.iter().try_for_each(|o| self.expr(&o.expr, vars))
            }
            Expr::IfExpr(i) => {
                self.expr(&i.test_expr, vars)?;
                self.expr(&i.true_expr, vars)?;
                if let Some(f) = &i.false_expr {
                    self.expr(f, vars)?;
                }
                Ok(())
            }
            Expr::Filter(f) => {
                if !ALLOWED_FILTERS.contains(&f.name) {
                    return Err(refuse(
                        f.span(),
                        format!(
                            "the filter `{}` is not allowed in a task template (allowed: {})",
                            f.name,
                            ALLOWED_FILTERS.join(", ")
                        ),
                    ));
                }
                if let Some(x) = &f.expr {
                    self.expr(x, vars)?;
                }
                self.args(&f.args, vars)
            }
            Expr::Test(t) => {
                self.expr(&t.expr, vars)?;
                self.args(&t.args, vars)
            }
            Expr::GetAttr(g) => self.expr(&g.expr, vars),
            Expr::GetItem(g) => {
                self.expr(&g.expr, vars)?;
                self.expr(&g.subscript_expr, vars)
            }
            Expr::Call(c) => {
                match c.identify_call() {
                    CallType::Function(name) if ALLOWED_FUNCTIONS.contains(&name) => {}
                    CallType::Function(name) => {
                        return Err(refuse(
                            c.span(),
                            format!("the function `{name}` is not allowed in a task template (allowed: range, dict)"),
                        ))
                    }
                    CallType::Method(target, name) => {
                        if name == "format" {
                            return Err(refuse(
                                c.span(),
                                "`str.format` is not allowed in a task template (its output is not bounded by its inputs)",
                            ));
                        }
                        self.expr(target, vars)?;
                    }
                    CallType::Block(_) | CallType::Object(_) => {
                        return Err(refuse(c.span(), "this call is not allowed in a task template"))
                    }
                }
                self.args(&c.args, vars)
            }
            Expr::List(l) => l.items.iter().try_for_each(|i| self.expr(i, vars)),
            Expr::Map(m) => {
                m.keys.iter().try_for_each(|i| self.expr(i, vars))?;
                m.values.iter().try_for_each(|i| self.expr(i, vars))
            }
        }
    }
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
