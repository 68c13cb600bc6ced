//! The sandbox (pause) image: the project's own tiny static program (`pause/pause.c`, built by
//! `build.rs`), packed as an OCI image layout and imported into containerd at start, so that no
//! registry is needed for it.

use std::path::Path;
use std::process::Stdio;

use ring::digest::{digest, SHA256};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::cri::{self, api, ImageServiceClient};
use crate::ContainerdError;

/// The name of the sandbox image (containerd's `sandbox_image`).
pub const IMAGE: &str = concat!("registry.nodeless.io/pause:", env!("CARGO_PKG_VERSION"));

/// The containerd namespace of CRI's images and containers.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// The static sandbox program.
const PAUSE_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// The modification time of every file in the archive (fixed, so the image is reproducible).
const MTIME: u64 = 0;

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// The blobs of the image (layer, config, manifest) with their digests.
struct ImageBlobs {
    layer: Vec<u8>,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

/// `sha256:<hex>` of `data`.
fn sha256(data: &[u8]) -> String {
    let hash = digest(&SHA256, data);
    let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The OCI name of the architecture this crate is built for.
fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn descriptor(media_type: &str, blob: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256(blob), "size": blob.len() })
}

fn image_blobs() -> ImageBlobs {
    let mut layer = TarWriter::default();
    layer.file("pause", 0o755, PAUSE_BINARY);
    let layer = layer.finish();
    let config = json!({
        "architecture": oci_architecture(),
        "os": "linux",
        "config": { "Entrypoint": ["/pause"], "WorkingDir": "/" },
        "rootfs": { "type": "layers", "diff_ids": [sha256(&layer)] },
        "history": [{ "created_by": "nodeless: pause/pause.c, built statically" }],
    });
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": descriptor(MEDIA_CONFIG, &config),
        "layers": [descriptor(MEDIA_LAYER, &layer)],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    ImageBlobs {
        layer,
        config,
        manifest,
    }
}

/// The image ID containerd gives the pause image (the digest of its config).
pub fn image_id() -> String {
    sha256(&image_blobs().config)
}

/// The pause image as an OCI image layout in a tar archive, named [`IMAGE`], as
/// `ctr images import` reads it.
pub fn oci_archive() -> Vec<u8> {
    let blobs = image_blobs();
    let tag = IMAGE.rsplit_once(':').map_or("latest", |(_, tag)| tag);
    let mut manifest_descriptor = descriptor(MEDIA_MANIFEST, &blobs.manifest);
    manifest_descriptor["platform"] = json!({ "architecture": oci_architecture(), "os": "linux" });
    manifest_descriptor["annotations"] = json!({
        "io.containerd.image.name": IMAGE,
        "org.opencontainers.image.ref.name": tag,
    });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [manifest_descriptor],
    });
    let mut archive = TarWriter::default();
    archive.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#);
    archive.file(
        "index.json",
        0o644,
        &serde_json::to_vec(&index).unwrap_or_default(),
    );
    archive.directory("blobs/");
    archive.directory("blobs/sha256/");
    for blob in [&blobs.layer, &blobs.config, &blobs.manifest] {
        let name = format!("blobs/sha256/{}", &sha256(blob)["sha256:".len()..]);
        archive.file(&name, 0o644, blob);
    }
    archive.finish()
}

