//! `nodeless`: a serverless Kubernetes cluster in one binary.
//!
//! `nodeless up` runs the whole cluster in one process; `nodeless server` runs the API
//! server (and, as they land, the controllers) only; `nodeless export` and `nodeless import`
//! move the cluster's state between stores.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use nodeless_apiserver::admission::Admission;
use nodeless_apiserver::{ApiServer, ServerConfig};
use store_args::StoreArgs;

mod agent_cmd;
mod allocator;
mod cluster_network;
mod csr_signer;
mod migration;
mod store_args;
mod token_cmd;
mod usage;

#[derive(Parser)]
#[command(
    name = "nodeless",
    version,
    about = "A serverless Kubernetes cluster in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole cluster (API server, controllers, agent) in one process.
    Up(UpArgs),
    /// Run the API server and controllers only; agents join from elsewhere.
    Server(ServerArgs),
    /// Write the cluster's state (every object, at one revision) as JSON lines.
    Export(migration::ExportArgs),
    /// Load an export into an empty store.
    Import(migration::ImportArgs),
    /// Show metered usage (vCPU-seconds, GiB-seconds, cost) per pod, workload or namespace.
    Usage(usage::UsageArgs),
    /// Join a cluster as an agent (one Node) with a bootstrap token.
    Agent(Box<agent_cmd::AgentCmdArgs>),
    /// Manage bootstrap tokens for agents.
    Token {
        #[command(subcommand)]
        command: token_cmd::TokenCommand,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RuntimeKind {
    /// Real containers through a supervised containerd.
    Containerd,
    /// Pods without containers, for scale tests.
    Simulated,
}

#[derive(clap::Args, Clone)]
struct ServerArgs {
    /// Where the cluster keeps its state, PKI and kubeconfig.
    #[arg(long, default_value = "/var/lib/nodeless", env = "NODELESS_DATA_DIR")]
    data_dir: PathBuf,
    /// The address the API server listens on (HTTPS).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// The store that keeps the cluster state.
    #[command(flatten)]
    store: StoreArgs,
    /// Relax one serverless rule for this cluster (repeatable), e.g. `no-probes`.
    #[arg(long = "relax-rule")]
    relax_rules: Vec<String>,
    /// A file listing serverless rules to relax (names separated by newlines or commas).
    #[arg(long)]
    serverless_policy: Option<PathBuf>,
    /// A file replacing the pod size table (see README).
    #[arg(long)]
    size_table: Option<PathBuf>,
    /// Seconds between compactions of the store's history (0: never).
    #[arg(long, default_value_t = 300)]
    compaction_interval_seconds: u64,
    /// The IPv4 range Service cluster IPs are allocated from (its first address is the
    /// `kubernetes` Service's).
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: nodeless_apiserver::services::ServiceCidr,
    /// How long a node may go without renewing its Lease before it is marked NotReady
    /// (Unknown) and tainted unreachable, and its pods are evicted (e.g. `40s`, `5s`).
    #[arg(long, default_value = "40s", value_parser = parse_grace_period)]
    node_monitor_grace_period: std::time::Duration,
    /// How long a new pod tolerates a node whose Ready condition is False before it is evicted
    /// (the toleration that upstream's DefaultTolerationSeconds adds).
    #[arg(long, default_value_t = 300)]
    default_not_ready_toleration_seconds: u32,
    /// How long a new pod tolerates a node that is unheard of (Ready Unknown) before it is
    /// evicted and replaced elsewhere.
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: u32,
    /// The price of one vCPU for one hour, for metering's cost (default: AWS Fargate, Linux/x86,
    /// us-east-1).
    #[arg(long, default_value_t = nodeless_metering::report::DEFAULT_PRICE_VCPU_HOUR)]
    price_vcpu_hour: f64,
    /// The price of one GiB of memory for one hour (default: AWS Fargate, Linux/x86, us-east-1).
    #[arg(long, default_value_t = nodeless_metering::report::DEFAULT_PRICE_GIB_HOUR)]
    price_gib_hour: f64,
    /// The currency of the prices.
    #[arg(long, default_value = "USD")]
    price_currency: String,
}

/// A duration as upstream's flags write it: `40s`, `2m`, `1m30s`, `500ms` (or bare seconds).
fn parse_grace_period(text: &str) -> Result<std::time::Duration, String> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(seconds));
    }
    let span: k8s_openapi::jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 40s: {e}"))?;
    std::time::Duration::try_from(span).map_err(|_| format!("{text:?} is negative"))
}

