//! The cluster's PKI: a CA generated on first start and kept in the data dir, the serving
//! certificate, the admin client certificate and the admin kubeconfig.
//!
//! Layout under `DIR/pki/`: `ca.crt`, `ca.key`, `admin.crt`, `admin.key`, `server.crt`,
//! `server.key`, `sa.key` (the ECDSA P-256 key that signs service account tokens, PKCS#8)
//! and `tokens` (one `token,user,group` line per component). The CA and the
//! admin credentials are kept across restarts; the serving certificate is issued anew on
//! every start so that it names the current listen address.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::ServerError;

/// The group that upstream grants every permission to; the admin certificate carries it.
pub const MASTERS_GROUP: &str = "system:masters";

/// The CA and the files derived from it.
pub struct Pki {
    dir: PathBuf,
    ca_cert_pem: String,
    ca_key_pem: String,
}

/// A PEM certificate and key pair.
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

fn pki_err(what: &str, e: impl std::fmt::Display) -> ServerError {
    ServerError::Pki(format!("{what}: {e}"))
}

fn write_private(path: &Path, contents: &str) -> Result<(), ServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| pki_err(&format!("writing {}", tmp.display()), e))?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| pki_err("writing", e))?;
    std::fs::rename(&tmp, path).map_err(|e| pki_err(&format!("renaming to {}", path.display()), e))
}

