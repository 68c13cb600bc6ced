//! `nodeless agent`: an agent on another machine joins a cluster with a bootstrap token.
//!
//! As upstream's kubelet TLS bootstrap: with the token (user `system:bootstrap:<id>`) the
//! agent asks for a client certificate `CN=system:node:<name>, O=system:nodes` through a
//! CertificateSigningRequest of signer `kubernetes.io/kube-apiserver-client-kubelet`, which
//! the server auto-approves and signs; it keeps that certificate (DATA_DIR/pki/) and uses it
//! from then on, so the token may expire. With that identity it asks for its serving
//! certificate (signer `kubernetes.io/kubelet-serving`, SANs: the node name and IP) on every
//! start, so the API server's node proxy (logs, exec, port-forward) trusts it through the
//! cluster CA. The agent never holds the CA key. It trusts the API server through the CA
//! certificate given with `--ca-cert` (DATA_DIR/pki/ca.crt of the server).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};
use nodeless_apiserver::certificates::{self, CLIENT_KUBELET_SIGNER, KUBELET_SERVING_SIGNER};
use nodeless_apiserver::pki::{self, CertPair};

/// `nodeless agent`.
#[derive(clap::Args)]
pub struct AgentCmdArgs {
    /// The API server, e.g. `https://10.0.0.1:6443`.
    #[arg(long)]
    server: String,
    /// A bootstrap token (`nodeless token create`), used only until the agent has its
    /// client certificate.
    #[arg(long, env = "NODELESS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The cluster CA certificate (the server's DATA_DIR/pki/ca.crt), trusted for the API
    /// server and the clients of the agent's own server.
    #[arg(long)]
    ca_cert: PathBuf,
    /// The name of this agent's Node (unique in the cluster). Default: the host name.
    #[arg(long)]
    node_name: Option<String>,
    /// The port of the agent's server (logs, exec, port-forward); 0: any free port.
    #[arg(long, default_value_t = 0)]
    kubelet_port: u16,
    /// Where the agent keeps its credentials, pod state and containerd.
    #[arg(
        long,
        default_value = "/var/lib/nodeless-agent",
        env = "NODELESS_AGENT_DATA_DIR"
    )]
    data_dir: PathBuf,
    /// The cluster's Service range (as the server's `--service-cidr`): pods resolve names
    /// through the DNS address in it.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: nodeless_apiserver::services::ServiceCidr,
    #[command(flatten)]
    agent: crate::AgentArgs,
}

/// Joins the cluster and runs the agent until SIGTERM or Ctrl-C.
pub async fn run(args: &AgentCmdArgs) -> anyhow::Result<()> {
    let ca_pem = std::fs::read_to_string(&args.ca_cert)
        .with_context(|| format!("reading --ca-cert {}", args.ca_cert.display()))?;
    let node_name = args
        .node_name
        .clone()
        .unwrap_or_else(nodeless_agent::config::host_name);
    let pki_dir = args.data_dir.join("pki");
    std::fs::create_dir_all(&pki_dir).with_context(|| format!("creating {}", pki_dir.display()))?;
    let identity = client_identity(args, &ca_pem, &node_name, &pki_dir).await?;
    let client = crate::component_client(&pki::kubeconfig(
        &args.server,
        &ca_pem,
        &identity,
        "nodeless-agent",
    ))
    .await?;
    let sans = vec![node_name.clone(), args.agent.node_ip.to_string()];
    let serving = request_certificate(&client, &node_name, KUBELET_SERVING_SIGNER, &sans)
        .await
        .context("getting the agent's serving certificate")?;
    tracing::info!(node = %node_name, "joined the cluster");

    crate::cluster_network::check_service_cidr(&client, &args.service_cidr).await?;
    let mut setup =
        crate::AgentSetup::prepare(&args.agent, &args.data_dir, &args.service_cidr).await?;
    let config = &mut setup.config;
    config.node_name = node_name;
    config.node_ip = args.agent.node_ip;
    config.kubelet_port = args.kubelet_port;
    if args.agent.runtime == crate::RuntimeKind::Simulated {
        // `nodeless up` keeps the simulated node's wide default range; a joining agent takes
        // its own so that two agents' pod IPs differ.
        config.pod_cidr = args.agent.pod_cidr;
        config.max_pods = config.max_pods.min(args.agent.pod_cidr.pod_addresses());
    }
    let mut config = config.clone();
    let runtime: Arc<dyn nodeless_agent::Runtime> = match setup.runtime.clone() {
        Some(runtime) => runtime,
        None => Arc::new(nodeless_agent::SimulatedRuntime::new(
            config.simulated.clone(),
            Arc::new(nodeless_agent::PodIpAllocator::new(config.pod_cidr)),
        )),
    };
    let tls =
        nodeless_agent::server::ServerTls::from_pem(&serving.cert_pem, &serving.key_pem, &ca_pem)?;
    let server =
        nodeless_agent::server::spawn(&mut config, tls, runtime.clone(), client.clone()).await?;
    // Real pods: the same service network as `nodeless up` (the service CIDR routed here,
    // the service proxy, the cluster DNS), and routes to the other agents' pod CIDRs.
    let network = match setup.load_balancer_range.as_deref() {
        Some(range) => Some((
            crate::cluster_network::start(
                client.clone(),
                &args.service_cidr,
                range,
                Some(setup.dns_upstreams.clone()),
            )
            .context("starting the service network")?,
            crate::cluster_network::start_pod_routes(client.clone(), &config)?,
        )),
        None => None,
    };
    let agent = tokio::spawn(nodeless_agent::run_with_runtime(client, config, runtime));
    let result = tokio::select! {
        _ = crate::shutdown_signal() => Ok(()),
        ended = agent => match ended {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(anyhow::Error::new(error).context("the agent stopped")),
            Err(error) => Err(anyhow::Error::new(error).context("the agent task")),
        },
    };
    server.abort();
    if let Some((service_network, routes)) = network {
        routes.abort();
        drop(service_network);
    }
    setup.shut_down().await;
    result
}