#[derive(clap::Args)]
struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    agent: AgentArgs,
}

/// The flags of an agent, shared by `nodeless up` (its built-in agent) and `nodeless agent`.
#[derive(clap::Args, Clone)]
struct AgentArgs {
    /// The container runtime of the agent.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Containerd)]
    runtime: RuntimeKind,
    /// A registry mirror, `REGISTRY=URL` (repeatable), e.g. `docker.io=http://127.0.0.1:5000`.
    #[arg(long = "registry-mirror")]
    registry_mirrors: Vec<String>,
    /// A CA bundle for a registry's or mirror's TLS, `HOST=FILE` (repeatable), e.g.
    /// `127.0.0.1:5443=/etc/ssl/registry-ca.pem`.
    #[arg(long = "registry-ca")]
    registry_cas: Vec<String>,
    /// The node's pod CIDR: pod IPs come from it (containerd: through the CNI bridge).
    #[arg(long, default_value = "10.244.0.0/24")]
    pod_cidr: nodeless_agent::PodCidr,
    /// The Linux bridge of the pod network (at most 15 characters).
    #[arg(long, default_value = "nodeless0")]
    bridge_name: String,
    /// The address the Node advertises as its InternalIP: the API server reaches the agent's
    /// server there, and the other agents route this node's pod CIDR via it (this machine's
    /// address on the network the agents share; loopback: a single-machine cluster).
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: std::net::IpAddr,
    /// Where the CNI plugins are.
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_bin_dir: PathBuf,
    /// How many times this machine's cores and memory the node offers to the scheduler
    /// (containerd runtime). Pods are held to their limits by cgroups, not given reserved
    /// cores, so a serverless node overcommits as the providers' pools do.
    #[arg(long, default_value_t = 8)]
    capacity_factor: u64,
    /// The addresses LoadBalancer Services get (`FIRST-LAST` or a CIDR; containerd runtime).
    #[arg(long, default_value = nodeless_proxy::DEFAULT_LOAD_BALANCER_RANGE)]
    load_balancer_range: String,
    /// The resolvers the cluster DNS forwards names outside the cluster domain to, `IP:PORT`
    /// (repeatable; containerd runtime). Default: the nameservers of /etc/resolv.conf.
    #[arg(long = "dns-upstream")]
    dns_upstreams: Vec<std::net::SocketAddr>,
    /// How many pod sandboxes are kept warm for pods to come, so that a pod start skips
    /// creating one (containerd runtime; 0: none).
    #[arg(long, default_value_t = 2)]
    sandbox_pool: usize,
}

/// The built-in agent: its configuration and, for real pods, the containerd it supervises.
struct AgentSetup {
    /// For real pods: the LoadBalancer range of the service network to start.
    load_balancer_range: Option<String>,
    /// For real pods: the cluster DNS's upstream resolvers (empty: the host's).
    dns_upstreams: Vec<std::net::SocketAddr>,
    config: nodeless_agent::AgentConfig,
    runtime: Option<Arc<dyn nodeless_agent::Runtime>>,
    containerd: Option<nodeless_containerd::supervisor::Containerd>,
}