/// Imports the pause image `archive` (see [`oci_archive`]) into containerd's `k8s.io` namespace
/// with `ctr images import`, unpacked for `snapshotter`; does nothing when the same image is
/// already there.
pub async fn import(
    socket: &Path,
    archive: &[u8],
    snapshotter: &str,
) -> Result<(), ContainerdError> {
    let channel = cri::connect(socket).await?;
    let status = ImageServiceClient::new(channel)
        .image_status(api::ImageStatusRequest {
            image: Some(api::ImageSpec {
                image: IMAGE.to_string(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await?
        .into_inner();
    if status.image.is_some_and(|image| image.id == image_id()) {
        tracing::debug!(image = IMAGE, "pause image already present");
        return Ok(());
    }
    let mut child = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", CRI_NAMESPACE, "images", "import"])
        .arg(format!("--snapshotter={snapshotter}"))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| ContainerdError::io("running `ctr images import`", error))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(archive)
            .await
            .map_err(|error| ContainerdError::io("writing the pause image to `ctr`", error))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|error| ContainerdError::io("waiting for `ctr images import`", error))?;
    if !output.status.success() {
        return Err(ContainerdError::Start(format!(
            "importing the pause image {IMAGE} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    tracing::info!(image = IMAGE, "imported the pause image");
    Ok(())
}

/// A minimal writer of ustar archives (regular files and folders, owned by root).
#[derive(Default)]
struct TarWriter {
    data: Vec<u8>,
}

impl TarWriter {
    const BLOCK: usize = 512;

    fn header(&mut self, name: &str, mode: u32, size: usize, kind: u8) {
        let mut header = [0u8; Self::BLOCK];
        // Names here are short (at most 80 bytes: blobs/sha256/<64 hex>), within the 100 of ustar.
        let name = name.as_bytes();
        let name_len = name.len().min(100);
        header[..name_len].copy_from_slice(&name[..name_len]);
        write_octal(&mut header[100..108], u64::from(mode));
        write_octal(&mut header[108..116], 0); // uid
        write_octal(&mut header[116..124], 0); // gid
        write_octal(&mut header[124..136], size as u64);
        write_octal(&mut header[136..148], MTIME);
        header[156] = kind;
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        // The checksum is computed with its own field as spaces.
        header[148..156].copy_from_slice(b"        ");
        let checksum: u64 = header.iter().map(|&b| u64::from(b)).sum();
        write_octal(&mut header[148..155], checksum);
        header[155] = b' ';
        self.data.extend_from_slice(&header);
    }

    /// Adds a regular file.
    fn file(&mut self, name: &str, mode: u32, contents: &[u8]) {
        self.header(name, mode, contents.len(), b'0');
        self.data.extend_from_slice(contents);
        let padding = (Self::BLOCK - contents.len() % Self::BLOCK) % Self::BLOCK;
        self.data.extend(std::iter::repeat_n(0u8, padding));
    }

    /// Adds a folder (`name` ends with `/`).
    fn directory(&mut self, name: &str) {
        self.header(name, 0o755, 0, b'5');
    }

    /// The archive, with its two closing zero blocks.
    fn finish(mut self) -> Vec<u8> {
        self.data.extend(std::iter::repeat_n(0u8, 2 * Self::BLOCK));
        self.data
    }
}

/// Writes `value` in octal, zero-padded, NUL-terminated, into `field`.
fn write_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    let text = text.as_bytes();
    let start = text.len().saturating_sub(digits);
    field[..digits].copy_from_slice(&text[start..]);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entries of a ustar archive: (name, mode, kind, contents).
    fn read_tar(data: &[u8]) -> Vec<(String, u32, u8, Vec<u8>)> {
        let mut entries = Vec::new();
        let mut offset = 0;
        while offset + 512 <= data.len() && data[offset] != 0 {
            let header = &data[offset..offset + 512];
            let name_end = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
            let name = String::from_utf8(header[..name_end].to_vec()).unwrap();
            let octal = |field: &[u8]| {
                let text = std::str::from_utf8(field)
                    .unwrap()
                    .trim_matches(|c| c == '\0' || c == ' ');
                u64::from_str_radix(text, 8).unwrap()
            };
            let mode = octal(&header[100..108]) as u32;
            let size = octal(&header[124..136]) as usize;
            let checksum = octal(&header[148..156]);
            let mut blank = header.to_vec();
            blank[148..156].copy_from_slice(b"        ");
            assert_eq!(
                checksum,
                blank.iter().map(|&b| u64::from(b)).sum::<u64>(),
                "{name}"
            );
            assert_eq!(&header[257..263], b"ustar\0");
            let contents = data[offset + 512..offset + 512 + size].to_vec();
            entries.push((name, mode, header[156], contents));
            offset += 512 + size.div_ceil(512) * 512;
        }
        assert_eq!(data.len() % 512, 0);
        assert!(
            data[offset..].iter().all(|&b| b == 0),
            "zero blocks at the end"
        );
        assert!(data.len() - offset >= 1024);
        entries
    }

    fn entry<'a>(entries: &'a [(String, u32, u8, Vec<u8>)], name: &str) -> &'a [u8] {
        &entries
            .iter()
            .find(|e| e.0 == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .3
    }

    fn blob<'a>(entries: &'a [(String, u32, u8, Vec<u8>)], digest: &Value) -> &'a [u8] {
        let digest = digest.as_str().unwrap();
        let data = entry(
            entries,
            &format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap()),
        );
        assert_eq!(sha256(data), digest, "a blob is stored under its digest");
        data
    }

    #[test]
    fn the_image_name_carries_the_crate_version() {
        assert_eq!(
            IMAGE,
            format!("registry.nodeless.io/pause:{}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn the_pause_binary_is_a_static_elf_executable() {
        assert_eq!(&PAUSE_BINARY[..4], b"\x7fELF");
        assert!(PAUSE_BINARY.len() > 1000);
    }

    #[test]
    fn sha256_is_the_standard_one() {
        assert_eq!(
            sha256(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_archive_is_an_oci_layout_naming_the_image() {
        let archive = oci_archive();
        assert_eq!(archive, oci_archive(), "reproducible");
        let entries = read_tar(&archive);
        let layout: Value = serde_json::from_slice(entry(&entries, "oci-layout")).unwrap();
        assert_eq!(layout["imageLayoutVersion"], "1.0.0");
        let index: Value = serde_json::from_slice(entry(&entries, "index.json")).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 1);
        let annotations = &manifests[0]["annotations"];
        assert_eq!(annotations["io.containerd.image.name"], IMAGE);
        assert_eq!(
            annotations["org.opencontainers.image.ref.name"],
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(manifests[0]["platform"]["os"], "linux");
        assert_eq!(manifests[0]["mediaType"], MEDIA_MANIFEST);

        let manifest_data = blob(&entries, &manifests[0]["digest"]);
        assert_eq!(manifests[0]["size"], manifest_data.len());
        let manifest: Value = serde_json::from_slice(manifest_data).unwrap();
        let config_data = blob(&entries, &manifest["config"]["digest"]);
        assert_eq!(sha256(config_data), image_id());
        let config: Value = serde_json::from_slice(config_data).unwrap();
        assert_eq!(config["config"]["Entrypoint"], json!(["/pause"]));
        assert_eq!(config["os"], "linux");

        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["mediaType"], MEDIA_LAYER);
        let layer_data = blob(&entries, &layers[0]["digest"]);
        assert_eq!(config["rootfs"]["diff_ids"][0], layers[0]["digest"]);
        let layer = read_tar(layer_data);
        assert_eq!(layer.len(), 1);
        assert_eq!(layer[0].0, "pause");
        assert_eq!(layer[0].1, 0o755);
        assert_eq!(layer[0].2, b'0');
        assert_eq!(layer[0].3, PAUSE_BINARY);
    }

    #[test]
    fn octal_fields_are_padded_and_terminated() {
        let mut field = [0xffu8; 8];
        write_octal(&mut field, 0o755);
        assert_eq!(&field, b"0000755\0");
    }
}
