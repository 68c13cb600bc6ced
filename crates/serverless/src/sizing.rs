//! Sizing: how a pod's limits become the provisioned size that the agent enforces, the
//! scheduler accounts for and metering multiplies by time.
//!
//! # The demand
//! A pod's [`Demand`] is computed per resource (cpu and memory) as upstream's pod resource
//! calculation (`PodRequests` in `k8s.io/component-helpers/resource`) does, but from limits: each
//! container counts its limit, or its request where it has no limit. App containers are summed;
//! sidecar init containers (`restartPolicy: Always`) run beside them and are added to that sum;
//! a regular init container runs alone with the sidecars declared before it, so it counts its own
//! amount plus theirs; the demand is the larger of the sum and the largest init phase. Pod-level
//! `spec.resources` take precedence (a pod-level limit replaces the containers' total, a
//! pod-level request raises it), and `spec.overhead` is added. Ephemeral containers have no
//! resources upstream and are not counted.
//!
//! # The size table
//! The table is a list of vCPU classes, each with the memory sizes it offers. The default, the
//! shape users know from AWS Fargate, is [`DEFAULT_TABLE`] in the file format that
//! [`SizeTable::parse`] reads: one class per line, the vCPU then the memory options in GiB, a
//! comma separated list of values and ranges `min-max/step`; `#` starts a comment.
//!
//! | vCPU | memory (GiB)                     |
//! |------|----------------------------------|
//! | 0.25 | 0.5, 1, 2                        |
//! | 0.5  | 1 to 4 in steps of 1             |
//! | 1    | 2 to 8 in steps of 1             |
//! | 2    | 4 to 16 in steps of 1            |
//! | 4    | 8 to 30 in steps of 1            |
//! | 8    | 16 to 60 in steps of 4           |
//! | 16   | 32 to 120 in steps of 8          |
//!
//! [`SizeTable::fit`] picks the smallest vCPU class whose vCPU covers the demand and that offers
//! enough memory, then the smallest memory size of that class that covers the demand.
//!
//! # The annotation
//! A [`Size`] is written as `<vcpu>vCPU <memory>GiB` with one space, both numbers in plain
//! decimal with no trailing zeros and no exponent: `0.25vCPU 0.5GiB`, `1vCPU 2GiB`,
//! `16vCPU 120GiB`. vCPU has at most three decimals (milli-CPU); memory is the exact number of
//! GiB (a whole number of bytes).

use std::fmt;

use nodeless_api::error::FieldPath;
use nodeless_api::quantity::Quantity;
use serde_json::Value;

use crate::ServerlessError;

/// The pod annotation that holds the provisioned size, e.g. `0.5vCPU 1GiB`.
pub const ANNOTATION: &str = "nodeless.io/capacity-provisioned";

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// The most memory options one line of a size table may expand to.
const MAX_OPTIONS_PER_CLASS: usize = 10_000;

/// The default size table, in the format of [`SizeTable::parse`].
pub const DEFAULT_TABLE: &str = "\
# vCPU  memory (GiB): values and ranges min-max/step
0.25    0.5, 1, 2
0.5     1-4/1
1       2-8/1
2       4-16/1
4       8-30/1
8       16-60/4
16      32-120/8
";

/// A provisioned size: what a pod's sandbox gets and what it is metered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Size {
    /// CPU in thousandths of a vCPU.
    pub millicpu: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

impl Size {
    /// Parses the annotation form written by [`Display`](fmt::Display): `0.5vCPU 1GiB`.
    pub fn parse(text: &str) -> Result<Size, ServerlessError> {
        let error = |message: &str| ServerlessError::SizeFormat {
            value: text.to_string(),
            message: message.to_string(),
        };
        let mut parts = text.split_whitespace();
        let (Some(cpu), Some(memory), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(error("expected <vcpu>vCPU <memory>GiB, e.g. 0.5vCPU 1GiB"));
        };
        let cpu = cpu
            .strip_suffix("vCPU")
            .ok_or_else(|| error("the cpu must end with vCPU"))?;
        let memory = memory
            .strip_suffix("GiB")
            .ok_or_else(|| error("the memory must end with GiB"))?;
        let millicpu =
            parse_decimal(cpu, 1000).map_err(|m| error(&format!("vCPU {cpu:?}: {m}")))?;
        let memory_bytes =
            parse_decimal(memory, GIB).map_err(|m| error(&format!("GiB {memory:?}: {m}")))?;
        Ok(Size {
            millicpu,
            memory_bytes,
        })
    }