impl AgentSetup {
    /// Prepares the agent of `nodeless up`: for containerd, checks the packages, starts
    /// containerd and connects to it.
    /// `data_dir` holds the agent's state (`agent/`) and containerd's (`containerd/`);
    /// `service_cidr` gives the cluster DNS address pods resolve with.
    async fn prepare(
        args: &AgentArgs,
        data_dir: &std::path::Path,
        service_cidr: &nodeless_apiserver::services::ServiceCidr,
    ) -> anyhow::Result<Self> {
        let state_dir = data_dir.join("agent");
        match args.runtime {
            RuntimeKind::Simulated => {
                if !args.registry_mirrors.is_empty() || !args.registry_cas.is_empty() {
                    tracing::warn!(
                        "--registry-mirror and --registry-ca only apply to the containerd runtime; ignored"
                    );
                }
                let mut config = nodeless_agent::AgentConfig::simulated();
                config.state_dir = state_dir;
                Ok(Self {
                    load_balancer_range: None,
                    dns_upstreams: Vec::new(),
                    config,
                    runtime: None,
                    containerd: None,
                })
            }
            RuntimeKind::Containerd => {
                use nodeless_containerd::supervisor::{ContainerdOptions, RegistryMirror};
                let mut options = ContainerdOptions::new(data_dir.join("containerd"));
                options.cni_bin_dir = args.cni_bin_dir.clone();
                options.network.bridge = args.bridge_name.clone();
                options.network.subnet = args.pod_cidr.to_string();
                for mirror in &args.registry_mirrors {
                    options.registry_mirrors.push(
                        RegistryMirror::parse(mirror)
                            .with_context(|| format!("--registry-mirror {mirror}"))?,
                    );
                }
                for ca in &args.registry_cas {
                    options.registry_cas.push(
                        nodeless_containerd::supervisor::RegistryCa::parse(ca)
                            .with_context(|| format!("--registry-ca {ca}"))?,
                    );
                }
                nodeless_containerd::supervisor::preflight(&options)?;
                let containerd = nodeless_containerd::supervisor::Containerd::start(options)
                    .await
                    .context("starting containerd")?;
                let channel = containerd.channel().await?;
                let mut runtime_options =
                    nodeless_containerd::runtime::RuntimeOptions::new(&state_dir);
                runtime_options.cluster_dns = Some(nodeless_containerd::runtime::ClusterDns {
                    server: std::net::IpAddr::V4(cluster_network::dns_address(service_cidr)),
                    domain: "cluster.local".to_string(),
                });
                runtime_options.sandbox_pool = args.sandbox_pool;
                let runtime = nodeless_containerd::ContainerdRuntime::new(channel, runtime_options)
                    .await
                    .context("connecting to containerd's CRI")?;
                if args.capacity_factor == 0 {
                    anyhow::bail!("--capacity-factor must be at least 1");
                }
                let mut config = nodeless_agent::AgentConfig::default();
                config.cpu_millis *= args.capacity_factor;
                config.memory_bytes *= args.capacity_factor;
                config.max_pods = config.max_pods.min(args.pod_cidr.pod_addresses());
                config.pod_cidr = args.pod_cidr;
                config.state_dir = state_dir;
                Ok(Self {
                    load_balancer_range: Some(args.load_balancer_range.clone()),
                    dns_upstreams: args.dns_upstreams.clone(),
                    config,
                    runtime: Some(Arc::new(runtime)),
                    containerd: Some(containerd),
                })
            }
        }
    }

    /// Stops the pods' sandboxes and containerd (SIGTERM of `nodeless up`).
    async fn shut_down(self) {
        if let Some(runtime) = &self.runtime {
            runtime.drain_pool().await;
            match runtime.list_sandboxes().await {
                Ok(sandboxes) => {
                    let stops = sandboxes.iter().map(|(sandbox, _)| async move {
                        let grace = std::time::Duration::from_secs(5);
                        if let Err(error) = runtime.stop_sandbox(sandbox, grace).await {
                            tracing::warn!(%error, sandbox = %sandbox.id, "stopping a sandbox");
                        }
                        if let Err(error) = runtime.remove_sandbox(sandbox).await {
                            tracing::warn!(%error, sandbox = %sandbox.id, "removing a sandbox");
                        }
                    });
                    futures::future::join_all(stops).await;
                }
                Err(error) => tracing::warn!(%error, "listing sandboxes to stop them"),
            }
        }
        if let Some(containerd) = self.containerd {
            if let Err(error) = containerd.stop().await {
                tracing::warn!(%error, "stopping containerd");
            }
        }
    }
}

