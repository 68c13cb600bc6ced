//! `nodeless export` and `nodeless import`: move a cluster's state between stores.
//!
//! # The export format (version 1)
//!
//! JSON lines (UTF-8, one JSON object per line):
//!
//! 1. a header: `{"format":"nodeless-export","version":1,"revision":N,"exported_at":"RFC 3339",
//!    "source":"sqlite"|"etcd","objects":COUNT}`, where `revision` is the source store's
//!    revision the snapshot was read at;
//! 2. one line per key under `/registry/`, in key order, all read at that one revision:
//!    `{"key":"/registry/...","value":{...}}` with the stored JSON object embedded as JSON, or
//!    `{"key":"/registry/...","value_base64":"..."}` (standard alphabet, padded) when the stored
//!    bytes are not JSON that re-serializes to exactly the same bytes;
//! 3. a trailer: `{"end":"nodeless-export","objects":COUNT}`.
//!
//! `import` reads and checks the whole stream (header, every line, no duplicate keys, the
//! trailer and its count) before it writes anything, so a truncated file is refused. Values are
//! written back byte for byte. Objects keep their uid, creationTimestamp and everything else;
//! only their resourceVersions change, because those are the target store's revisions.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use nodeless_store::{RangeRequest, Store, StoreError};
use serde_json::{json, Value};

use crate::store_args::{self, StoreArgs, StoreKind};

/// The `format` field of an export's header.
pub const FORMAT_NAME: &str = "nodeless-export";
/// The version of the format this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// The key prefix an export covers: every Kubernetes object.
pub const EXPORT_PREFIX: &str = "/registry/";
/// Keys read per range request while exporting.
const PAGE_SIZE: usize = 500;
/// Creates in flight at once while importing.
const IMPORT_CONCURRENCY: usize = 64;

/// Arguments of `nodeless export`.
#[derive(clap::Args, Clone, Debug)]
pub struct ExportArgs {
    /// The cluster's data dir (its SQLite state with `--store sqlite`).
    #[arg(long, default_value = "/var/lib/nodeless", env = "NODELESS_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The store to read.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Where to write the export (`-`: standard output).
    #[arg(long, default_value = "-")]
    pub output: String,
}

/// Arguments of `nodeless import`.
#[derive(clap::Args, Clone, Debug)]
pub struct ImportArgs {
    /// The export to read (`-`: standard input).
    #[arg(long, default_value = "-")]
    pub input: String,
    /// The target cluster's data dir (its SQLite state with `--store sqlite`).
    #[arg(long, default_value = "/var/lib/nodeless", env = "NODELESS_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The store to write.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Import into a store that already holds objects: only keys it lacks are created.
    #[arg(long)]
    pub force: bool,
}

/// An export read back: the source revision and every key with its stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedExport {
    /// The source store's revision the snapshot was read at.
    pub revision: i64,
    /// The keys and their values, in file order.
    pub entries: Vec<(String, Vec<u8>)>,
}

fn store_name(kind: StoreKind) -> &'static str {
    match kind {
        StoreKind::Sqlite => "sqlite",
        StoreKind::Etcd => "etcd",
    }
}

/// The header line (without the newline).
pub fn header_line(revision: i64, exported_at: &str, source: &str, objects: u64) -> String {
    json!({
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "revision": revision,
        "exported_at": exported_at,
        "source": source,
        "objects": objects,
    })
    .to_string()
}

/// The line for one key (without the newline): its value embedded as JSON when the bytes are
/// JSON that serializes back to exactly the same bytes, base64 otherwise.
pub fn entry_line(key: &str, value: &[u8]) -> String {
    if let Ok(parsed) = serde_json::from_slice::<Value>(value) {
        if serde_json::to_vec(&parsed).is_ok_and(|bytes| bytes == value) {
            return json!({ "key": key, "value": parsed }).to_string();
        }
    }
    json!({ "key": key, "value_base64": base64_encode(value) }).to_string()
}

/// The trailer line (without the newline).
pub fn trailer_line(objects: u64) -> String {
    json!({ "end": FORMAT_NAME, "objects": objects }).to_string()
}

