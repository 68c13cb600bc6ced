//! `batch/v1`: Job and CronJob, with a cron schedule checker compatible with the parser
//! upstream uses (`robfig/cron/v3` `ParseStandard`).

use serde_json::Value;

use super::core::validate_pod_template;
use super::{
    absent, immutable, nonnegative, obj_at, objects_at, one_of, positive, str_at,
    validate_label_map, validate_workload_selector, Object, FIELD_IMMUTABLE,
};
use crate::error::{FieldError, FieldPath};

/// Longest CronJob name: the controller appends an 11-character suffix to make Job names.
pub const CRON_JOB_NAME_MAX_LENGTH: usize = 52;

pub(super) fn validate(kind: &str, obj: &Object, old: Option<&Object>, errs: &mut Vec<FieldError>) {
    match kind {
        "Job" => validate_job(obj, old, errs),
        "CronJob" => validate_cron_job(obj, old, errs),
        _ => {}
    }
}

fn validate_job(obj: &Object, old: Option<&Object>, errs: &mut Vec<FieldError>) {
    let path = FieldPath::root("spec");
    let Some(spec) = obj_at(obj, "spec") else {
        errs.push(FieldError::required("spec", ""));
        return;
    };
    let template = spec.get("template").filter(|t| !t.is_null());
    let labels = template
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"));
    let empty_labels = Value::Object(Object::new());
    validate_workload_selector(
        spec,
        &path,
        "empty selector is invalid for job",
        template.map(|_| labels.unwrap_or(&empty_labels)),
        errs,
    );
    validate_generated_selector(obj, spec, &path, errs);
    validate_job_spec(spec, &path, errs);
    if let Some(old_spec) = old.and_then(|o| obj_at(o, "spec")) {
        validate_job_spec_update(spec, old_spec, &path, errs);
    }
}