    /// The vCPU as a number, for metering (`0.25`).
    pub fn vcpu(&self) -> f64 {
        self.millicpu as f64 / 1000.0
    }

    /// The memory in GiB as a number, for metering (`0.5`).
    pub fn gib(&self) -> f64 {
        self.memory_bytes as f64 / GIB as f64
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}vCPU {}GiB",
            format_exact(u128::from(self.millicpu), 1000),
            format_exact(u128::from(self.memory_bytes), u128::from(GIB))
        )
    }
}

/// A pod's effective demand, before rounding to a size. Zero means "nothing asked for".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Demand {
    /// CPU in thousandths of a vCPU.
    pub millicpu: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

impl Demand {
    /// Whether `size` changes what the pod asked for: a resource it asked for (non-zero) differs
    /// from the provisioned amount. A resource nobody asked for is not reported as rounded.
    pub fn is_rounded_to(&self, size: &Size) -> bool {
        (self.millicpu != 0 && self.millicpu != size.millicpu)
            || (self.memory_bytes != 0 && self.memory_bytes != size.memory_bytes)
    }

    fn add(self, other: Demand) -> Demand {
        Demand {
            millicpu: self.millicpu.saturating_add(other.millicpu),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }

    fn max(self, other: Demand) -> Demand {
        Demand {
            millicpu: self.millicpu.max(other.millicpu),
            memory_bytes: self.memory_bytes.max(other.memory_bytes),
        }
    }
}

/// `0.3 vCPU 700MiB`: vCPU in decimal; memory in GiB when it is a whole number of hundredths of
/// a GiB and at least 1 GiB, else in MiB (rounded up to two decimals when not whole).
impl fmt::Display for Demand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpu = format_exact(u128::from(self.millicpu), 1000);
        let bytes = u128::from(self.memory_bytes);
        let memory = if bytes >= u128::from(GIB) && (bytes * 100) % u128::from(GIB) == 0 {
            format!("{}GiB", format_exact(bytes, u128::from(GIB)))
        } else if bytes % u128::from(MIB) == 0 {
            format!("{}MiB", bytes / u128::from(MIB))
        } else {
            let hundredths = (bytes * 100).div_ceil(u128::from(MIB));
            format!("{}MiB", format_exact(hundredths, 100))
        };
        write!(f, "{cpu} vCPU {memory}")
    }
}

/// One vCPU class of a size table and the memory sizes it offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeClass {
    /// CPU in thousandths of a vCPU.
    pub millicpu: u64,
    /// The memory sizes in bytes, ascending, never empty.
    pub memory_options: Vec<u64>,
}

/// The sizes a cluster provisions. [`SizeTable::default`] is the table of [`DEFAULT_TABLE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeTable {
    classes: Vec<SizeClass>,
}

impl Default for SizeTable {
    fn default() -> Self {
        let gib = |halves: u64| halves * GIB / 2;
        let range = |min: u64, max: u64, step: u64| {
            (min..=max)
                .step_by(step as usize)
                .map(|g| g * GIB)
                .collect()
        };
        SizeTable {
            classes: vec![
                SizeClass {
                    millicpu: 250,
                    memory_options: vec![gib(1), gib(2), gib(4)],
                },
                SizeClass {
                    millicpu: 500,
                    memory_options: range(1, 4, 1),
                },
                SizeClass {
                    millicpu: 1000,
                    memory_options: range(2, 8, 1),
                },
                SizeClass {
                    millicpu: 2000,
                    memory_options: range(4, 16, 1),
                },
                SizeClass {
                    millicpu: 4000,
                    memory_options: range(8, 30, 1),
                },
                SizeClass {
                    millicpu: 8000,
                    memory_options: range(16, 60, 4),
                },
                SizeClass {
                    millicpu: 16000,
                    memory_options: range(32, 120, 8),
                },
            ],
        }
    }
}