/// Reads and checks a whole export; see the module documentation for what is checked.
pub fn parse_export(reader: impl BufRead) -> anyhow::Result<ParsedExport> {
    let mut lines = reader.lines().enumerate();
    let (_, header) = lines
        .next()
        .context("the export is empty (no header line)")?;
    let header: Value = serde_json::from_str(&header.context("reading the header")?)
        .context("the header is not JSON")?;
    if header["format"] != FORMAT_NAME {
        bail!(
            "not a nodeless export (the header's format is {})",
            header["format"]
        );
    }
    if header["version"] != FORMAT_VERSION {
        bail!(
            "export format version {} is not supported (this build reads version {FORMAT_VERSION})",
            header["version"]
        );
    }
    let revision = header["revision"]
        .as_i64()
        .context("the header has no revision")?;
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    let mut trailer = None;
    for (index, line) in lines {
        let number = index + 1;
        let line = line.with_context(|| format!("reading line {number}"))?;
        if trailer.is_some() {
            if line.trim().is_empty() {
                continue;
            }
            bail!("line {number}: data after the trailer");
        }
        let record: Value =
            serde_json::from_str(&line).with_context(|| format!("line {number} is not JSON"))?;
        if record["end"] == FORMAT_NAME {
            trailer = Some(
                record["objects"]
                    .as_u64()
                    .with_context(|| format!("line {number}: the trailer has no object count"))?,
            );
            continue;
        }
        let key = record["key"]
            .as_str()
            .with_context(|| format!("line {number} has no key"))?;
        if !key.starts_with(EXPORT_PREFIX) {
            bail!("line {number}: key {key:?} is outside {EXPORT_PREFIX}");
        }
        let value = match (record.get("value"), record.get("value_base64")) {
            (Some(value), None) => serde_json::to_vec(value)?,
            (None, Some(Value::String(encoded))) => base64_decode(encoded)
                .with_context(|| format!("line {number}: value_base64 is not base64"))?,
            _ => bail!("line {number}: expected exactly one of value or value_base64"),
        };
        if !seen.insert(key.to_owned()) {
            bail!("line {number}: key {key:?} appears twice");
        }
        entries.push((key.to_owned(), value));
    }
    match trailer {
        None => bail!(
            "the export is truncated: no trailer line after {} objects",
            entries.len()
        ),
        Some(count) if count != entries.len() as u64 => bail!(
            "the export is inconsistent: the trailer counts {count} objects, the file has {}",
            entries.len()
        ),
        Some(_) => Ok(ParsedExport { revision, entries }),
    }
}

/// `nodeless export`: writes every key under `/registry/`, read at one revision.
pub async fn export(args: &ExportArgs) -> anyhow::Result<()> {
    if args.store.store == StoreKind::Sqlite {
        let path = args.data_dir.join(store_args::SQLITE_FILE);
        if !path.exists() {
            bail!("there is no SQLite state at {}", path.display());
        }
        store_args::ensure_no_server(&args.data_dir, "export")?;
    }
    let store = store_args::open_store(&args.data_dir, &args.store).await?;
    let source = args.store.describe(&args.data_dir);
    let (mut out, temp_path): (Box<dyn Write>, Option<PathBuf>) = if args.output == "-" {
        (
            Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            None,
        )
    } else {
        let temp = PathBuf::from(format!("{}.partial", args.output));
        let file =
            std::fs::File::create(&temp).with_context(|| format!("creating {}", temp.display()))?;
        (Box::new(std::io::BufWriter::new(file)), Some(temp))
    };
    let result = write_export(store.as_ref(), store_name(args.store.store), &mut out).await;
    let result = result.and_then(|(revision, objects)| {
        out.flush().context("writing the export")?;
        drop(out);
        if let Some(temp) = &temp_path {
            std::fs::rename(temp, &args.output)
                .with_context(|| format!("renaming {} to {}", temp.display(), args.output))?;
        }
        Ok((revision, objects))
    });
    match result {
        Ok((revision, objects)) => {
            eprintln!("exported {objects} objects from {source} at revision {revision}");
            Ok(())
        }
        Err(error) => {
            if let Some(temp) = &temp_path {
                let _ = std::fs::remove_file(temp);
            }
            Err(error)
        }
    }
}

/// Writes the export stream of `store`; returns the revision it was read at and the count.
async fn write_export(
    store: &dyn Store,
    source: &str,
    out: &mut dyn Write,
) -> anyhow::Result<(i64, u64)> {
    let revision = store
        .current_revision()
        .await
        .context("reading the store's revision")?;
    let read_at = (revision > 0).then_some(revision);
    let mut start_key: Option<String> = None;
    let mut written = 0u64;
    loop {
        let page = store
            .range(RangeRequest {
                prefix: EXPORT_PREFIX,
                start_key: start_key.as_deref(),
                limit: Some(PAGE_SIZE + 1),
                revision: read_at,
            })
            .await
            .map_err(|error| match error {
                StoreError::Compacted { .. } => anyhow::anyhow!(
                    "the store compacted revision {revision} while it was being exported; \
                     run the export again ({error})"
                ),
                other => anyhow::Error::new(other).context("reading the store"),
            })?;
        if start_key.is_none() {
            let exported_at = rfc3339_now();
            writeln!(
                out,
                "{}",
                header_line(revision, &exported_at, source, page.count)
            )?;
        }
        // Pages overlap by one key: the next page starts at (and skips) the last key written.
        let fresh = page
            .kvs
            .iter()
            .filter(|kv| start_key.as_deref() != Some(kv.key.as_str()));
        for kv in fresh {
            writeln!(out, "{}", entry_line(&kv.key, &kv.value))?;
            written += 1;
        }
        match page.kvs.last() {
            Some(last) if page.more => start_key = Some(last.key.clone()),
            _ => break,
        }
    }
    writeln!(out, "{}", trailer_line(written))?;
    Ok((revision, written))
}