/// The agent's client certificate: the one kept in `pki_dir`, or a new one obtained with the
/// bootstrap token.
async fn client_identity(
    args: &AgentCmdArgs,
    ca_pem: &str,
    node_name: &str,
    pki_dir: &Path,
) -> anyhow::Result<CertPair> {
    let (cert_path, key_path) = (pki_dir.join("client.crt"), pki_dir.join("client.key"));
    if let (Ok(cert_pem), Ok(key_pem)) = (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) {
        tracing::info!(path = %cert_path.display(), "using the kept client certificate");
        return Ok(CertPair { cert_pem, key_pem });
    }
    let token = args.token.as_deref().context(
        "--token is needed to join: this agent has no client certificate yet \
         (make a token on the server with `nodeless token create`)",
    )?;
    if nodeless_apiserver::bootstrap_token::BootstrapToken::parse(token).is_none() {
        anyhow::bail!("--token is not a bootstrap token (`[a-z0-9]{{6}}.[a-z0-9]{{16}}`)");
    }
    let bootstrap = crate::component_client(&pki::token_kubeconfig(
        &args.server,
        ca_pem,
        token,
        "nodeless-bootstrap",
    ))
    .await?;
    let pair = request_certificate(&bootstrap, node_name, CLIENT_KUBELET_SIGNER, &[])
        .await
        .context("getting the agent's client certificate with the bootstrap token")?;
    pki::write_secret_file(&key_path, &pair.key_pem)?;
    pki::write_secret_file(&cert_path, &pair.cert_pem)?;
    Ok(pair)
}

/// Creates a CSR for a new key and waits (up to a minute) until it is signed.
async fn request_certificate(
    client: &kube::Client,
    node_name: &str,
    signer: &str,
    sans: &[String],
) -> anyhow::Result<CertPair> {
    let (request_pem, key_pem) = certificates::node_certificate_request(node_name, sans)?;
    let usages = if signer == KUBELET_SERVING_SIGNER {
        ["digital signature", "server auth"]
    } else {
        ["digital signature", "client auth"]
    };
    let csr: CertificateSigningRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": format!("node-csr-{node_name}-")},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request_pem),
            "signerName": signer,
            "usages": usages,
        },
    }))?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .map_err(explain_refusal)?;
    let name = created.metadata.name.unwrap_or_default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let csr = api.get(&name).await.map_err(explain_refusal)?;
        let obj = serde_json::to_value(&csr)?;
        if certificates::decision(&obj) == certificates::Decision::Denied {
            anyhow::bail!("the certificate signing request {name} was denied");
        }
        if let Some(failed) = csr
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Failed"))
        {
            anyhow::bail!(
                "the certificate signing request {name} failed: {}",
                failed.message.as_deref().unwrap_or_default()
            );
        }
        if let Some(cert) = csr.status.and_then(|s| s.certificate) {
            let cert_pem = String::from_utf8(cert.0).context("the signed certificate")?;
            return Ok(CertPair { cert_pem, key_pem });
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "the certificate signing request {name} was not signed within a minute \
                 (approve it with `kubectl certificate approve {name}`)"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A 401 from the API server means the credentials are no good: say which.
fn explain_refusal(error: kube::Error) -> anyhow::Error {
    match &error {
        kube::Error::Api(status) if status.code == 401 => anyhow::anyhow!(
            "the API server refused the agent's credentials (401 Unauthorized): the bootstrap \
             token is invalid, expired or deleted, or the kept client certificate is not the \
             cluster's"
        ),
        _ => anyhow::Error::new(error),
    }
}