impl SizeTable {
    /// Parses a table in the format described in the module docs and shown by
    /// [`DEFAULT_TABLE`]. vCPU classes must be strictly increasing, and so must the memory
    /// options of a class; a range's span must be a whole number of steps.
    pub fn parse(text: &str) -> Result<SizeTable, ServerlessError> {
        let mut classes: Vec<SizeClass> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line_number = index + 1;
            let error = |message: String| ServerlessError::TableFormat {
                line: line_number,
                message,
            };
            let line = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
            if line.is_empty() {
                continue;
            }
            let (cpu, options) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| error("expected <vcpu> <memory options in GiB>".to_string()))?;
            let millicpu =
                parse_decimal(cpu, 1000).map_err(|m| error(format!("vCPU {cpu:?}: {m}")))?;
            if millicpu == 0 {
                return Err(error("vCPU must be greater than 0".to_string()));
            }
            if let Some(previous) = classes.last() {
                if millicpu <= previous.millicpu {
                    return Err(error(
                        "vCPU classes must be in increasing order".to_string(),
                    ));
                }
            }
            let options: String = options.chars().filter(|c| !c.is_whitespace()).collect();
            let memory_options = parse_memory_options(&options).map_err(error)?;
            classes.push(SizeClass {
                millicpu,
                memory_options,
            });
        }
        if classes.is_empty() {
            return Err(ServerlessError::TableFormat {
                line: 0,
                message: "the table has no sizes".to_string(),
            });
        }
        Ok(SizeTable { classes })
    }

    /// Reads an operator's table file (see [`SizeTable::parse`]).
    pub fn from_file(path: &std::path::Path) -> Result<SizeTable, ServerlessError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServerlessError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        SizeTable::parse(&text)
    }

    /// The vCPU classes, ascending.
    pub fn classes(&self) -> &[SizeClass] {
        &self.classes
    }

    /// Every size of the table, ascending by vCPU then memory.
    pub fn sizes(&self) -> impl Iterator<Item = Size> + '_ {
        self.classes.iter().flat_map(|class| {
            class.memory_options.iter().map(|&memory_bytes| Size {
                millicpu: class.millicpu,
                memory_bytes,
            })
        })
    }

    /// Whether `size` is one of the table's sizes (e.g. to check an annotation).
    pub fn contains(&self, size: &Size) -> bool {
        self.classes.iter().any(|class| {
            class.millicpu == size.millicpu && class.memory_options.contains(&size.memory_bytes)
        })
    }

    /// The largest size: the largest vCPU class with the most memory any class offers.
    pub fn largest(&self) -> Size {
        Size {
            millicpu: self.classes.last().map_or(0, |c| c.millicpu),
            memory_bytes: self
                .classes
                .iter()
                .filter_map(|c| c.memory_options.last().copied())
                .max()
                .unwrap_or(0),
        }
    }

    /// The smallest size that covers `demand`: the smallest vCPU class with at least the
    /// demanded vCPU that offers at least the demanded memory, then its smallest such memory.
    /// A demand above every size is [`ServerlessError::TooLarge`].
    pub fn fit(&self, demand: &Demand) -> Result<Size, ServerlessError> {
        for class in &self.classes {
            if class.millicpu < demand.millicpu {
                continue;
            }
            if let Some(&memory_bytes) = class
                .memory_options
                .iter()
                .find(|&&memory| memory >= demand.memory_bytes)
            {
                return Ok(Size {
                    millicpu: class.millicpu,
                    memory_bytes,
                });
            }
        }
        tracing::debug!(%demand, "pod demand exceeds the size table");
        Err(ServerlessError::TooLarge {
            demand: demand.to_string(),
            largest: self.largest().to_string(),
        })
    }
}

/// The table in the file format, ranges written where three or more options are evenly spaced;
/// [`SizeTable::parse`] reads it back to the same table.
impl fmt::Display for SizeTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "# vCPU  memory (GiB): values and ranges min-max/step")?;
        let gib = |bytes: u64| format_exact(u128::from(bytes), u128::from(GIB));
        for class in &self.classes {
            let options = &class.memory_options;
            let mut items = Vec::new();
            let mut i = 0;
            while i < options.len() {
                let mut end = i;
                if i + 2 < options.len() {
                    let step = options[i + 1] - options[i];
                    while end + 1 < options.len() && options[end + 1] - options[end] == step {
                        end += 1;
                    }
                }
                if end >= i + 2 {
                    let step = options[i + 1] - options[i];
                    items.push(format!(
                        "{}-{}/{}",
                        gib(options[i]),
                        gib(options[end]),
                        gib(step)
                    ));
                    i = end + 1;
                } else {
                    items.push(gib(options[i]));
                    i += 1;
                }
            }
            let cpu = format_exact(u128::from(class.millicpu), 1000);
            writeln!(f, "{cpu:<8}{}", items.join(", "))?;
        }
        Ok(())
    }
}

/// A pod's demand, the size it is provisioned with and the warning to give when they differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// What the containers ask for.
    pub demand: Demand,
    /// The size from the table, the value of [`ANNOTATION`].
    pub size: Size,
    /// The text of the `Warning` header when rounding changed what the pod asked for.
    pub warning: Option<String>,
}