fn serverless_admission(
    args: &ServerArgs,
) -> anyhow::Result<nodeless_admission::ServerlessAdmission> {
    let mut policy = match &args.serverless_policy {
        Some(path) => nodeless_serverless::Policy::from_file(path)
            .with_context(|| format!("reading {}", path.display()))?,
        None => nodeless_serverless::Policy::default(),
    };
    for rule in &args.relax_rules {
        policy
            .relax(rule)
            .with_context(|| format!("--relax-rule {rule}"))?;
    }
    let table = match &args.size_table {
        Some(path) => nodeless_serverless::SizeTable::from_file(path)
            .with_context(|| format!("reading {}", path.display()))?,
        None => nodeless_serverless::SizeTable::default(),
    };
    Ok(nodeless_admission::ServerlessAdmission::new(policy, table))
}

async fn run_server(args: &ServerArgs, agent: Option<AgentSetup>) -> anyhow::Result<()> {
    // Tells `nodeless export`/`import` that this data dir is in use.
    let _pid_file = match store_args::PidFile::create(&args.data_dir) {
        Ok(pid_file) => Some(pid_file),
        Err(error) => {
            tracing::warn!(%error, "cannot write the pid file");
            None
        }
    };
    let store = store_args::open_store(&args.data_dir, &args.store).await?;
    let usage_ledger = nodeless_metering::Ledger::new(store.clone());
    let prices = nodeless_metering::Prices {
        currency: args.price_currency.clone(),
        vcpu_hour: args.price_vcpu_hour,
        gib_hour: args.price_gib_hour,
    };
    let config = ServerConfig {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        store,
        admission: Admission::new()
            .with(Arc::new(nodeless_admission::DefaultTolerationSeconds {
                not_ready: args.default_not_ready_toleration_seconds,
                unreachable: args.default_unreachable_toleration_seconds,
            }))
            .with(Arc::new(nodeless_admission::LimitRanger::new()))
            .with(Arc::new(nodeless_admission::ServiceAccountAdmission::new()))
            .with(Arc::new(serverless_admission(args)?))
            .with(Arc::new(nodeless_admission::ResourceQuotaAdmission::new())),
        compaction_interval: std::time::Duration::from_secs(args.compaction_interval_seconds),
        service_cidr: args.service_cidr,
        extensions: vec![Arc::new(nodeless_metering::MeteringApi::new(
            usage_ledger.clone(),
            prices,
        ))],
    };
    let server = ApiServer::bind(config)
        .await
        .context("starting the API server")?;
    tracing::info!(
        addr = %server.local_addr(),
        kubeconfig = %server.kubeconfig_path.display(),
        "nodeless is ready"
    );
    // The CA that every namespace's kube-root-ca.crt publishes.
    let pki = nodeless_apiserver::pki::Pki::load_or_create(&args.data_dir)?;
    nodeless_controllers::root_ca_publisher::set_root_ca(pki.ca_cert_pem());
    let client = component_client(&server.component_kubeconfig).await?;
    if agent.is_none() {
        // In a task: the server serves only once `serve` below runs.
        tokio::spawn(token_cmd::announce_join_command(
            client.clone(),
            server.local_addr(),
            args.data_dir.clone(),
        ));
    }
    let network = match agent.as_ref().and_then(|a| a.load_balancer_range.clone()) {
        Some(range) => Some(
            cluster_network::start(
                client.clone(),
                &args.service_cidr,
                &range,
                agent.as_ref().map(|a| a.dns_upstreams.clone()),
            )
            .context("starting the service network")?,
        ),
        None => None,
    };
    // The built-in agent's sandboxes stop with this process: metering closes their records.
    let built_in_node = agent.as_ref().map(|a| a.config.node_name.clone());
    let (agent, agent_setup) = match agent {
        Some(setup) => {
            let mut config = setup.config.clone();
            // The agent server needs the same runtime instance as the agent (for `logs -f`).
            let runtime: Arc<dyn nodeless_agent::Runtime> = match setup.runtime.clone() {
                Some(runtime) => runtime,
                None => Arc::new(nodeless_agent::SimulatedRuntime::new(
                    config.simulated.clone(),
                    Arc::new(nodeless_agent::PodIpAllocator::new(config.pod_cidr)),
                )),
            };
            let creds = nodeless_apiserver::pki::issue_agent_serving_cert(
                &args.data_dir,
                &config.node_name,
                &[config.node_ip],
            )?;
            let tls = nodeless_agent::server::ServerTls::from_pem(
                &creds.cert_pem,
                &creds.key_pem,
                &creds.ca_pem,
            )?;
            nodeless_agent::server::spawn(&mut config, tls, runtime.clone(), client.clone())
                .await?;
            if setup.runtime.is_some() {
                // Real pods: routes to the other agents' pod CIDRs (ends with the process).
                let _pod_routes = cluster_network::start_pod_routes(client.clone(), &config)?;
            }
            let task = tokio::spawn(nodeless_agent::run_with_runtime(
                client.clone(),
                config,
                runtime,
            ));
            (Some(task), Some(setup))
        }
        None => (None, None),
    };
    // The loops that run once per cluster, next to the controllers under their Lease (as
    // upstream's csrsigning, tokencleaner… in kube-controller-manager): the CSR signer, the
    // token cleaner and the meter.
    let cluster_loops = {
        let (client, ledger) = (client.clone(), usage_ledger.clone());
        let pki = Arc::new(nodeless_apiserver::pki::Pki::load_or_create(
            &args.data_dir,
        )?);
        move || {
            let meter = nodeless_metering::run(
                client.clone(),
                ledger.clone(),
                nodeless_metering::MeterOptions::default(),
                std::future::pending::<()>(),
            );
            let signer = csr_signer::run(client.clone(), pki.clone());
            let cleaner = token_cmd::clean_expired_tokens(client.clone());
            async move {
                tokio::join!(meter, signer, cleaner);
            }
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controllers = tokio::spawn(nodeless_controllers::run_all(
        client,
        nodeless_controllers::node_lifecycle::NodeLifecycleConfig::with_grace_period(
            args.node_monitor_grace_period,
        ),
        cluster_loops,
        async {
            let _ = stop_rx.await;
        },
    ));
    // The controllers stop first, while the API server still serves, so that they release
    // their Lease through it and another server takes over at once. Then the built-in
    // agent's sandboxes stop with this process: metering closes their records.
    let stop_controllers_then_serve = async move {
        shutdown_signal().await;
        let _ = stop_tx.send(());
        let _ = controllers.await;
        if let Some(node) = built_in_node {
            let now = time::OffsetDateTime::now_utc();
            if let Err(error) =
                nodeless_metering::close_node_records(usage_ledger, &node, now).await
            {
                tracing::warn!(%error, "closing the built-in node's usage records");
            }
        }
    };
    server
        .serve(stop_controllers_then_serve)
        .await
        .context("serving")?;
    if let Some(agent) = agent {
        agent.abort();
    }
    drop(network);
    if let Some(setup) = agent_setup {
        setup.shut_down().await;
    }
    Ok(())
}

/// A client of our own API server with the components' credentials.
async fn component_client(kubeconfig: &str) -> anyhow::Result<kube::Client> {
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(kubeconfig).context("component kubeconfig")?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("component client config")?;
    // No blind retries of 503/504 (kube-rs retries every verb): a 504 may hide a write the
    // store applied, and a retried POST of a generateName pod would make a second pod. As
    // client-go (which retries only on Retry-After), the controllers requeue from observed
    // state instead.
    config.default_retry = false;
    kube::Client::try_from(config).context("component client")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
}

fn main() -> anyhow::Result<()> {
    allocator::limit_arenas();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Up(args) => {
                let mut agent = AgentSetup::prepare(
                    &args.agent,
                    &args.server.data_dir,
                    &args.server.service_cidr,
                )
                .await?;
                agent.config.node_ip = args.agent.node_ip;
                run_server(&args.server, Some(agent)).await
            }
            Command::Server(args) => run_server(&args, None).await,
            Command::Export(args) => migration::export(&args).await,
            Command::Import(args) => migration::import(&args).await,
            Command::Usage(args) => usage::usage(&args).await,
            Command::Agent(args) => agent_cmd::run(&args).await,
            Command::Token { command } => token_cmd::run(&command).await,
        }
    })
}