/// Unless `manualSelector` is true, the selector must be the one generated from the Job's uid
/// (`validateGeneratedSelector`).
fn validate_generated_selector(
    obj: &Object,
    spec: &Object,
    path: &FieldPath,
    errs: &mut Vec<FieldError>,
) {
    use crate::defaults::{JOB_CONTROLLER_UID_LABEL, LEGACY_JOB_CONTROLLER_UID_LABEL};
    if spec.get("manualSelector") == Some(&Value::Bool(true)) {
        return;
    }
    let uid = obj
        .get("metadata")
        .and_then(|m| m.get("uid"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(selector) = spec.get("selector").filter(|s| !s.is_null()) else {
        return;
    };
    if uid.is_empty() {
        return;
    }
    let labels_path = path.child("template").child("metadata").child("labels");
    let labels = spec
        .get("template")
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"));
    for key in [LEGACY_JOB_CONTROLLER_UID_LABEL, JOB_CONTROLLER_UID_LABEL] {
        match labels.and_then(|l| l.get(key)).and_then(Value::as_str) {
            None => errs.push(FieldError::required(labels_path.key(key), "")),
            Some(value) if value != uid => errs.push(FieldError::invalid(
                labels_path.key(key),
                value.into(),
                format!("must be '{uid}'"),
            )),
            Some(_) => {}
        }
    }
    let generated = serde_json::json!({ JOB_CONTROLLER_UID_LABEL: uid });
    let matches = crate::selector::LabelSelector::from_json(selector, &path.child("selector"))
        .is_ok_and(|s| s.matches(generated.as_object()));
    if !matches {
        errs.push(FieldError::invalid(
            path.child("selector"),
            selector.clone(),
            "`selector` not auto-generated",
        ));
    }
}

/// `validateJobSpec`: everything but the selector (a CronJob's job template has none).
fn validate_job_spec(spec: &Object, path: &FieldPath, errs: &mut Vec<FieldError>) {
    for key in [
        "parallelism",
        "completions",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        nonnegative(spec, key, path, errs);
    }
    positive(spec, "activeDeadlineSeconds", path, errs);
    one_of(
        spec,
        "completionMode",
        &["NonIndexed", "Indexed"],
        false,
        path,
        errs,
    );
    let indexed = str_at(spec, "completionMode") == "Indexed";
    if indexed {
        if absent(spec, "completions") {
            errs.push(FieldError::required(
                path.child("completions"),
                "when completion mode is Indexed",
            ));
        }
    } else {
        for key in ["backoffLimitPerIndex", "maxFailedIndexes"] {
            if !absent(spec, key) {
                errs.push(FieldError::forbidden(
                    path.child(key),
                    "requires indexed completion mode",
                ));
            }
        }
    }
    nonnegative(spec, "backoffLimitPerIndex", path, errs);
    nonnegative(spec, "maxFailedIndexes", path, errs);
    one_of(
        spec,
        "podReplacementPolicy",
        &["Failed", "TerminatingOrFailed"],
        false,
        path,
        errs,
    );
    if let Some(policy) = obj_at(spec, "podFailurePolicy") {
        let policy_path = path.child("podFailurePolicy");
        for (i, rule) in objects_at(policy, "rules") {
            let rule_path = policy_path.child("rules").index(i);
            one_of(
                rule,
                "action",
                &["Count", "FailIndex", "FailJob", "Ignore"],
                true,
                &rule_path,
                errs,
            );
            let by_exit = !absent(rule, "onExitCodes");
            let by_condition = !absent(rule, "onPodConditions");
            if by_exit == by_condition {
                errs.push(FieldError::invalid(
                    &rule_path,
                    Value::Object(rule.clone()),
                    "specifying one of OnExitCodes and OnPodConditions is required",
                ));
            }
        }
        if str_at(spec, "podReplacementPolicy") == "TerminatingOrFailed" {
            errs.push(FieldError::not_supported(
                path.child("podReplacementPolicy"),
                "TerminatingOrFailed".into(),
                &["Failed"],
            ));
        }
    }
    match spec.get("template").filter(|t| !t.is_null()) {
        None => errs.push(FieldError::required(path.child("template"), "")),
        Some(template) => {
            let template_path = path.child("template");
            validate_pod_template(template, &template_path, errs);
            let policy = template
                .get("spec")
                .and_then(|s| s.get("restartPolicy"))
                .and_then(Value::as_str);
            if let Some(policy) = policy {
                if policy != "OnFailure" && policy != "Never" {
                    errs.push(FieldError::not_supported(
                        template_path.child("spec").child("restartPolicy"),
                        policy.into(),
                        &["OnFailure", "Never"],
                    ));
                }
            }
        }
    }
}

fn validate_job_spec_update(
    spec: &Object,
    old: &Object,
    path: &FieldPath,
    errs: &mut Vec<FieldError>,
) {
    for key in [
        "selector",
        "completionMode",
        "podFailurePolicy",
        "manualSelector",
    ] {
        immutable(spec, old, key, path, errs);
    }
    // Elastic indexed jobs may change completions together with parallelism.
    let elastic = str_at(spec, "completionMode") == "Indexed"
        && spec.get("completions") == spec.get("parallelism");
    if !elastic {
        immutable(spec, old, "completions", path, errs);
    }
    // A suspended job's scheduling directives and pod metadata may change.
    let suspended = old.get("suspend") == Some(&Value::Bool(true));
    let scrub = |template: Option<&Value>| {
        let mut template = template.cloned().unwrap_or(Value::Null);
        if suspended {
            if let Some(t) = template.as_object_mut() {
                if let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("labels");
                    meta.remove("annotations");
                }
                if let Some(pod_spec) = t.get_mut("spec").and_then(Value::as_object_mut) {
                    for key in ["nodeSelector", "tolerations", "affinity", "schedulingGates"] {
                        pod_spec.remove(key);
                    }
                }
            }
        }
        template
    };
    let new_template = scrub(spec.get("template"));
    if new_template != scrub(old.get("template")) {
        errs.push(FieldError::invalid(
            path.child("template"),
            spec.get("template").cloned().unwrap_or(Value::Null),
            FIELD_IMMUTABLE,
        ));
    }
}

fn validate_cron_job(obj: &Object, old: Option<&Object>, errs: &mut Vec<FieldError>) {
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if old.is_none() && name.len() > CRON_JOB_NAME_MAX_LENGTH {
        errs.push(FieldError::invalid(
            FieldPath::root("metadata").child("name"),
            name.into(),
            format!("must be no more than {CRON_JOB_NAME_MAX_LENGTH} characters"),
        ));
    }
    let path = FieldPath::root("spec");
    let Some(spec) = obj_at(obj, "spec") else {
        errs.push(FieldError::required("spec", ""));
        return;
    };
    let schedule = str_at(spec, "schedule");
    let schedule_path = path.child("schedule");
    if schedule.is_empty() {
        errs.push(FieldError::required(&schedule_path, ""));
    } else {
        if let Err(msg) = parse_cron_schedule(schedule) {
            errs.push(FieldError::invalid(&schedule_path, schedule.into(), msg));
        }
        if schedule.contains("TZ") {
            errs.push(FieldError::invalid(
                &schedule_path,
                schedule.into(),
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        }
    }
    if let Some(zone) = spec.get("timeZone").filter(|z| !z.is_null()) {
        let zone_str = zone.as_str().unwrap_or("");
        if let Err(msg) = check_time_zone(zone_str) {
            errs.push(FieldError::invalid(
                path.child("timeZone"),
                zone.clone(),
                msg,
            ));
        }
    }
    one_of(
        spec,
        "concurrencyPolicy",
        &["Allow", "Forbid", "Replace"],
        true,
        &path,
        errs,
    );
    for key in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        nonnegative(spec, key, &path, errs);
    }
    let template_path = path.child("jobTemplate");
    match obj_at(spec, "jobTemplate") {
        None => errs.push(FieldError::required(&template_path, "")),
        Some(template) => {
            if let Some(meta) = obj_at(template, "metadata") {
                errs.extend(validate_label_map(
                    meta.get("labels"),
                    &template_path.child("metadata").child("labels"),
                ));
            }
            match obj_at(template, "spec") {
                Some(job_spec) => {
                    validate_job_spec(job_spec, &template_path.child("spec"), errs);
                    if let Some(selector) = job_spec.get("selector").filter(|s| !s.is_null()) {
                        let selector_path = template_path.child("spec").child("selector");
                        if let Err(e) =
                            crate::selector::LabelSelector::from_json(selector, &selector_path)
                        {
                            errs.extend(e);
                        }
                    }
                }
                None => errs.push(FieldError::required(template_path.child("spec"), "")),
            }
        }
    }
}

/// Rejects time zone names that cannot be IANA names. Without a time zone database only the
/// shape is checked: `Area/Location` made of letters, digits, `_`, `-`, `+` and `.`.
pub fn check_time_zone(zone: &str) -> Result<(), String> {
    if zone.eq_ignore_ascii_case("local") {
        return Err(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                .into(),
        );
    }
    let well_formed = !zone.is_empty()
        && !zone.starts_with('/')
        && !zone.ends_with('/')
        && !zone
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        && zone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'))
        && zone.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
    if well_formed {
        Ok(())
    } else {
        Err(format!("unknown time zone {zone}"))
    }
}

/// Checks a cron schedule as `cron.ParseStandard` does, with its error messages: five fields
/// (minute, hour, day of month, month, day of week) or a descriptor such as `@hourly`.
pub fn parse_cron_schedule(schedule: &str) -> Result<(), String> {
    let schedule = schedule.trim();
    if schedule.is_empty() {
        return Err("empty spec string".into());
    }
    if let Some(descriptor) = schedule.strip_prefix('@') {
        return match descriptor {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            _ => match descriptor.strip_prefix("every ") {
                Some(duration) if is_go_duration(duration.trim()) => Ok(()),
                Some(duration) => Err(format!(
                    "failed to parse duration {schedule}: time: invalid duration \"{}\"",
                    duration.trim()
                )),
                None => Err(format!("unrecognized descriptor: {schedule}")),
            },
        };
    }
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    const MONTHS: &[&str] = &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let bounds: [(u32, u32, &[&str], u32); 5] = [
        (0, 59, &[], 0),
        (0, 23, &[], 0),
        (1, 31, &[], 0),
        (1, 12, MONTHS, 1),
        (0, 6, DAYS, 0),
    ];
    for (field, (min, max, names, name_base)) in fields.iter().zip(bounds) {
        for expr in field.split(',') {
            check_cron_range(expr, min, max, names, name_base)?;
        }
    }
    Ok(())
}

fn check_cron_range(
    expr: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<(), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let (start, mut end) = if low_and_high[0] == "*" || low_and_high[0] == "?" {
        (min, max)
    } else {
        let start = parse_int_or_name(low_and_high[0], names, name_base)?;
        let end = match low_and_high.len() {
            1 => start,
            2 => parse_int_or_name(low_and_high[1], names, name_base)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        (start, end)
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            if single {
                end = max;
            }
            parse_non_negative(range_and_step[1])?
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({min}): {expr}"
        ));
    }
    if end > max {
        return Err(format!(
            "end of range ({end}) above maximum ({max}): {expr}"
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(())
}

fn parse_int_or_name(expr: &str, names: &[&str], name_base: u32) -> Result<u32, String> {
    let lower = expr.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + name_base);
    }
    parse_non_negative(expr)
}

fn parse_non_negative(expr: &str) -> Result<u32, String> {
    match expr.parse::<i64>() {
        Ok(n) if n < 0 => Err(format!("negative number ({n}) not allowed: {expr}")),
        Ok(n) => u32::try_from(n).map_err(|_| format!("end of range ({n}) above maximum: {expr}")),
        Err(_) => Err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing \"{expr}\": invalid syntax"
        )),
    }
}

/// Whether `s` is a Go `time.Duration` string such as `1h30m` or `90s`.
fn is_go_duration(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    if s == "0" {
        return true;
    }
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let number_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        if number_len == 0 || rest[..number_len] == *"." {
            return false;
        }
        rest = &rest[number_len..];
        let unit = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .iter()
            .find(|u| rest.starts_with(**u) && !(**u == "m" && rest.starts_with("ms")));
        match unit {
            Some(unit) => rest = &rest[unit.len()..],
            None => return false,
        }
    }
    true
}
