//! A YAML document as a tree whose every node knows its line, so a task definition that
//! uses something Glass does not support is refused with the feature's name *and* line.
//! `yaml-rust2` parses; its high-level loader drops positions, so the tree is built here
//! from the parser's marked events.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One YAML node with the (1-based) line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A scalar: its text, whether it was quoted (quoted text is always a string), line.
    Scalar {
        /// The text.
        value: String,
        /// Quoted or block scalar (never a number, bool or null).
        quoted: bool,
        /// Line.
        line: usize,
    },
    /// A sequence.
    Seq(Vec<Node>, usize),
    /// A mapping with string keys, in file order.
    Map(Vec<(String, Node)>, usize),
    /// The harness's `!function module.name` tag: Python code, which Glass runs only
    /// where it has a native implementation (`crate::process`).
    Function {
        /// `module.name` as written.
        name: String,
        /// Line.
        line: usize,
    },
}

/// Why a YAML text was refused.
#[derive(Debug, Clone)]
pub struct YamlError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl Node {
    /// The line this node starts on.
    pub fn line(&self) -> usize {
        match self {
            Node::Scalar { line, .. }
            | Node::Seq(_, line)
            | Node::Map(_, line)
            | Node::Function { line, .. } => *line,
        }
    }
    /// The scalar text, if a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }
    /// True for an unquoted `null`, `~` or empty scalar.
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Scalar { value, quoted: false, .. }
            if value.is_empty() || value == "~" || value == "null" || value == "Null" || value == "NULL")
    }
    /// Looks up a key of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(kv, _) => kv.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    /// The node as JSON (unquoted scalars typed as YAML 1.2 core: int, float, bool, null).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Node::Scalar { value, quoted, .. } => {
                if *quoted {
                    return Value::String(value.clone());
                }
                if self.is_null() {
                    return Value::Null;
                }
                match value.as_str() {
                    "true" | "True" | "TRUE" => return Value::Bool(true),
                    "false" | "False" | "FALSE" => return Value::Bool(false),
                    _ => {}
                }
                if let Ok(i) = value.parse::<i64>() {
                    return Value::from(i);
                }
                if value.contains(['.', 'e', 'E']) {
                    if let Ok(f) = value.parse::<f64>() {
                        if f.is_finite() {
                            return Value::from(f);
                        }
                    }
                }
                Value::String(value.clone())
            }
            Node::Function { name, .. } => Value::String(format!("!function {name}")),
            Node::Seq(items, _) => Value::Array(items.iter().map(Node::to_json).collect()),
            Node::Map(kv, _) => {
                Value::Object(kv.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }
}

enum Frame {
    Seq(Vec<Node>, usize),
    Map(Vec<(String, Node)>, Option<(String, usize)>, usize),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    error: Option<YamlError>,
    docs: usize,
}

fn is_function_tag(tag: &Option<Tag>) -> bool {
    tag.as_ref()
        .is_some_and(|t| t.handle == "!" && t.suffix == "function")
}

fn tag_error(tag: &Option<Tag>, line: usize) -> Option<YamlError> {
    let t = tag.as_ref()?;
    // Plain `!!str`-style core tags are harmless; `!function` on a scalar becomes a
    // `Node::Function` judged by the task parser; anything else is refused.
    if t.handle == "!!" || t.handle == "tag:yaml.org,2002:" {
        return None;
    }
    Some(YamlError {
        line,
        message: format!(
            "the YAML tag `{}{}` (Python code via `!function`) is not supported",
            t.handle, t.suffix
        ),
    })
}

impl Builder {
    fn push_node(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(items, _)) => items.push(node),
            Some(Frame::Map(kv, key, _)) => match key.take() {
                None => match node {
                    Node::Scalar { value, line, .. } => *key = Some((value, line)),
                    other => {
                        self.error.get_or_insert(YamlError {
                            line: other.line(),
                            message: "mapping keys must be plain strings".into(),
                        });
                        *key = Some((String::new(), 0));
                    }
                },
                // A nested collection is reported at its key's line.
                Some((k, kl)) => kv.push((
                    k,
                    match node {
                        Node::Seq(items, _) => Node::Seq(items, kl),
                        Node::Map(m, _) => Node::Map(m, kl),
                        scalar => scalar,
                    },
                )),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let line = mark.line();
        match ev {
            Event::DocumentStart => {
                self.docs += 1;
                if self.docs > 1 {
                    self.error = Some(YamlError {
                        line,
                        message: "only one YAML document per task file is supported".into(),
                    });
                }
            }
            Event::Alias(_) => {
                self.error = Some(YamlError {
                    line,
                    message: "YAML aliases (`*name`) are not supported".into(),
                })
            }
            Event::Scalar(value, style, _, tag) => {
                if is_function_tag(&tag) {
                    self.push_node(Node::Function { name: value, line });
                    return;
                }
                if let Some(e) = tag_error(&tag, line) {
                    self.error = Some(e);
                    return;
                }
                let quoted = style != TScalarStyle::Plain;
                self.push_node(Node::Scalar {
                    value,
                    quoted,
                    line,
                });
            }
            Event::SequenceStart(_, tag) => {
                if let Some(e) = tag_error(&tag, line) {
                    self.error = Some(e);
                    return;
                }
                self.stack.push(Frame::Seq(Vec::new(), line));
            }
            Event::MappingStart(_, tag) => {
                if let Some(e) = tag_error(&tag, line) {
                    self.error = Some(e);
                    return;
                }
                self.stack.push(Frame::Map(Vec::new(), None, line));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let node = match self.stack.pop() {
                    Some(Frame::Seq(items, l)) => Node::Seq(items, l),
                    Some(Frame::Map(kv, _, l)) => Node::Map(kv, l),
                    None => return,
                };
                self.push_node(node);
            }
            _ => {}
        }
    }
}

/// Parses one YAML document into a line-marked tree.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut b = Builder::default();
    let mut p = Parser::new_from_str(text);
    p.load(&mut b, true).map_err(|e| YamlError {
        line: e.marker().line(),
        message: e.info().to_string(),
    })?;
    if let Some(e) = b.error {
        return Err(e);
    }
    b.root.ok_or(YamlError {
        line: 1,
        message: "the file is empty".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_carry_lines_and_types() {
        let n = parse("a: 1\nb:\n  - x\n  - 'y'\nc: {d: true}\n").unwrap();
        assert_eq!(n.get("b").unwrap().line(), 2);
        assert_eq!(n.get("c").unwrap().get("d").unwrap().line(), 5);
        assert_eq!(
            n.to_json(),
            serde_json::json!({"a": 1, "b": ["x", "y"], "c": {"d": true}})
        );
    }

    #[test]
    fn function_tags_become_function_nodes_with_their_line() {
        let n = parse("task: t\nprocess_docs: !function utils.process_docs\n").unwrap();
        assert_eq!(
            n.get("process_docs"),
            Some(&Node::Function {
                name: "utils.process_docs".into(),
                line: 2
            })
        );
        let e = parse("task: !custom x\n").unwrap_err();
        assert_eq!(e.line, 1);
    }
}
