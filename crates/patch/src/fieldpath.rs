//! Field paths and field sets, and their `FieldsV1` encoding, after
//! `sigs.k8s.io/structured-merge-diff/fieldpath`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// One step of a path into an object.
#[derive(Debug, Clone)]
pub(crate) enum PathElement {
    /// A named field of a struct or a key of a map.
    Field(String),
    /// An item of an associative list, by its key fields (sorted by name).
    Key(Vec<(String, Value)>),
    /// An item of a set, by its value.
    Value(Value),
    /// An item of a list by position (only for lists without identity).
    Index(usize),
}

impl PathElement {
    fn rank(&self) -> u8 {
        match self {
            PathElement::Field(_) => 0,
            PathElement::Key(_) => 1,
            PathElement::Value(_) => 2,
            PathElement::Index(_) => 3,
        }
    }

    /// The `FieldsV1` key of this element: `f:`, `k:`, `v:` or `i:` prefixed.
    pub(crate) fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                let mut map = Map::new();
                for (name, value) in fields {
                    map.insert(name.clone(), value.clone());
                }
                format!("k:{}", Value::Object(map))
            }
            PathElement::Value(value) => format!("v:{value}"),
            PathElement::Index(index) => format!("i:{index}"),
        }
    }

    /// Parses a `FieldsV1` key.
    pub(crate) fn decode(key: &str) -> Result<Self, String> {
        let (prefix, rest) = key
            .split_once(':')
            .ok_or_else(|| format!("parsing path element {key:?}: missing colon"))?;
        match prefix {
            "f" => Ok(PathElement::Field(rest.to_string())),
            "k" => match serde_json::from_str::<Value>(rest) {
                Ok(Value::Object(map)) => {
                    let mut fields: Vec<(String, Value)> = map.into_iter().collect();
                    fields.sort_by(|a, b| a.0.cmp(&b.0));
                    Ok(PathElement::Key(fields))
                }
                _ => Err(format!(
                    "parsing path element {key:?}: key is not a JSON object"
                )),
            },
            "v" => serde_json::from_str(rest)
                .map(PathElement::Value)
                .map_err(|e| format!("parsing path element {key:?}: {e}")),
            "i" => rest
                .parse()
                .map(PathElement::Index)
                .map_err(|e| format!("parsing path element {key:?}: {e}")),
            _ => Err(format!(
                "parsing path element {key:?}: unknown prefix {prefix:?}"
            )),
        }
    }
}

impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(value) => write!(f, "[={value}]"),
            PathElement::Index(index) => write!(f, "[{index}]"),
        }
    }
}