impl Pki {
    /// Loads the CA from `data_dir/pki`, generating it on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, ServerError> {
        let dir = data_dir.join("pki");
        std::fs::create_dir_all(&dir).map_err(|e| pki_err("creating pki dir", e))?;
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        if cert_path.exists() && key_path.exists() {
            let ca_cert_pem =
                std::fs::read_to_string(&cert_path).map_err(|e| pki_err("reading ca.crt", e))?;
            let ca_key_pem =
                std::fs::read_to_string(&key_path).map_err(|e| pki_err("reading ca.key", e))?;
            return Ok(Self {
                dir,
                ca_cert_pem,
                ca_key_pem,
            });
        }
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_err("ca params", e))?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "nodeless-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(|e| pki_err("ca key", e))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| pki_err("ca cert", e))?;
        let (ca_cert_pem, ca_key_pem) = (cert.pem(), key.serialize_pem());
        write_private(&key_path, &ca_key_pem)?;
        write_private(&cert_path, &ca_cert_pem)?;
        tracing::info!(path = %cert_path.display(), "generated the cluster CA");
        Ok(Self {
            dir,
            ca_cert_pem,
            ca_key_pem,
        })
    }

    /// The CA certificate, PEM.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The CA key, PEM (for [`crate::cluster_ca`], which keeps it in the store).
    pub(crate) fn ca_key_pem(&self) -> &str {
        &self.ca_key_pem
    }

    /// Makes `data_dir/pki` hold the given CA and service account key (files rewritten only
    /// where they differ), and loads it.
    pub(crate) fn install(
        data_dir: &Path,
        ca_cert_pem: &str,
        ca_key_pem: &str,
        service_account_key_pem: &str,
    ) -> Result<Self, ServerError> {
        let dir = data_dir.join("pki");
        std::fs::create_dir_all(&dir).map_err(|e| pki_err("creating pki dir", e))?;
        for (file, contents) in [
            ("ca.key", ca_key_pem),
            ("ca.crt", ca_cert_pem),
            ("sa.key", service_account_key_pem),
        ] {
            let path = dir.join(file);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(contents) {
                write_private(&path, contents)?;
            }
        }
        Ok(Self {
            dir,
            ca_cert_pem: ca_cert_pem.to_owned(),
            ca_key_pem: ca_key_pem.to_owned(),
        })
    }

    fn issuer(&self) -> Result<(Certificate, KeyPair), ServerError> {
        let key = KeyPair::from_pem(&self.ca_key_pem).map_err(|e| pki_err("ca key", e))?;
        let params = CertificateParams::from_ca_cert_pem(&self.ca_cert_pem)
            .map_err(|e| pki_err("ca cert", e))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| pki_err("ca cert", e))?;
        Ok((cert, key))
    }

    fn issue(&self, params: CertificateParams) -> Result<CertPair, ServerError> {
        let (ca, ca_key) = self.issuer()?;
        let key = KeyPair::generate().map_err(|e| pki_err("key", e))?;
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .map_err(|e| pki_err("signing", e))?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues the serving certificate for the given extra addresses (and the usual names).
    pub fn issue_server_cert(
        &self,
        ips: &[IpAddr],
        names: &[String],
    ) -> Result<CertPair, ServerError> {
        let mut dns = vec![
            "localhost".to_string(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
        ];
        dns.extend(names.iter().cloned());
        let mut params = CertificateParams::new(dns).map_err(|e| pki_err("server params", e))?;
        let mut all_ips: Vec<IpAddr> = vec![
            "127.0.0.1".parse().map_err(|e| pki_err("ip", e))?,
            "::1".parse().map_err(|e| pki_err("ip", e))?,
        ];
        for ip in ips {
            if !ip.is_unspecified() && !all_ips.contains(ip) {
                all_ips.push(*ip);
            }
        }
        params
            .subject_alt_names
            .extend(all_ips.into_iter().map(SanType::IpAddress));
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "nodeless-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let pair = self.issue(params)?;
        write_private(&self.dir.join("server.crt"), &pair.cert_pem)?;
        write_private(&self.dir.join("server.key"), &pair.key_pem)?;
        Ok(pair)
    }

    /// Issues a client certificate with the user as common name and the groups as organizations.
    pub fn issue_client_cert(&self, user: &str, groups: &[&str]) -> Result<CertPair, ServerError> {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| pki_err("client params", e))?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, user);
        for g in groups {
            params.distinguished_name.push(DnType::OrganizationName, *g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        self.issue(params)
    }

    /// The admin client credentials, issued once and kept.
    pub fn admin_credentials(&self) -> Result<CertPair, ServerError> {
        let (cert_path, key_path) = (self.dir.join("admin.crt"), self.dir.join("admin.key"));
        if cert_path.exists() && key_path.exists() {
            return Ok(CertPair {
                cert_pem: std::fs::read_to_string(&cert_path)
                    .map_err(|e| pki_err("reading admin.crt", e))?,
                key_pem: std::fs::read_to_string(&key_path)
                    .map_err(|e| pki_err("reading admin.key", e))?,
            });
        }
        let pair = self.issue_client_cert("nodeless-admin", &[MASTERS_GROUP])?;
        write_private(&key_path, &pair.key_pem)?;
        write_private(&cert_path, &pair.cert_pem)?;
        Ok(pair)
    }

    /// The API server's client credentials for the agents' servers (upstream's
    /// `apiserver-kubelet-client`), issued once and kept as `kubelet-client.crt`/`.key`.
    pub fn kubelet_client_credentials(&self) -> Result<CertPair, ServerError> {
        let (cert_path, key_path) = (
            self.dir.join("kubelet-client.crt"),
            self.dir.join("kubelet-client.key"),
        );
        if cert_path.exists() && key_path.exists() {
            return Ok(CertPair {
                cert_pem: std::fs::read_to_string(&cert_path)
                    .map_err(|e| pki_err("reading kubelet-client.crt", e))?,
                key_pem: std::fs::read_to_string(&key_path)
                    .map_err(|e| pki_err("reading kubelet-client.key", e))?,
            });
        }
        let pair = self.issue_client_cert("kube-apiserver-kubelet-client", &[MASTERS_GROUP])?;
        write_private(&key_path, &pair.key_pem)?;
        write_private(&cert_path, &pair.cert_pem)?;
        Ok(pair)
    }

    /// Issues a serving certificate for an agent's server, naming the node and its addresses.
    pub fn issue_agent_cert(
        &self,
        node_name: &str,
        ips: &[IpAddr],
    ) -> Result<CertPair, ServerError> {
        let mut params = CertificateParams::new(vec![node_name.to_string()])
            .map_err(|e| pki_err("agent params", e))?;
        let loopback: IpAddr = "127.0.0.1".parse().map_err(|e| pki_err("ip", e))?;
        let mut all_ips = vec![loopback];
        for ip in ips {
            if !ip.is_unspecified() && !all_ips.contains(ip) {
                all_ips.push(*ip);
            }
        }
        params
            .subject_alt_names
            .extend(all_ips.into_iter().map(SanType::IpAddress));
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("system:node:{node_name}"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        self.issue(params)
    }

    /// The key that signs service account tokens (ECDSA P-256, PKCS#8 DER), generated once
    /// as `sa.key` (PEM) and kept across restarts so that issued tokens stay valid.
    pub fn service_account_key(&self) -> Result<Vec<u8>, ServerError> {
        let pem = self.service_account_key_pem()?;
        let key = KeyPair::from_pem(&pem).map_err(|e| pki_err("sa.key", e))?;
        Ok(key.serialize_der())
    }

    /// The service account signing key as `sa.key` holds it (PEM), generated on first use.
    pub(crate) fn service_account_key_pem(&self) -> Result<String, ServerError> {
        let path = self.dir.join("sa.key");
        if path.exists() {
            return std::fs::read_to_string(&path).map_err(|e| pki_err("reading sa.key", e));
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| pki_err("sa key", e))?;
        let pem = key.serialize_pem();
        write_private(&path, &pem)?;
        tracing::info!(path = %path.display(), "generated the service account signing key");
        Ok(pem)
    }

    /// Signs a certificate request with the CA (the CSR signer of `certificates.k8s.io`):
    /// the public key is the request's, everything else comes from `csr.params`, which
    /// the caller fills in from what it allows. Returns the certificate, PEM.
    pub fn sign_request(
        &self,
        csr: rcgen::CertificateSigningRequestParams,
    ) -> Result<String, ServerError> {
        let (ca, ca_key) = self.issuer()?;
        let cert = csr
            .signed_by(&ca, &ca_key)
            .map_err(|e| pki_err("signing a request", e))?;
        Ok(cert.pem())
    }

    /// The bearer tokens of the cluster's own components (`token,user,group` lines), created
    /// on first start.
    pub fn component_tokens(&self) -> Result<Vec<TokenEntry>, ServerError> {
        let path = self.dir.join("tokens");
        if !path.exists() {
            let token = random_token();
            write_private(
                &path,
                &format!("{token},system:nodeless-controllers,{MASTERS_GROUP}\n"),
            )?;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| pki_err("reading tokens", e))?;
        Ok(text
            .lines()
            .filter_map(|line| {
                let mut parts = line.trim().splitn(3, ',');
                let token = parts.next()?.to_string();
                let user = parts.next()?.to_string();
                let groups = parts
                    .next()
                    .map(|g| g.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                (!token.is_empty()).then_some(TokenEntry {
                    token,
                    user,
                    groups,
                })
            })
            .collect())
    }
}

/// What an agent's server needs for its TLS: its serving certificate and key, and the CA
/// its clients (the API server) are signed by.
pub struct AgentCredentials {
    /// The serving certificate, PEM.
    pub cert_pem: String,
    /// Its key, PEM.
    pub key_pem: String,
    /// The cluster CA, PEM.
    pub ca_pem: String,
}

/// Issues the serving certificate of an agent's server from the data dir's CA (SANs: the
/// node's name, its addresses and 127.0.0.1), for `nodeless up` to hand to its agent.
pub fn issue_agent_serving_cert(
    data_dir: &Path,
    node_name: &str,
    ips: &[IpAddr],
) -> Result<AgentCredentials, ServerError> {
    let pki = Pki::load_or_create(data_dir)?;
    let pair = pki.issue_agent_cert(node_name, ips)?;
    Ok(AgentCredentials {
        cert_pem: pair.cert_pem,
        key_pem: pair.key_pem,
        ca_pem: pki.ca_cert_pem,
    })
}

/// One bearer token and the identity it stands for.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    pub token: String,
    pub user: String,
    pub groups: Vec<String>,
}

fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Renders a kubeconfig for `server` with client-certificate credentials.
pub fn kubeconfig(server: &str, ca_pem: &str, client: &CertPair, context: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {context}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {context}-admin\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: {context}\n  context:\n    cluster: {context}\n    user: {context}-admin\ncurrent-context: {context}\npreferences: {{}}\n",
        ca = b64(ca_pem),
        cert = b64(&client.cert_pem),
        key = b64(&client.key_pem),
    )
}

/// Renders a kubeconfig for `server` with bearer-token credentials (for the cluster's own
/// components).
pub fn token_kubeconfig(server: &str, ca_pem: &str, token: &str, context: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {context}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {context}\n  user:\n    token: {token}\ncontexts:\n- name: {context}\n  context:\n    cluster: {context}\n    user: {context}\ncurrent-context: {context}\n"
    )
}