/// `nodeless import`: loads an export into an empty store (or, with `--force`, adds the keys
/// a store lacks).
pub async fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let export = if args.input == "-" {
        parse_export(std::io::stdin().lock()).context("reading the export from standard input")?
    } else {
        let file =
            std::fs::File::open(&args.input).with_context(|| format!("opening {}", args.input))?;
        parse_export(std::io::BufReader::new(file))
            .with_context(|| format!("reading {}", args.input))?
    };
    if args.store.store == StoreKind::Sqlite {
        store_args::ensure_no_server(&args.data_dir, "import")?;
    }
    let target = args.store.describe(&args.data_dir);
    let store = store_args::open_store(&args.data_dir, &args.store).await?;
    let existing = store
        .range(RangeRequest {
            prefix: EXPORT_PREFIX,
            limit: Some(1),
            ..RangeRequest::default()
        })
        .await
        .context("reading the target store")?
        .count;
    if existing > 0 && !args.force {
        bail!(
            "{target} already holds {existing} keys under {EXPORT_PREFIX}; import needs an empty \
             store (--force creates only the keys it lacks)"
        );
    }
    let total = export.entries.len();
    let counts = create_all(store.clone(), export.entries).await?;
    let revision = store.current_revision().await.unwrap_or_default();
    println!(
        "imported {} of {total} objects into {target} ({} already present); export revision {}, \
         store revision now {revision}",
        counts.created, counts.skipped, export.revision
    );
    Ok(())
}

/// What [`create_all`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct ImportCounts {
    created: usize,
    skipped: usize,
}

