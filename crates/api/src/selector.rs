//! Label and field selectors, as upstream's `k8s.io/apimachinery/pkg/labels`,
//! `k8s.io/apimachinery/pkg/fields` and `metav1.LabelSelector`.
//!
//! * [`LabelSelector::parse`] reads the `?labelSelector=` syntax (`a=b,c in (x,y),!d`).
//! * [`LabelSelector::from_json`] reads a `metav1.LabelSelector` object
//!   (`matchLabels` / `matchExpressions`), reporting field errors as upstream's validation.
//! * [`FieldSelector::parse`] reads the `?fieldSelector=` syntax (`a=b,c!=d`, `\`-escapes).

use std::fmt;

use serde_json::{Map, Value};

use crate::error::{FieldError, FieldPath};
use crate::names::{is_qualified_name, is_valid_label_value, validate_label_name};

/// A selector string could not be parsed; the message is upstream's, ready for a 400 response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A malformed `labelSelector`, e.g. `unable to parse requirement: ...` or
    /// `found ')', expected: !, identifier, or 'end of string'`.
    #[error("{0}")]
    Label(String),
    /// A malformed `fieldSelector`, e.g. `invalid selector: 'a'; can't understand 'a'`.
    #[error("{0}")]
    Field(String),
}

/// The operator of one label requirement (upstream's `selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)`
    NotIn,
    /// `key=value`
    Equals,
    /// `key==value`
    DoubleEquals,
    /// `key!=value`
    NotEquals,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>3`
    GreaterThan,
    /// `key<3`
    LessThan,
}

/// One clause of a label selector: a key, an operator and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// How the label's value is compared.
    pub operator: Operator,
    /// The values (sorted, without duplicates). Empty for `Exists`/`DoesNotExist`,
    /// exactly one for the exact-match and `>`/`<` operators.
    pub values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement, validating it as upstream's `labels.NewRequirement` (key syntax,
    /// value count, value syntax, integers for `>`/`<`). `path` prefixes the field paths of
    /// the errors (`None` for upstream's nil path).
    fn new(
        key: &str,
        operator: Operator,
        mut values: Vec<String>,
        path: Option<&FieldPath>,
    ) -> Result<Requirement, Vec<FieldError>> {
        let child = |name: &str| {
            path.map(|p| p.child(name))
                .unwrap_or_else(|| FieldPath::root(name))
        };
        let mut errs = Vec::new();
        let key_errs = is_qualified_name(key);
        if !key_errs.is_empty() {
            errs.push(FieldError::invalid(
                child("key"),
                Value::String(key.to_string()),
                key_errs.join("; "),
            ));
        }
        let values_path = child("values");
        let values_json = || Value::Array(values.iter().cloned().map(Value::String).collect());
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => errs.push(FieldError::invalid(
                &values_path,
                values_json(),
                "for 'in', 'notin' operators, values set can't be empty",
            )),
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                errs.push(FieldError::invalid(
                    &values_path,
                    values_json(),
                    "exact-match compatibility requires one single value",
                ))
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                errs.push(FieldError::invalid(
                    &values_path,
                    values_json(),
                    "values set must be empty for exists and does not exist",
                ))
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(FieldError::invalid(
                        &values_path,
                        values_json(),
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(FieldError::invalid(
                            values_path.index(i),
                            Value::String(v.clone()),
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let value_errs = is_valid_label_value(v);
            if !value_errs.is_empty() {
                errs.push(FieldError::invalid(
                    values_path.index(i).key(key),
                    Value::String(v.clone()),
                    value_errs.join("; "),
                ));
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        values.sort();
        values.dedup();
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    /// Whether `labels` satisfies this requirement (upstream's `Requirement.Matches`).
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let value = labels
            .and_then(|l| l.get(&self.key))
            .and_then(Value::as_str);
        let has_value = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                value.is_some_and(has_value)
            }
            Operator::NotIn | Operator::NotEquals => !value.is_some_and(has_value),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(actual), [wanted]) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.as_slice(),
                ) else {
                    return false;
                };
                let Ok(wanted) = wanted.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > wanted
                } else {
                    actual < wanted
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        };
        f.write_str(op)?;
        let values = self.values.join(",");
        if matches!(self.operator, Operator::In | Operator::NotIn) {
            write!(f, "({values})")
        } else {
            f.write_str(&values)
        }
    }
}

/// A label selector: a conjunction of requirements, or the selector that matches nothing.
///
/// The empty selector (no requirements, e.g. from `""` or `{}`) matches every object; the
/// "nothing" selector (from a JSON `null` selector, upstream's `labels.Nothing()`) matches none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// The selector that matches every object (upstream's `labels.Everything()`).
    pub fn everything() -> Self {
        Self::default()
    }

    /// The selector that matches no object (upstream's `labels.Nothing()`).
    pub fn nothing() -> Self {
        Self {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Parses the `?labelSelector=` syntax as upstream's `labels.Parse`. Requirements are sorted
    /// by key; an empty or all-blank string gives [`LabelSelector::everything`].
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let tokens = lex(s);
        let mut parser = Parser { tokens, pos: 0 };
        let mut requirements = parser.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// A selector requiring `key=value` for every entry of a plain map, such as a Service's or
    /// ReplicationController's `spec.selector` (upstream's `SelectorFromSet`; no validation).
    /// An empty map gives [`LabelSelector::everything`].
    pub fn from_map(map: &Map<String, Value>) -> LabelSelector {
        let mut requirements: Vec<Requirement> = map
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                operator: Operator::Equals,
                values: vec![v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())],
            })
            .collect();
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector {
            requirements,
            nothing: false,
        }
    }

    /// Reads a `metav1.LabelSelector` object, validating it as upstream's
    /// `ValidateLabelSelector` (errors at `path.matchLabels`, `path.matchExpressions[i].key`,
    /// `.operator`, `.values`, `.values[j]`), then converting it as `LabelSelectorAsSelector`.
    ///
    /// `null` gives [`LabelSelector::nothing`] (matches no object); `{}` or a selector with empty
    /// `matchLabels` and `matchExpressions` gives [`LabelSelector::everything`].
    pub fn from_json(v: &Value, path: &FieldPath) -> Result<LabelSelector, Vec<FieldError>> {
        let obj = match v {
            Value::Null => return Ok(LabelSelector::nothing()),
            Value::Object(obj) => obj,
            other => {
                return Err(vec![FieldError::type_invalid(
                    path,
                    other.clone(),
                    "must be of type object",
                )])
            }
        };
        let mut errs = Vec::new();
        let mut requirements = Vec::new();
        let labels_path = path.child("matchLabels");
        match obj.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                for (key, value) in labels {
                    errs.extend(validate_label_name(key, &labels_path));
                    let Some(value) = value.as_str() else {
                        errs.push(FieldError::type_invalid(
                            labels_path.key(key),
                            value.clone(),
                            "must be of type string",
                        ));
                        continue;
                    };
                    errs.extend(is_valid_label_value(value).into_iter().map(|m| {
                        FieldError::invalid(&labels_path, Value::String(value.to_string()), m)
                    }));
                    requirements.push(Requirement {
                        key: key.clone(),
                        operator: Operator::Equals,
                        values: vec![value.to_string()],
                    });
                }
            }
            Some(other) => errs.push(FieldError::type_invalid(
                &labels_path,
                other.clone(),
                "must be of type object",
            )),
        }
        let exprs_path = path.child("matchExpressions");
        match obj.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(exprs)) => {
                for (i, expr) in exprs.iter().enumerate() {
                    match expression_requirement(expr, &exprs_path.index(i)) {
                        Ok(r) => requirements.push(r),
                        Err(e) => errs.extend(e),
                    }
                }
            }
            Some(other) => errs.push(FieldError::type_invalid(
                &exprs_path,
                other.clone(),
                "must be of type array",
            )),
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Whether an object with these `metadata.labels` is selected. `None` means no labels.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True when the selector does not restrict anything (upstream's `Empty()`): false for
    /// [`LabelSelector::nothing`].
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// True for the selector that matches nothing.
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// The single value `label` must have, if the selector demands one (`label=v`, `label==v`
    /// or `label in (v)`), as upstream's `RequiresExactMatch`.
    pub fn requires_exact_match(&self, label: &str) -> Option<&str> {
        let r = self.requirements.iter().find(|r| r.key == label)?;
        match (r.operator, r.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [v]) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for LabelSelector {
    /// The string syntax, as upstream's `String()`; the "nothing" selector prints as `""`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Validates and converts one `matchExpressions` entry at `path` (`...matchExpressions[i]`).
fn expression_requirement(expr: &Value, path: &FieldPath) -> Result<Requirement, Vec<FieldError>> {
    let Some(expr) = expr.as_object() else {
        return Err(vec![FieldError::type_invalid(
            path,
            expr.clone(),
            "must be of type object",
        )]);
    };
    let mut errs = Vec::new();
    let key = expr.get("key").and_then(Value::as_str).unwrap_or("");
    let operator = expr.get("operator").and_then(Value::as_str).unwrap_or("");
    let values_path = path.child("values");
    let mut values = Vec::new();
    match expr.get("values") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (j, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) => values.push(s.to_string()),
                    None => errs.push(FieldError::type_invalid(
                        values_path.index(j),
                        item.clone(),
                        "must be of type string",
                    )),
                }
            }
        }
        Some(other) => errs.push(FieldError::type_invalid(
            &values_path,
            other.clone(),
            "must be of type array",
        )),
    }
    let op = match operator {
        "In" | "NotIn" => {
            if values.is_empty() {
                errs.push(FieldError::required(
                    &values_path,
                    "must be specified when `operator` is 'In' or 'NotIn'",
                ));
            }
            if operator == "In" {
                Some(Operator::In)
            } else {
                Some(Operator::NotIn)
            }
        }
        "Exists" | "DoesNotExist" => {
            if !values.is_empty() {
                errs.push(FieldError::forbidden(
                    &values_path,
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                ));
            }
            if operator == "Exists" {
                Some(Operator::Exists)
            } else {
                Some(Operator::DoesNotExist)
            }
        }
        _ => {
            errs.push(FieldError::invalid(
                path.child("operator"),
                Value::String(operator.to_string()),
                "not a valid selector operator",
            ));
            None
        }
    };
    errs.extend(validate_label_name(key, &path.child("key")));
    for (j, value) in values.iter().enumerate() {
        errs.extend(
            is_valid_label_value(value).into_iter().map(|m| {
                FieldError::invalid(values_path.index(j), Value::String(value.clone()), m)
            }),
        );
    }
    match op {
        Some(operator) if errs.is_empty() => {
            values.sort();
            values.dedup();
            Ok(Requirement {
                key: key.to_string(),
                operator,
                values,
            })
        }
        _ => Err(errs),
    }
}

// ---------------------------------------------------------------------------------------------
// The label selector lexer and parser, following upstream's token rules.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Error,
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn literal_token(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits a selector string into tokens, ending with `EndOfString`.
fn lex(s: &str) -> Vec<(Token, String)> {
    let bytes = s.as_bytes();
    let mut pos = 0;
    let mut tokens = Vec::new();
    loop {
        while pos < bytes.len() && is_whitespace(bytes[pos]) {
            pos += 1;
        }
        if pos >= bytes.len() {
            tokens.push((Token::EndOfString, String::new()));
            return tokens;
        }
        if is_special_symbol(bytes[pos]) {
            // Longest run of special symbols that still forms a known operator.
            let start = pos;
            let mut last: Option<(Token, usize)> = None;
            let mut end = pos;
            while end < bytes.len() && is_special_symbol(bytes[end]) {
                end += 1;
                match literal_token(&s[start..end]) {
                    Some(t) => last = Some((t, end)),
                    None if last.is_some() => break,
                    None => {}
                }
            }
            match last {
                Some((t, stop)) => {
                    tokens.push((t, s[start..stop].to_string()));
                    pos = stop;
                }
                None => {
                    tokens.push((
                        Token::Error,
                        format!("error expected: keyword found '{}'", &s[start..end]),
                    ));
                    pos = end;
                }
            }
        } else {
            let start = pos;
            while pos < bytes.len() && !is_special_symbol(bytes[pos]) && !is_whitespace(bytes[pos])
            {
                pos += 1;
            }
            let word = &s[start..pos];
            tokens.push((
                literal_token(word).unwrap_or(Token::Identifier),
                word.to_string(),
            ));
        }
    }
}

struct Parser {
    tokens: Vec<(Token, String)>,
    pos: usize,
}

/// In a value position `in` and `notin` are plain identifiers.
fn as_value(t: Token) -> Token {
    match t {
        Token::In | Token::NotIn => Token::Identifier,
        t => t,
    }
}

const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

impl Parser {
    fn lookahead(&self, values: bool) -> (Token, String) {
        let (t, lit) = self
            .tokens
            .get(self.pos)
            .cloned()
            .unwrap_or((Token::EndOfString, String::new()));
        (if values { as_value(t) } else { t }, lit)
    }

    fn consume(&mut self, values: bool) -> (Token, String) {
        let item = self.lookahead(values);
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (t, lit) = self.lookahead(true);
            match t {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self.parse_requirement().map_err(|e| {
                        SelectorError::Label(format!("unable to parse requirement: {e}"))
                    })?;
                    requirements.push(r);
                    let (t, lit) = self.consume(true);
                    match t {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (t2, lit2) = self.lookahead(true);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(SelectorError::Label(format!(
                                    "found '{lit2}', expected: identifier after ','"
                                )));
                            }
                        }
                        _ => {
                            return Err(SelectorError::Label(format!(
                                "found '{lit}', expected: ',' or 'end of string'"
                            )))
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(SelectorError::Label(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    )))
                }
            }
        }
    }

    /// Returns the requirement or the message that follows `unable to parse requirement: `.
    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (mut t, mut key) = self.consume(true);
        let mut negated = false;
        if t == Token::DoesNotExist {
            negated = true;
            (t, key) = self.consume(true);
        }
        if t != Token::Identifier {
            return Err(format!("found '{key}', expected: identifier"));
        }
        let key_errs = is_qualified_name(&key);
        if !key_errs.is_empty() {
            // Upstream validates the key against a nil path here, which prints as `<nil>`.
            let e = FieldError::invalid("<nil>", Value::String(key.clone()), key_errs.join("; "));
            return Err(e.message());
        }
        let (next, _) = self.lookahead(true);
        if negated || next == Token::EndOfString || next == Token::Comma {
            // `!key` is complete whatever follows; the caller then rejects e.g. `!a=b` at `=`.
            let operator = if negated {
                Operator::DoesNotExist
            } else {
                Operator::Exists
            };
            return Requirement::new(&key, operator, Vec::new(), None).map_err(aggregate);
        }
        let (t, lit) = self.consume(false);
        let operator = match t {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => return Err(format!("found '{lit}', expected: {BINARY_OPERATORS}")),
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, operator, values, None).map_err(aggregate)
    }

    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (t, lit) = self.consume(true);
        if t != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (t, lit) = self.lookahead(true);
        match t {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                let (t, _) = self.consume(true);
                if t != Token::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(true);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut values: Vec<String> = Vec::new();
        let insert = |values: &mut Vec<String>, v: String| {
            if !values.contains(&v) {
                values.push(v);
            }
        };
        loop {
            let (t, lit) = self.consume(true);
            match t {
                Token::Identifier => {
                    insert(&mut values, lit);
                    let (t2, lit2) = self.lookahead(true);
                    match t2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values),
                        _ => return Err(format!("found '{lit2}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        insert(&mut values, String::new());
                    }
                    let (t2, _) = self.lookahead(true);
                    if t2 == Token::ClosedPar {
                        insert(&mut values, String::new());
                        return Ok(values);
                    }
                    if t2 == Token::Comma {
                        self.consume(true);
                        insert(&mut values, String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (t, _) = self.lookahead(true);
        if t == Token::EndOfString || t == Token::Comma {
            return Ok(vec![String::new()]);
        }
        let (t, lit) = self.consume(true);
        if t == Token::Identifier {
            Ok(vec![lit])
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

/// Formats field errors as upstream's `utilerrors.Aggregate` does: one message alone,
/// several as `[a, b]` (duplicates dropped).
fn aggregate(errs: Vec<FieldError>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for e in &errs {
        let m = e.message();
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    if seen.len() == 1 {
        seen.remove(0)
    } else {
        format!("[{}]", seen.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// Field selectors.

/// The operator of one field selector term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOperator {
    /// `field=value` or `field==value`
    Equals,
    /// `field!=value`
    NotEquals,
}

/// One term of a field selector, with its value unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field label, e.g. `metadata.name` or `spec.nodeName`.
    pub field: String,
    /// How the field's value is compared.
    pub operator: FieldOperator,
    /// The literal value (backslash escapes removed).
    pub value: String,
}

/// A field selector: a conjunction of `field=value` / `field!=value` terms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses the `?fieldSelector=` syntax as upstream's `fields.ParseSelector`: terms split at
    /// unescaped commas and sorted; in values `\\`, `\,` and `\=` are escapes, and a bare `,`
    /// or `=` is an error. An empty string selects everything.
    pub fn parse(s: &str) -> Result<FieldSelector, SelectorError> {
        let mut terms = split_terms(s);
        terms.sort();
        let mut requirements = Vec::new();
        for term in terms.into_iter().filter(|t| !t.is_empty()) {
            let Some((field, operator, raw)) = split_term(term) else {
                return Err(SelectorError::Field(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                )));
            };
            let value = unescape_value(raw)?;
            requirements.push(FieldRequirement {
                field: field.to_string(),
                operator,
                value,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether an object matches; `get` returns a field's value (`None` counts as `""`).
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let actual = get(&r.field).unwrap_or_default();
            match r.operator {
                FieldOperator::Equals => actual == r.value,
                FieldOperator::NotEquals => actual != r.value,
            }
        })
    }

    /// The terms, so that the caller can check the field labels against the kind.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// True when there is no term (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value `field` must equal, if some `field=value` term demands it.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    /// The string syntax, values escaped, as upstream's `String()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match r.operator {
                FieldOperator::Equals => "=",
                FieldOperator::NotEquals => "!=",
            };
            write!(f, "{}{op}{}", r.field, escape_field_value(&r.value))?;
        }
        Ok(())
    }
}