/// Writes a file readable by its owner only, atomically.
pub fn write_secret_file(path: &Path, contents: &str) -> Result<(), ServerError> {
    write_private(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_kept_across_loads_and_signs_certs() {
        let dir = tempfile::tempdir().unwrap();
        let a = Pki::load_or_create(dir.path()).unwrap();
        let b = Pki::load_or_create(dir.path()).unwrap();
        assert_eq!(a.ca_cert_pem(), b.ca_cert_pem());
        let server = b
            .issue_server_cert(&["10.1.2.3".parse().unwrap()], &[])
            .unwrap();
        assert!(server.cert_pem.contains("BEGIN CERTIFICATE"));
        let admin1 = a.admin_credentials().unwrap();
        let admin2 = b.admin_credentials().unwrap();
        assert_eq!(admin1.cert_pem, admin2.cert_pem);
        let kubelet_client = a.kubelet_client_credentials().unwrap();
        assert_eq!(
            kubelet_client.cert_pem,
            b.kubelet_client_credentials().unwrap().cert_pem
        );
        let agent =
            issue_agent_serving_cert(dir.path(), "n1", &["10.1.2.3".parse().unwrap()]).unwrap();
        assert_eq!(agent.ca_pem, a.ca_cert_pem());
        let der = rustls_pemfile::certs(&mut agent.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let sans = cert.subject_alternative_name().unwrap().unwrap().value;
        let names: Vec<String> = sans.general_names.iter().map(|n| n.to_string()).collect();
        assert!(names.iter().any(|n| n.contains("n1")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("0a:01:02:03")), "{names:?}");
        let sa_key = a.service_account_key().unwrap();
        assert_eq!(sa_key, b.service_account_key().unwrap());
        assert!(dir.path().join("pki/sa.key").exists());
        let tokens = a.component_tokens().unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].groups, vec![MASTERS_GROUP.to_string()]);
    }
}