/// Computes a pod spec's demand, fits it to `table` and gives the warning, in one call.
pub fn provision(pod_spec: &Value, table: &SizeTable) -> Result<Provisioned, ServerlessError> {
    let demand = demand(pod_spec)?;
    let size = table.fit(&demand)?;
    Ok(Provisioned {
        demand,
        size,
        warning: rounding_warning(&demand, &size),
    })
}

/// The `Warning` header text when `size` changes what the pod asked for
/// (`pod resources rounded up from 0.3 vCPU 700MiB to 0.5vCPU 1GiB (the provisioned size)`),
/// `None` when it does not (see [`Demand::is_rounded_to`]).
pub fn rounding_warning(demand: &Demand, size: &Size) -> Option<String> {
    demand
        .is_rounded_to(size)
        .then(|| format!("pod resources rounded up from {demand} to {size} (the provisioned size)"))
}

/// A pod spec's effective demand (see the module docs). Field paths in errors start at `spec`,
/// as for a Pod; [`demand_at`] takes the path of a pod template's spec.
pub fn demand(pod_spec: &Value) -> Result<Demand, ServerlessError> {
    demand_at(pod_spec, &FieldPath::root("spec"))
}

/// [`demand`] of the pod spec found at `path` (e.g. `spec.template.spec`), which starts the
/// field paths of errors.
pub fn demand_at(pod_spec: &Value, path: &FieldPath) -> Result<Demand, ServerlessError> {
    let spec_path = path.to_string();
    let mut app = Demand::default();
    if let Some(Value::Array(containers)) = pod_spec.get("containers") {
        for (i, container) in containers.iter().enumerate() {
            app = app.add(container_demand(
                container,
                &format!("{spec_path}.containers[{i}]"),
            )?);
        }
    }
    let mut sidecars = Demand::default();
    let mut init_phases = Demand::default();
    if let Some(Value::Array(containers)) = pod_spec.get("initContainers") {
        for (i, container) in containers.iter().enumerate() {
            let own = container_demand(container, &format!("{spec_path}.initContainers[{i}]"))?;
            if container.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
                app = app.add(own);
                sidecars = sidecars.add(own);
                init_phases = init_phases.max(sidecars);
            } else {
                init_phases = init_phases.max(own.add(sidecars));
            }
        }
    }
    let mut total = app.max(init_phases);

    if let Some(resources) = pod_spec.get("resources") {
        let path = format!("{spec_path}.resources");
        let limits = resource_list(resources.get("limits"), &format!("{path}.limits"))?;
        let requests = resource_list(resources.get("requests"), &format!("{path}.requests"))?;
        total.millicpu = pod_level(total.millicpu, limits.millicpu, requests.millicpu);
        total.memory_bytes = pod_level(
            total.memory_bytes,
            limits.memory_bytes,
            requests.memory_bytes,
        );
    }
    let overhead = resource_list(pod_spec.get("overhead"), &format!("{spec_path}.overhead"))?;
    let overhead = Demand {
        millicpu: overhead.millicpu.unwrap_or(0),
        memory_bytes: overhead.memory_bytes.unwrap_or(0),
    };
    Ok(total.add(overhead))
}

/// Pod-level resources: a limit replaces the containers' total, a request raises it.
fn pod_level(containers: u64, limit: Option<u64>, request: Option<u64>) -> u64 {
    match (limit, request) {
        (Some(limit), _) => limit,
        (None, Some(request)) => containers.max(request),
        (None, None) => containers,
    }
}

/// One container's amount: per resource its limit, else its request, else zero.
fn container_demand(container: &Value, path: &str) -> Result<Demand, ServerlessError> {
    let resources = container.get("resources");
    let limits = resource_list(
        resources.and_then(|r| r.get("limits")),
        &format!("{path}.resources.limits"),
    )?;
    let requests = resource_list(
        resources.and_then(|r| r.get("requests")),
        &format!("{path}.resources.requests"),
    )?;
    Ok(Demand {
        millicpu: limits.millicpu.or(requests.millicpu).unwrap_or(0),
        memory_bytes: limits.memory_bytes.or(requests.memory_bytes).unwrap_or(0),
    })
}

/// The cpu and memory of a resource list (`limits`, `requests`, `overhead`), where present.
struct ResourceAmounts {
    millicpu: Option<u64>,
    memory_bytes: Option<u64>,
}

