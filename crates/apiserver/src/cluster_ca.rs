//! The cluster's CA and service account signing key, kept in the store so that every server
//! of one cluster (several `nodeless server`s on one etcd) has the same ones, and so that
//! `nodeless export`/`import` carry them (kubeconfigs and tokens stay valid after a
//! migration). This is k3s's "bootstrap data" in its datastore.
//!
//! The first server of a cluster writes its CA into the store (create-if-absent: of two
//! servers starting at once, one wins and the other adopts the winner's CA); later servers
//! with an empty data dir write the stored CA into `DIR/pki/`. A data dir whose CA differs
//! from the store's belongs to another cluster: the server refuses to start rather than
//! serve with credentials nobody else trusts.
//!
//! Whoever can read the store can read the CA key, as they can read every Secret: keep etcd
//! (and export files) as private as the CA itself.

use std::path::Path;

use nodeless_store::{Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::pki::Pki;
use crate::ServerError;

/// The store key of the cluster's CA.
pub const CLUSTER_CA_KEY: &str = "/registry/nodeless.io/cluster-ca";

/// What the store keeps: the CA (certificate and key) and the service account signing key,
/// all PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredCa {
    ca_cert: String,
    ca_key: String,
    service_account_key: String,
}

fn pki_err(what: &str, e: impl std::fmt::Display) -> ServerError {
    ServerError::Pki(format!("{what}: {e}"))
}

/// Loads the cluster's PKI for a server with `data_dir` on `store`: the CA in the store if
/// there is one (written into `data_dir/pki` when that holds none yet), else this data
/// dir's CA (generated on first start), which then goes into the store.
pub async fn load_shared(data_dir: &Path, store: &dyn Store) -> Result<Pki, ServerError> {
    let pki_dir = data_dir.join("pki");
    let had_local_ca = pki_dir.join("ca.crt").exists() && pki_dir.join("ca.key").exists();
    if let Some(stored) = read(store).await? {
        return adopt(data_dir, had_local_ca, &stored);
    }
    let pki = Pki::load_or_create(data_dir)?;
    let ours = StoredCa {
        ca_cert: pki.ca_cert_pem().to_owned(),
        ca_key: pki.ca_key_pem().to_owned(),
        service_account_key: pki.service_account_key_pem()?,
    };
    let value = serde_json::to_vec(&ours).map_err(|e| pki_err("encoding the cluster CA", e))?;
    match store.create(CLUSTER_CA_KEY, value).await {
        Ok(_) => {
            tracing::info!("kept the cluster CA in the store");
            Ok(pki)
        }
        // Another server of this cluster stored its CA first.
        Err(StoreError::AlreadyExists { .. }) => match read(store).await? {
            Some(stored) => adopt(data_dir, had_local_ca, &stored),
            None => Err(ServerError::Pki(
                "the cluster CA was stored and removed while this server started; start it again"
                    .into(),
            )),
        },
        Err(error) => Err(error.into()),
    }
}

async fn read(store: &dyn Store) -> Result<Option<StoredCa>, ServerError> {
    let Some(kv) = store.get(CLUSTER_CA_KEY, None).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&kv.value).map(Some).map_err(|e| {
        pki_err(
            &format!("the cluster CA in the store ({CLUSTER_CA_KEY})"),
            e,
        )
    })
}

/// Makes `data_dir/pki` hold the stored CA: written there if the data dir had none of its
/// own before this start, refused if it had a different one.
fn adopt(data_dir: &Path, had_local_ca: bool, stored: &StoredCa) -> Result<Pki, ServerError> {
    let pki_dir = data_dir.join("pki");
    if had_local_ca {
        let local = Pki::load_or_create(data_dir)?;
        if local.ca_cert_pem().trim() != stored.ca_cert.trim() {
            return Err(ServerError::Pki(format!(
                "the CA in {} is not the cluster's CA kept in the store: this data dir belongs \
                 to another cluster (use another --data-dir, or remove {} to join this store's \
                 cluster)",
                pki_dir.display(),
                pki_dir.display()
            )));
        }
    } else {
        // Credentials issued by a CA generated a moment ago, before the store was read.
        for file in ["admin.crt", "admin.key"] {
            let _ = std::fs::remove_file(pki_dir.join(file));
        }
    }
    Pki::install(
        data_dir,
        &stored.ca_cert,
        &stored.ca_key,
        &stored.service_account_key,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodeless_store::sqlite::SqliteStore;

    fn store(dir: &Path) -> SqliteStore {
        SqliteStore::open(dir.join("state.db")).unwrap()
    }

    #[tokio::test]
    async fn servers_on_one_store_share_the_ca_and_the_service_account_key() {
        let state = tempfile::tempdir().unwrap();
        let store = store(state.path());
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pki_a = load_shared(a.path(), &store).await.unwrap();
        let pki_b = load_shared(b.path(), &store).await.unwrap();
        assert_eq!(pki_a.ca_cert_pem(), pki_b.ca_cert_pem());
        assert_eq!(
            pki_a.service_account_key().unwrap(),
            pki_b.service_account_key().unwrap()
        );
        // B's files on disk are the cluster's: a restart of B keeps them.
        let again = load_shared(b.path(), &store).await.unwrap();
        assert_eq!(again.ca_cert_pem(), pki_a.ca_cert_pem());
        // A certificate B issues is signed by the shared CA.
        let admin_b = pki_b.admin_credentials().unwrap();
        assert!(!admin_b.cert_pem.is_empty());
    }

    #[tokio::test]
    async fn a_data_dir_of_another_cluster_is_refused() {
        let state = tempfile::tempdir().unwrap();
        let store = store(state.path());
        let (a, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        load_shared(a.path(), &store).await.unwrap();
        Pki::load_or_create(other.path()).unwrap();
        let error = load_shared(other.path(), &store)
            .await
            .err()
            .expect("a foreign CA is refused");
        let message = error.to_string();
        assert!(message.contains("belongs to another cluster"), "{message}");
        assert!(
            message.contains(&other.path().display().to_string()),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_corrupt_record_is_an_error_that_names_the_key() {
        let state = tempfile::tempdir().unwrap();
        let store = store(state.path());
        store
            .create(CLUSTER_CA_KEY, b"not json".to_vec())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let error = load_shared(dir.path(), &store).await.err().unwrap();
        assert!(error.to_string().contains(CLUSTER_CA_KEY), "{error}");
    }
}
