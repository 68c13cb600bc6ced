//! `nodeless usage`: the metered usage of pods, workloads or namespaces, read through the
//! API server's `metering.nodeless.io/v1` usage endpoint and printed as a table.

use std::path::PathBuf;

use anyhow::Context;
use clap::ValueEnum;
use nodeless_metering::report::render_table;
use nodeless_metering::time_format;
use nodeless_metering::UsageReport;

/// What the rows of `nodeless usage` are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum UsageBy {
    /// One row per pod.
    Pod,
    /// One row per workload (Deployment, StatefulSet, Job, CronJob, ...; bare pods as pods).
    Workload,
    /// One row per namespace.
    Namespace,
}

/// How `nodeless usage` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum UsageOutput {
    /// A kubectl-style table.
    Table,
    /// The endpoint's `UsageReport` as JSON.
    Json,
}

/// The flags of `nodeless usage`.
#[derive(clap::Args)]
pub struct UsageArgs {
    /// The kubeconfig to reach the cluster with (default: $KUBECONFIG, else
    /// DATA_DIR/kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The cluster's data dir, whose kubeconfig is the default.
    #[arg(long, default_value = "/var/lib/nodeless", env = "NODELESS_DATA_DIR")]
    data_dir: PathBuf,
    /// The namespace (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// What to sum usage by.
    #[arg(long, value_enum, default_value_t = UsageBy::Pod)]
    by: UsageBy,
    /// Only the last this long, e.g. `1h`, `30m`, `2d`, `1h30m`.
    #[arg(long, conflicts_with_all = ["start", "end"])]
    since: Option<String>,
    /// The window's start (RFC 3339; default: the earliest record).
    #[arg(long)]
    start: Option<String>,
    /// The window's end, exclusive (RFC 3339; default: now).
    #[arg(long)]
    end: Option<String>,
    /// The output format.
    #[arg(short = 'o', long, value_enum, default_value_t = UsageOutput::Table)]
    output: UsageOutput,
}

/// Parses a duration such as `90s`, `5m`, `1h30m` or `2d` into seconds.
fn parse_since(text: &str) -> anyhow::Result<i64> {
    let invalid = || anyhow::anyhow!("--since {text:?}: expected a duration such as 30m, 1h or 2d");
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(invalid()),
        };
        let amount: i64 = digits.parse().map_err(|_| invalid())?;
        total = amount
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(invalid)?;
        digits.clear();
    }
    if !digits.is_empty() || total == 0 {
        return Err(invalid());
    }
    Ok(total)
}

/// A timestamp flag, normalised to UTC RFC 3339 for the query.
fn time_flag(name: &str, text: &str) -> anyhow::Result<String> {
    let at = time_format::parse(text).with_context(|| {
        format!("--{name} {text:?}: expected an RFC 3339 time such as 2026-01-02T15:04:05Z")
    })?;
    Ok(time_format::format(at))
}

/// The request path of the endpoint for these flags (`namespace`: the context's default).
fn request_path(args: &UsageArgs, default_namespace: &str) -> anyhow::Result<String> {
    let by = match args.by {
        UsageBy::Pod => "pod",
        UsageBy::Workload => "workload",
        UsageBy::Namespace => "namespace",
    };
    let mut query = vec![format!("by={by}")];
    if let Some(since) = &args.since {
        let start = time::OffsetDateTime::now_utc() - time::Duration::seconds(parse_since(since)?);
        query.push(format!("start={}", time_format::format(start)));
    }
    if let Some(start) = &args.start {
        query.push(format!("start={}", time_flag("start", start)?));
    }
    if let Some(end) = &args.end {
        query.push(format!("end={}", time_flag("end", end)?));
    }
    let base = if args.all_namespaces {
        "/apis/metering.nodeless.io/v1/usage".to_string()
    } else {
        let namespace = args.namespace.as_deref().unwrap_or(default_namespace);
        format!("/apis/metering.nodeless.io/v1/namespaces/{namespace}/usage")
    };
    Ok(format!("{base}?{}", query.join("&")))
}

/// `nodeless usage`.
pub async fn usage(args: &UsageArgs) -> anyhow::Result<()> {
    let config = match (&args.kubeconfig, std::env::var_os("KUBECONFIG")) {
        (Some(path), _) => kubeconfig_file(path).await?,
        (None, Some(_)) => kube::Config::infer().await.context("reading $KUBECONFIG")?,
        (None, None) => kubeconfig_file(&args.data_dir.join("kubeconfig")).await?,
    };
    let path = request_path(args, &config.default_namespace)?;
    let client = kube::Client::try_from(config).context("building the API client")?;
    let request = http::Request::get(&path)
        .body(Vec::new())
        .context("building the request")?;
    let text = match client.request_text(request).await {
        Ok(text) => text,
        Err(kube::Error::Api(status)) => anyhow::bail!("{}", status.message),
        Err(error) => return Err(error).context("reading usage from the API server"),
    };
    let report: UsageReport = serde_json::from_str(&text).context("the usage endpoint's answer")?;
    match args.output {
        UsageOutput::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        UsageOutput::Table if report.items.is_empty() => {
            eprintln!(
                "No usage between {} and {}.",
                time_format::format(report.window.start),
                time_format::format(report.window.end)
            );
        }
        UsageOutput::Table => print!("{}", render_table(&report)),
    }
    Ok(())
}

async fn kubeconfig_file(path: &std::path::Path) -> anyhow::Result<kube::Config> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading {}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("using {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_since("90s").unwrap(), 90);
        assert_eq!(parse_since("1h30m").unwrap(), 5400);
        assert_eq!(parse_since("2d").unwrap(), 172800);
        assert!(parse_since("1w").is_err());
        assert!(parse_since("10").is_err());
        assert!(parse_since("").is_err());
    }
}
