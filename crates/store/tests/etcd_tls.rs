//! The etcd backend over TLS with client certificates (etcd's `--client-cert-auth`), with
//! certificates made by the `openssl` command.

#[path = "support/etcd_server.rs"]
mod etcd_server;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_server::EtcdServer;
use futures::StreamExt;
use nodeless_store::{EtcdOptions, EtcdStore, Store, StoreError, TlsFiles, WatchOptions};

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command is needed");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA and a certificate signed by it with these X.509v3 extensions, as `NAME.crt`/`NAME.key`.
fn ca_and_leaf(dir: &Path, ca: &str, leaves: &[(&str, &str)]) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let (ca_key, ca_crt) = (format!("{ca}.key"), format!("{ca}.crt"));
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca_crt,
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &args);
    for (name, extensions) in leaves {
        let (key, csr, crt, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&ext), extensions).unwrap();
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=test"]);
        openssl(dir, &args);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

async fn connect(options: EtcdOptions) -> Result<EtcdStore, StoreError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match EtcdStore::connect(options.clone()).await {
            Err(StoreError::Unavailable(reason)) if Instant::now() < deadline => {
                eprintln!("etcd not ready yet: {reason}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            result => return result,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    ca_and_leaf(
        dir,
        "ca",
        &[
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ],
    );
    ca_and_leaf(
        dir,
        "other-ca",
        &[("stranger", "extendedKeyUsage=clientAuth\n")],
    );
    let server = EtcdServer::start_with(
        None,
        Some([
            dir.join("server.crt"),
            dir.join("server.key"),
            dir.join("ca.crt"),
        ]),
    );
    let options = EtcdOptions {
        endpoints: vec![server.endpoint()],
        prefix: "/registry/".into(),
        tls: Some(TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("client.crt"),
            key: dir.join("client.key"),
        }),
        request_timeout: Duration::from_secs(2),
    };
    let store = connect(options.clone()).await.unwrap();
    let base = store.current_revision().await.unwrap();
    let mut watch = store
        .watch("/t/", base, WatchOptions::default())
        .await
        .unwrap();
    let created = store.create("/t/k", b"v".to_vec()).await.unwrap();
    assert_eq!(
        store.get("/t/k", None).await.unwrap(),
        Some(created.clone())
    );
    let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.revision(), created.mod_revision);

    // A client certificate from another CA is refused.
    let mut stranger = options.clone();
    stranger.tls = Some(TlsFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("stranger.crt"),
        key: dir.join("stranger.key"),
    });
    assert!(EtcdStore::connect(stranger).await.is_err());
    // A server certificate from an untrusted CA is refused.
    let mut distrustful = options.clone();
    distrustful.tls = Some(TlsFiles {
        ca: dir.join("other-ca.crt"),
        cert: dir.join("client.crt"),
        key: dir.join("client.key"),
    });
    assert!(EtcdStore::connect(distrustful).await.is_err());
    // Missing files are an invalid argument, not a connection problem.
    let mut missing = options;
    missing.tls = Some(TlsFiles {
        ca: dir.join("nope.crt"),
        cert: dir.join("client.crt"),
        key: dir.join("client.key"),
    });
    assert!(matches!(
        EtcdStore::connect(missing).await,
        Err(StoreError::InvalidArgument(_))
    ));
}