/// Escapes `\`, `,` and `=` in a field selector value (upstream's `fields.EscapeValue`).
pub fn escape_field_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn unescape_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError::Field(format!(
                    "invalid field selector: invalid escape sequence: \\{c}"
                )));
            }
            out.push(c);
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            // Upstream prints the rune with %v, i.e. as its code point number.
            ',' | '=' => {
                return Err(SelectorError::Field(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                )))
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError::Field(
            "invalid field selector: invalid escape sequence: \\".to_string(),
        ));
    }
    Ok(out)
}

/// Splits at commas not preceded by a backslash (the backslashes are kept).
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits a term at the first `!=`, `==` or `=`.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, operator) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn parses_every_operator_and_prints_back_sorted() {
        let s = LabelSelector::parse(
            "tier notin (a), app in (web,api),  env==prod,x!=y, !gone, has, n>3, m<10, k=v",
        )
        .unwrap();
        assert_eq!(
            s.to_string(),
            "app in (api,web),env==prod,!gone,has,k=v,m<10,n>3,tier notin (a),x!=y"
        );
        assert_eq!(s.requirements().len(), 9);
        assert!(!s.is_empty());
    }

    #[test]
    fn empty_string_selects_everything() {
        let s = LabelSelector::parse("   ").unwrap();
        assert!(s.is_empty());
        assert!(s.matches(None));
        assert_eq!(s.to_string(), "");
    }

    #[test]
    fn matching_semantics() {
        let l = labels(json!({"app": "web", "n": "5", "env": "prod"}));
        let m = |sel: &str| LabelSelector::parse(sel).unwrap().matches(Some(&l));
        assert!(m("app=web"));
        assert!(m("app==web,env"));
        assert!(!m("app!=web"));
        assert!(m("missing!=x"));
        assert!(m("app in (api,web)"));
        assert!(!m("app notin (web)"));
        assert!(m("missing notin (web)"));
        assert!(!m("missing in (web)"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(m("n>3") && m("n<6") && !m("n>5") && !m("app>1") && !m("missing<100"));
        assert!(!LabelSelector::parse("app").unwrap().matches(None));
        assert!(LabelSelector::parse("!app").unwrap().matches(None));
    }

    #[test]
    fn in_and_notin_are_values_in_value_position() {
        let s = LabelSelector::parse("x in (in,notin)").unwrap();
        assert_eq!(s.requirements()[0].values, vec!["in", "notin"]);
        let s = LabelSelector::parse("x in (,a,,b)").unwrap();
        assert_eq!(s.requirements()[0].values, vec!["", "a", "b"]);
        // As upstream, a trailing `,,)` is rejected.
        assert!(LabelSelector::parse("x in (a,,)").is_err());
        let s = LabelSelector::parse("x=").unwrap();
        assert_eq!(s.requirements()[0].values, vec![""]);
        assert_eq!(
            LabelSelector::parse("x in ()").unwrap().to_string(),
            "x in ()"
        );
    }

    #[test]
    fn syntax_errors_have_upstreams_messages() {
        let err = |s: &str| LabelSelector::parse(s).unwrap_err().to_string();
        assert_eq!(err("a,"), "found '', expected: identifier after ','");
        assert_eq!(
            err("a b"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(err("a=b c"), "found 'c', expected: ',' or 'end of string'");
        assert_eq!(
            err("=a"),
            "found '=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            err("a in b"),
            "unable to parse requirement: found 'b' expected: '('"
        );
        assert_eq!(
            err("a in (b"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            err("a foo"),
            "unable to parse requirement: found 'foo', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(err("!a=b"), "found '=', expected: ',' or 'end of string'");
        assert_eq!(
            err("a=(b)"),
            "unable to parse requirement: found '(', expected: identifier"
        );
        assert_eq!(err("a>b"), "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value must be an integer");
    }

    #[test]
    fn invalid_keys_and_values_are_reported_as_upstream() {
        let e = LabelSelector::parse("a/b/c=x").unwrap_err().to_string();
        assert!(e.starts_with("unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a qualified name must consist of"), "{e}");
        let e = LabelSelector::parse("app=-web").unwrap_err().to_string();
        assert!(e.starts_with("unable to parse requirement: values[0][app]: Invalid value: \"-web\": a valid label must be an empty string"), "{e}");
    }

    #[test]
    fn from_json_converts_match_labels_and_expressions() {
        let v = json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "legacy", "operator": "DoesNotExist"}
            ]
        });
        let s = LabelSelector::from_json(&v, &FieldPath::root("spec").child("selector")).unwrap();
        assert_eq!(s.to_string(), "app=web,!legacy,tier in (a,b)");
        assert!(s.matches(Some(&labels(json!({"app": "web", "tier": "a"})))));
        assert!(!s.matches(Some(&labels(
            json!({"app": "web", "tier": "a", "legacy": "1"})
        ))));
        assert_eq!(s.requires_exact_match("app"), Some("web"));
    }

    #[test]
    fn from_json_null_matches_nothing_and_empty_matches_everything() {
        let null = LabelSelector::from_json(&Value::Null, &FieldPath::root("selector")).unwrap();
        assert!(null.is_nothing() && !null.is_empty());
        assert!(!null.matches(Some(&labels(json!({"a": "b"})))));
        let empty = LabelSelector::from_json(&json!({}), &FieldPath::root("selector")).unwrap();
        assert!(empty.is_empty());
        assert!(empty.matches(None));
    }

    #[test]
    fn from_json_reports_field_errors_at_upstream_paths() {
        let v = json!({
            "matchLabels": {"bad key": "v"},
            "matchExpressions": [
                {"key": "a", "operator": "In"},
                {"key": "b", "operator": "Exists", "values": ["x"]},
                {"key": "c", "operator": "Gt", "values": ["1"]},
                {"key": "d", "operator": "In", "values": ["ok", "-bad"]}
            ]
        });
        let errs =
            LabelSelector::from_json(&v, &FieldPath::root("spec").child("selector")).unwrap_err();
        let got: Vec<(&str, &str)> = errs
            .iter()
            .map(|e| (e.field.as_str(), e.kind.reason()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("spec.selector.matchLabels", "FieldValueInvalid"),
                (
                    "spec.selector.matchExpressions[0].values",
                    "FieldValueRequired"
                ),
                (
                    "spec.selector.matchExpressions[1].values",
                    "FieldValueForbidden"
                ),
                (
                    "spec.selector.matchExpressions[2].operator",
                    "FieldValueInvalid"
                ),
                (
                    "spec.selector.matchExpressions[3].values[1]",
                    "FieldValueInvalid"
                ),
            ]
        );
        assert_eq!(
            errs[1].message(),
            "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
        );
        assert_eq!(
            errs[3].message(),
            "spec.selector.matchExpressions[2].operator: Invalid value: \"Gt\": not a valid selector operator"
        );
    }

    #[test]
    fn from_map_selects_by_equality() {
        let s = LabelSelector::from_map(&labels(json!({"b": "2", "a": "1"})));
        assert_eq!(s.to_string(), "a=1,b=2");
        assert!(LabelSelector::from_map(&Map::new()).is_empty());
    }

    #[test]
    fn field_selector_parse_and_match() {
        let s = FieldSelector::parse("status.phase!=Running,metadata.name==web,spec.nodeName=")
            .unwrap();
        assert_eq!(
            s.to_string(),
            "metadata.name=web,spec.nodeName=,status.phase!=Running"
        );
        let get = |f: &str| match f {
            "metadata.name" => Some("web".to_string()),
            "status.phase" => Some("Pending".to_string()),
            _ => None,
        };
        assert!(s.matches(get));
        assert_eq!(s.requires_exact_match("metadata.name"), Some("web"));
        assert!(!FieldSelector::parse("status.phase=Running")
            .unwrap()
            .matches(get));
        assert!(FieldSelector::parse("").unwrap().is_empty());
    }

    #[test]
    fn field_selector_escapes() {
        let s = FieldSelector::parse(r"metadata.name=a\,b\=c\\d").unwrap();
        assert_eq!(s.requirements()[0].value, r"a,b=c\d");
        assert_eq!(s.to_string(), r"metadata.name=a\,b\=c\\d");
        assert_eq!(
            FieldSelector::parse(r"a=b\x").unwrap_err().to_string(),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            FieldSelector::parse("a=b=c").unwrap_err().to_string(),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            FieldSelector::parse("a=b,c").unwrap_err().to_string(),
            "invalid selector: 'a=b,c'; can't understand 'c'"
        );
    }
}
