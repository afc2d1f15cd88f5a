//! `kubectl plexus`: a kubectl plugin (any `kubectl-plexus` on the PATH) for Plexus.
//!
//! * [`validate`] — the admission webhook's rules on local files, offline (CI).
//! * [`why`] — why a pod has, or lacks, each network it asked for.
//! * [`status`] — the NADs' validity and use, and per node what the API server knows ([`node_lease`]: the nodes'
//!   status Leases, judged).
//!
//! Exit codes: 0 nothing wrong, 1 something is wrong (refused, not attached, invalid), 2 the command could not run.

#![forbid(unsafe_code)]

pub mod manifests;
pub mod node_lease;
pub mod status;
pub mod validate;
pub mod why;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use plexus_controller::rule_args::RuleArgs;

#[derive(Parser, Debug)]
#[command(
    name = "kubectl plexus",
    bin_name = "kubectl plexus",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("PLEXUS_COMMIT"), ")"),
    about = "Plexus for cluster admins: why a pod lacks a network, the NADs' state, the webhook's rules on files"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Per requested network of a pod: attached or not, and the reason and the fix.
    Why(WhyArgs),
    /// Per NetworkAttachmentDefinition: valid, pods attached; per node: what the API server knows.
    Status(StatusArgs),
    /// The admission webhook's rules on local YAML/JSON files, without a cluster (the webhook's messages).
    Validate(Box<ValidateArgs>),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,
}

#[derive(Args, Debug)]
pub struct WhyArgs {
    /// The pod's name.
    pub pod: String,
    /// The pod's namespace (default: the context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Only this namespace's NADs and pods (default: all).
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Files to check (`-`: standard input); each may hold several YAML documents or a List.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// The namespace of objects that name none.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Output,
    /// The webhook's rules: the same flags (and environment variables) as `plexus-controller run`.
    #[command(flatten)]
    pub rules: RuleArgs,
}

/// Runs the command; the exit code says whether something is wrong.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `Ok(true)`: nothing is wrong.
fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Validate(args) => {
            let rules = args.rules.rules()?;
            let mut manifests = Vec::new();
            for file in &args.files {
                manifests.extend(manifests::read(file)?);
            }
            let checked = validate::validate(&manifests, &args.namespace, &rules);
            match args.output {
                Output::Json => print_json(&checked)?,
                Output::Text => print!("{}", validate::render(&checked)),
            }
            Ok(checked
                .iter()
                .all(|c| c.outcome != validate::Outcome::Denied))
        }
        Command::Why(args) => runtime()?.block_on(async {
            let (client, default_namespace) = client(&args.cluster).await?;
            let namespace = args.namespace.unwrap_or(default_namespace);
            let facts = why::gather(&client, &namespace, &args.pod).await?;
            let report = why::diagnose(&facts);
            match args.output {
                Output::Json => print_json(&report)?,
                Output::Text => print!("{}", why::render(&report)),
            }
            Ok(report.ok)
        }),
        Command::Status(args) => runtime()?.block_on(async {
            let (client, _) = client(&args.cluster).await?;
            let status = status::status(&client, args.namespace.as_deref()).await?;
            match args.output {
                Output::Json => print_json(&status)?,
                Output::Text => print!("{}", status::render(&status)),
            }
            Ok(status.ok)
        }),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

/// The API client and the context's namespace.
async fn client(args: &ClusterArgs) -> anyhow::Result<(kube::Client, String)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = kube::config::KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| format!("use kubeconfig {}", path.display()))?
        }
        None if args.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .context("use the kubeconfig")?,
        None => kube::Config::infer().await.context("find the API server")?,
    };
    let namespace = config.default_namespace.clone();
    Ok((
        kube::Client::try_from(config).context("build the API client")?,
        namespace,
    ))
}