/// Orders values as structured-merge-diff does: numbers, strings, booleans, lists, maps, null.
pub(crate) fn compare_values(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Number(_) => 0,
            Value::String(_) => 1,
            Value::Bool(_) => 2,
            Value::Array(_) => 3,
            Value::Object(_) => 4,
            Value::Null => 5,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (a, b) in x.iter().zip(y) {
                let c = compare_values(a, b);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut xs: Vec<(&String, &Value)> = x.iter().collect();
            let mut ys: Vec<(&String, &Value)> = y.iter().collect();
            xs.sort_by(|a, b| a.0.cmp(b.0));
            ys.sort_by(|a, b| a.0.cmp(b.0));
            for ((ka, va), (kb, vb)) in xs.iter().zip(&ys) {
                let c = ka.cmp(kb).then_with(|| compare_values(va, vb));
                if c != Ordering::Equal {
                    return c;
                }
            }
            xs.len().cmp(&ys.len())
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a.cmp(b),
            (PathElement::Key(a), PathElement::Key(b)) => {
                for ((na, va), (nb, vb)) in a.iter().zip(b) {
                    let c = na.cmp(nb).then_with(|| compare_values(va, vb));
                    if c != Ordering::Equal {
                        return c;
                    }
                }
                a.len().cmp(&b.len())
            }
            (PathElement::Value(a), PathElement::Value(b)) => compare_values(a, b),
            (PathElement::Index(a), PathElement::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PathElement {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PathElement {}

/// Formats a path the way upstream prints it: `.spec.containers[name="nginx"].image`.
pub(crate) fn path_string(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// A set of field paths, as a tree: `members` are the paths ending at this node's
/// children, `children` the subtrees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Whether the set holds no path.
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(FieldSet::is_empty)
    }

    /// Adds a path; the empty path is never a member.
    pub(crate) fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Whether `path` is a member.
    #[cfg(test)]
    pub(crate) fn has(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// The subtree under `element`, if any.
    pub(crate) fn child(&self, element: &PathElement) -> Option<&FieldSet> {
        self.children.get(element)
    }

    /// Whether `element` is a member at this level.
    pub(crate) fn has_member(&self, element: &PathElement) -> bool {
        self.members.contains(element)
    }

    fn pruned(mut self) -> Self {
        self.children.retain(|_, c| !c.is_empty());
        self
    }

    /// Paths in either set.
    pub(crate) fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, child) in &other.children {
            let merged = match out.children.get(pe) {
                Some(existing) => existing.union(child),
                None => child.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out.pruned()
    }

    /// Paths in both sets.
    pub(crate) fn intersection(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.intersection(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(pe, child)| {
                other
                    .children
                    .get(pe)
                    .map(|o| (pe.clone(), child.intersection(o)))
            })
            .collect();
        FieldSet { members, children }.pruned()
    }

    /// Paths in `self` but not in `other` (children of removed members stay).
    pub(crate) fn difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .map(|(pe, child)| match other.children.get(pe) {
                Some(o) => (pe.clone(), child.difference(o)),
                None => (pe.clone(), child.clone()),
            })
            .collect();
        FieldSet { members, children }.pruned()
    }

    /// Paths in `self` that are neither in `other` nor below a member of `other`.
    pub(crate) fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter(|(pe, _)| !other.members.contains(pe))
            .map(|(pe, child)| match other.children.get(pe) {
                Some(o) => (pe.clone(), child.recursive_difference(o)),
                None => (pe.clone(), child.clone()),
            })
            .collect();
        FieldSet { members, children }.pruned()
    }

    /// Every member path, members of a level before its subtrees, in sorted order.
    pub(crate) fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        for member in &self.members {
            let mut path = prefix.clone();
            path.push(member.clone());
            out.push(path);
        }
        for (pe, child) in &self.children {
            prefix.push(pe.clone());
            child.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// Adds, as members, the named fields along every path for which `is_struct_field`
    /// holds (upstream's `EnsureNamedFieldsAreMembers`).
    pub(crate) fn with_named_fields<F>(&self, is_struct_field: &F) -> FieldSet
    where
        F: Fn(&[PathElement]) -> bool,
    {
        let mut out = self.clone();
        out.add_named_fields(&mut Vec::new(), is_struct_field);
        out
    }

    fn add_named_fields<F>(&mut self, prefix: &mut Vec<PathElement>, is_struct_field: &F)
    where
        F: Fn(&[PathElement]) -> bool,
    {
        let keys: Vec<PathElement> = self.children.keys().cloned().collect();
        for pe in keys {
            prefix.push(pe.clone());
            if matches!(pe, PathElement::Field(_)) && is_struct_field(prefix) {
                self.members.insert(pe.clone());
            }
            if let Some(child) = self.children.get_mut(&pe) {
                child.add_named_fields(prefix, is_struct_field);
            }
            prefix.pop();
        }
    }

    /// The `FieldsV1` JSON encoding.
    pub(crate) fn to_fields_v1(&self) -> Value {
        Value::Object(self.encode(false))
    }

    fn encode(&self, include_self: bool) -> Map<String, Value> {
        let mut out = Map::new();
        if include_self {
            out.insert(".".to_string(), Value::Object(Map::new()));
        }
        let all: BTreeSet<&PathElement> = self.members.iter().chain(self.children.keys()).collect();
        for pe in all {
            let is_member = self.members.contains(pe);
            let encoded = match self.children.get(pe).filter(|c| !c.is_empty()) {
                Some(child) => child.encode(is_member),
                None => Map::new(),
            };
            out.insert(pe.encode(), Value::Object(encoded));
        }
        out
    }

    /// Parses the `FieldsV1` JSON encoding.
    pub(crate) fn from_fields_v1(value: &Value) -> Result<FieldSet, String> {
        let Value::Object(map) = value else {
            return Err("FieldsV1 must be a JSON object".to_string());
        };
        let mut set = FieldSet::new();
        for (key, child) in map {
            if key == "." {
                continue;
            }
            let pe = PathElement::decode(key)?;
            let Value::Object(child_map) = child else {
                return Err(format!("FieldsV1 entry {key:?} must be a JSON object"));
            };
            if child_map.is_empty() || child_map.contains_key(".") {
                set.members.insert(pe.clone());
            }
            let child_set = FieldSet::from_fields_v1(child)?;
            if !child_set.is_empty() {
                set.children.insert(pe, child_set);
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(name: &str) -> PathElement {
        PathElement::Field(name.to_string())
    }

    fn k(name: &str, value: Value) -> PathElement {
        PathElement::Key(vec![(name.to_string(), value)])
    }

    #[test]
    fn fields_v1_round_trip_in_upstream_layout() {
        let encoded = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}}
                }}}
            }
        });
        let set = FieldSet::from_fields_v1(&encoded).unwrap();
        assert!(set.has(&[f("spec"), f("replicas")]));
        assert!(set.has(&[f("metadata"), f("labels")]));
        assert!(!set.has(&[f("metadata")]));
        let item = [
            f("spec"),
            f("template"),
            f("spec"),
            f("containers"),
            k("name", json!("nginx")),
        ];
        assert!(set.has(&item));
        assert_eq!(set.to_fields_v1(), encoded);
        assert_eq!(
            path_string(&[&item[..], &[f("image")]].concat()),
            ".spec.template.spec.containers[name=\"nginx\"].image"
        );
    }

    #[test]
    fn key_and_value_elements() {
        let pe = PathElement::decode("k:{\"protocol\":\"TCP\",\"containerPort\":80}").unwrap();
        assert_eq!(pe.encode(), "k:{\"containerPort\":80,\"protocol\":\"TCP\"}");
        assert_eq!(pe.to_string(), "[containerPort=80,protocol=\"TCP\"]");
        let pe = PathElement::decode("v:\"a\"").unwrap();
        assert_eq!(pe.to_string(), "[=\"a\"]");
        assert_eq!(PathElement::decode("i:3").unwrap().to_string(), "[3]");
        assert!(PathElement::decode("x:1").is_err());
    }

    #[test]
    fn set_operations() {
        let mut a = FieldSet::new();
        a.insert(&[f("spec"), f("replicas")]);
        a.insert(&[f("spec"), f("paused")]);
        a.insert(&[f("metadata"), f("labels"), f("x")]);
        let mut b = FieldSet::new();
        b.insert(&[f("spec"), f("replicas")]);
        b.insert(&[f("metadata"), f("labels")]);

        let i = a.intersection(&b);
        assert_eq!(i.paths(), vec![vec![f("spec"), f("replicas")]]);
        let d = a.difference(&b);
        assert!(d.has(&[f("metadata"), f("labels"), f("x")]));
        assert!(!d.has(&[f("spec"), f("replicas")]));
        let r = a.recursive_difference(&b);
        assert!(!r.has(&[f("metadata"), f("labels"), f("x")]));
        assert!(r.has(&[f("spec"), f("paused")]));
        let u = i.union(&d);
        assert_eq!(u, a);
        assert!(a.difference(&a).is_empty());
    }
}