fn resource_list(list: Option<&Value>, path: &str) -> Result<ResourceAmounts, ServerlessError> {
    let entry = |name: &str| list.and_then(|l| l.get(name)).filter(|v| !v.is_null());
    let millicpu = entry("cpu")
        .map(|value| quantity(value, &format!("{path}[cpu]"), Quantity::to_millis))
        .transpose()?;
    let memory_bytes = entry("memory")
        .map(|value| quantity(value, &format!("{path}[memory]"), Quantity::to_bytes))
        .transpose()?;
    Ok(ResourceAmounts {
        millicpu,
        memory_bytes,
    })
}

fn quantity(
    value: &Value,
    field: &str,
    units: fn(&Quantity) -> i128,
) -> Result<u64, ServerlessError> {
    let error = |message: String| ServerlessError::Quantity {
        field: field.to_string(),
        value: value.clone(),
        message,
    };
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(error("must be a string or a number".to_string())),
    };
    let parsed = Quantity::parse(&text).map_err(|e| error(e.to_string()))?;
    if parsed.is_negative() {
        return Err(error("must be greater than or equal to 0".to_string()));
    }
    u64::try_from(units(&parsed)).map_err(|_| error("is too large".to_string()))
}

/// Parses the memory options of a table line (whitespace already removed).
fn parse_memory_options(options: &str) -> Result<Vec<u64>, String> {
    let mut out: Vec<u64> = Vec::new();
    for item in options.split(',') {
        if item.is_empty() {
            return Err("empty memory option (two commas, or a trailing comma)".to_string());
        }
        let gib = |text: &str| parse_decimal(text, GIB).map_err(|m| format!("GiB {text:?}: {m}"));
        let values = match item.split_once('-') {
            None => vec![gib(item)?],
            Some((min, rest)) => {
                let (max, step) = rest
                    .split_once('/')
                    .ok_or_else(|| format!("range {item:?} must be min-max/step"))?;
                let (min, max, step) = (gib(min)?, gib(max)?, gib(step)?);
                if step == 0 || max < min || (max - min) % step != 0 {
                    return Err(format!(
                        "range {item:?}: the step must be positive and divide max - min"
                    ));
                }
                if (max - min) / step >= MAX_OPTIONS_PER_CLASS as u64 {
                    return Err(format!("range {item:?} has too many sizes"));
                }
                (0..=(max - min) / step).map(|k| min + k * step).collect()
            }
        };
        for value in values {
            if value == 0 {
                return Err("memory must be greater than 0".to_string());
            }
            if out.last().is_some_and(|&last| value <= last) {
                return Err("memory options must be in increasing order".to_string());
            }
            out.push(value);
            if out.len() > MAX_OPTIONS_PER_CLASS {
                return Err("too many memory options".to_string());
            }
        }
    }
    Ok(out)
}

/// Parses a plain non-negative decimal (`0.25`, `16`) into `unit`s per 1, exactly.
fn parse_decimal(text: &str, unit: u64) -> Result<u64, String> {
    let (int_part, frac_part) = text.split_once('.').unwrap_or((text, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty()
        || !digits_only(int_part)
        || !digits_only(frac_part)
        || (text.contains('.') && frac_part.is_empty())
    {
        return Err("expected a decimal number such as 0.5 or 2".to_string());
    }
    if int_part.len() > 15 || frac_part.len() > 18 {
        return Err("too many digits".to_string());
    }
    let mantissa: u128 = format!("{int_part}{frac_part}")
        .parse()
        .map_err(|_| "expected a decimal number".to_string())?;
    let scale = 10u128.pow(frac_part.len() as u32);
    let scaled = mantissa * u128::from(unit);
    if scaled % scale != 0 {
        return Err("is not a whole number of units (milli-vCPU or bytes)".to_string());
    }
    u64::try_from(scaled / scale).map_err(|_| "is too large".to_string())
}

/// `value / denominator` as an exact decimal without trailing zeros; the denominator must be a
/// product of 2s and 5s (1000, 100, 2^30) so that the expansion ends.
fn format_exact(value: u128, denominator: u128) -> String {
    let mut out = (value / denominator).to_string();
    let mut remainder = value % denominator;
    if remainder != 0 {
        out.push('.');
        // At most 30 digits for 2^30; the bound guards against any other denominator.
        for _ in 0..40 {
            if remainder == 0 {
                break;
            }
            remainder *= 10;
            out.push(char::from(b'0' + (remainder / denominator) as u8));
            remainder %= denominator;
        }
    }
    out
}

#[cfg(test)]
mod tests;