/// Creates every absent key, a bounded number at a time; keys that exist are skipped.
async fn create_all(
    store: Arc<dyn Store>,
    entries: Vec<(String, Vec<u8>)>,
) -> anyhow::Result<ImportCounts> {
    let mut counts = ImportCounts::default();
    let mut first_error: Option<anyhow::Error> = None;
    let mut in_flight = tokio::task::JoinSet::new();
    let mut entries = entries.into_iter();
    loop {
        while in_flight.len() < IMPORT_CONCURRENCY && first_error.is_none() {
            let Some((key, value)) = entries.next() else {
                break;
            };
            let store = store.clone();
            in_flight.spawn(async move {
                let result = store.create(&key, value).await;
                (key, result)
            });
        }
        let Some(joined) = in_flight.join_next().await else {
            break;
        };
        match joined {
            Ok((_, Ok(_))) => counts.created += 1,
            Ok((key, Err(StoreError::AlreadyExists { .. }))) => {
                tracing::debug!(%key, "already present; kept as it is");
                counts.skipped += 1;
            }
            Ok((key, Err(error))) => {
                first_error.get_or_insert_with(|| {
                    anyhow::Error::new(error).context(format!("creating {key}"))
                });
            }
            Err(join_error) => {
                first_error
                    .get_or_insert_with(|| anyhow::anyhow!("import task failed: {join_error}"));
            }
        }
    }
    match first_error {
        Some(error) => Err(error.context(format!(
            "import stopped after creating {} objects ({} already present); \
             run it again with --force to add the rest",
            counts.created, counts.skipped
        ))),
        None => Ok(counts),
    }
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard padded base64; `None` if the text is not valid base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// Now as an RFC 3339 UTC timestamp with seconds precision.
fn rfc3339_now() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    rfc3339(seconds)
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (the proleptic Gregorian calendar).
fn rfc3339(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let secs = seconds % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    #[test]
    fn base64_round_trips_and_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        assert_eq!(base64_decode("Zm9"), None, "length not a multiple of 4");
        assert_eq!(base64_decode("Zg==Zm8="), None, "padding in the middle");
        assert_eq!(base64_decode("Z!=="), None, "not in the alphabet");
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn json_values_are_embedded_and_other_bytes_are_base64() {
        let object =
            br#"{"kind":"ConfigMap","metadata":{"name":"a","uid":"u-1"},"data":{"x":"1"}}"#;
        let line: Value =
            serde_json::from_str(&entry_line("/registry/core/configmaps/d/a", object)).unwrap();
        assert_eq!(line["value"]["metadata"]["uid"], "u-1");
        assert!(line.get("value_base64").is_none());
        // JSON that would not serialize back to the same bytes, and binary (e.g. protobuf).
        for odd in [&b"{ \"spaced\": 1 }"[..], b"\x6b\x38\x73\x00\xff"] {
            let line: Value = serde_json::from_str(&entry_line("/registry/x/y", odd)).unwrap();
            assert!(line.get("value").is_none());
            assert_eq!(
                base64_decode(line["value_base64"].as_str().unwrap()).unwrap(),
                odd
            );
        }
    }

    #[test]
    fn an_export_parses_back_byte_for_byte() {
        let values: Vec<(String, Vec<u8>)> = vec![
            (
                "/registry/core/namespaces/a".into(),
                br#"{"kind":"Namespace","n":1.5}"#.to_vec(),
            ),
            ("/registry/raw".into(), vec![0, 159, 146, 150]),
        ];
        let mut lines = vec![header_line(42, "2026-01-01T00:00:00Z", "sqlite", 2)];
        lines.extend(values.iter().map(|(k, v)| entry_line(k, v)));
        lines.push(trailer_line(2));
        let parsed = parse_export(stream(&lines).as_bytes()).unwrap();
        assert_eq!(
            parsed,
            ParsedExport {
                revision: 42,
                entries: values
            }
        );
    }

    #[test]
    fn broken_exports_are_refused() {
        let header = header_line(7, "2026-01-01T00:00:00Z", "etcd", 1);
        let entry = entry_line("/registry/core/configmaps/d/a", b"{}");
        let cases: Vec<(Vec<String>, &str)> = vec![
            (vec![], "empty"),
            (vec![header.clone(), entry.clone()], "truncated"),
            (
                vec![header.clone(), entry.clone(), trailer_line(2)],
                "inconsistent",
            ),
            (
                vec![
                    header.clone(),
                    entry.clone(),
                    entry.clone(),
                    trailer_line(2),
                ],
                "twice",
            ),
            (
                vec![
                    header.clone(),
                    entry_line("/other/key", b"{}"),
                    trailer_line(1),
                ],
                "outside",
            ),
            (
                vec![
                    header.replace("nodeless-export", "something"),
                    trailer_line(0),
                ],
                "not a nodeless export",
            ),
            (
                vec![
                    header.replace("\"version\":1", "\"version\":2"),
                    trailer_line(0),
                ],
                "version 2",
            ),
            (
                vec![header.clone(), trailer_line(0), entry.clone()],
                "after the trailer",
            ),
        ];
        for (lines, expected) in cases {
            let error = parse_export(stream(&lines).as_bytes()).unwrap_err();
            let message = format!("{error:#}");
            assert!(message.contains(expected), "{lines:?}: {message}");
        }
    }

    #[tokio::test]
    async fn export_then_import_copies_every_key_at_one_revision() {
        let dir = tempfile::tempdir().unwrap();
        let source: Arc<dyn Store> =
            Arc::new(nodeless_store::SqliteStore::open(dir.path().join("a.db")).unwrap());
        for i in 0..(PAGE_SIZE + 7) {
            let key = format!("/registry/core/configmaps/ns/cm-{i:04}");
            source
                .create(&key, format!("{{\"i\":{i}}}").into_bytes())
                .await
                .unwrap();
        }
        source
            .create("/outside/registry", b"{}".to_vec())
            .await
            .unwrap();
        let mut out = Vec::new();
        let (revision, objects) = write_export(source.as_ref(), "sqlite", &mut out)
            .await
            .unwrap();
        assert_eq!(
            objects as usize,
            PAGE_SIZE + 7,
            "paged without gaps or repeats"
        );
        assert_eq!(revision, source.current_revision().await.unwrap());
        let parsed = parse_export(out.as_slice()).unwrap();
        assert_eq!(parsed.revision, revision);
        assert_eq!(parsed.entries[3].1, br#"{"i":3}"#);

        let target: Arc<dyn Store> =
            Arc::new(nodeless_store::SqliteStore::open(dir.path().join("b.db")).unwrap());
        target
            .create(
                "/registry/core/configmaps/ns/cm-0000",
                b"{\"kept\":true}".to_vec(),
            )
            .await
            .unwrap();
        let counts = create_all(target.clone(), parsed.entries).await.unwrap();
        assert_eq!(
            counts,
            ImportCounts {
                created: PAGE_SIZE + 6,
                skipped: 1
            }
        );
        let kept = target
            .get("/registry/core/configmaps/ns/cm-0000", None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            kept.value, b"{\"kept\":true}",
            "existing keys are not overwritten"
        );
        let copied = target
            .get("/registry/core/configmaps/ns/cm-0100", None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(copied.value, br#"{"i":100}"#);
        assert!(target
            .get("/outside/registry", None)
            .await
            .unwrap()
            .is_none());
    }
}
