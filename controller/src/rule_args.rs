//! The webhook's rules as command-line flags (and environment variables): the plugin's config keys the admission
//! rules read, and the cluster's plugin type rules. `plexus-controller run` and `kubectl plexus validate` take the
//! same flags, so a CI check applies what the cluster's webhook applies.

use anyhow::Context as _;
use plexus_api::admission::Rules;
use plexus_api::policy::Policy;

#[derive(clap::Args, Debug, Clone)]
pub struct RuleArgs {
    /// The plugin's namespaceIsolation: pods may select NADs of their own namespace and the global ones only.
    #[arg(long, env = "PLEXUS_NAMESPACE_ISOLATION")]
    pub namespace_isolation: bool,

    /// The plugin's globalNamespaces (comma-separated).
    #[arg(
        long,
        env = "PLEXUS_GLOBAL_NAMESPACES",
        value_delimiter = ',',
        default_value = "default"
    )]
    pub global_namespaces: Vec<String>,

    /// The plugin's systemNamespaces (comma-separated): pods there do not get defaultNetworks.
    #[arg(
        long,
        env = "PLEXUS_SYSTEM_NAMESPACES",
        value_delimiter = ',',
        default_value = "kube-system"
    )]
    pub system_namespaces: Vec<String>,

    /// The plugin's multusNamespace: where clusterNetwork and defaultNetworks are looked up.
    #[arg(long, env = "PLEXUS_MULTUS_NAMESPACE", default_value = "kube-system")]
    pub multus_namespace: String,

    /// The plugin's clusterNetwork (a NAD or conf name, or a path); unset means a static default delegate.
    #[arg(long, env = "PLEXUS_CLUSTER_NETWORK")]
    pub cluster_network: Option<String>,

    /// The plugin's defaultNetworks (comma-separated): every pod gets them before its selections.
    #[arg(long, env = "PLEXUS_DEFAULT_NETWORKS", value_delimiter = ',')]
    pub default_networks: Vec<String>,

    /// The plugin's strictCapabilities: a capability key the network does not declare is refused instead of warned
    /// about.
    #[arg(long, env = "PLEXUS_STRICT_CAPABILITIES")]
    pub strict_capabilities: bool,

    /// The plugin's maxNetworksPerPod: the most attachments a pod may have, its default network included.
    #[arg(long, env = "PLEXUS_MAX_NETWORKS_PER_POD", default_value_t = plexus_api::policy::DEFAULT_MAX_NETWORKS_PER_POD)]
    pub max_networks_per_pod: usize,

    /// The plugin's allowedPluginTypes (comma-separated): the only plugin types a NAD may use. Unset: any.
    #[arg(long, env = "PLEXUS_ALLOWED_PLUGIN_TYPES", value_delimiter = ',')]
    pub allowed_plugin_types: Option<Vec<String>>,

    /// The plugin's allowPortMappings: `false` refuses every selection's portMappings (host ports). Either way,
    /// they are refused in namespaces whose Pod Security level is baseline or restricted.
    #[arg(long, env = "PLEXUS_ALLOW_PORT_MAPPINGS", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_port_mappings: bool,

    /// Which plugin types NADs in which namespaces may use: a JSON list of rules
    /// `{"types": [...], "namespaceSelector": {...}, "fields": {"master": [...]}}` (docs/security.md).
    #[arg(long, env = "PLEXUS_PLUGIN_TYPE_RULES", default_value = "")]
    pub plugin_type_rules: String,
}

impl RuleArgs {
    /// The plugin config keys the admission rules read, from the flags.
    pub fn policy(&self) -> Policy {
        Policy {
            namespace_isolation: self.namespace_isolation,
            global_namespaces: self.global_namespaces.clone(),
            system_namespaces: self.system_namespaces.clone(),
            multus_namespace: self.multus_namespace.clone(),
            cluster_network: self.cluster_network.clone(),
            default_networks: self.default_networks.clone(),
            // Without clusterNetwork the plugin's first static delegate is the default network.
            static_delegates: usize::from(self.cluster_network.is_none()),
            strict_capabilities: self.strict_capabilities,
            max_networks_per_pod: self.max_networks_per_pod,
            allowed_plugin_types: self.allowed_plugin_types.clone(),
            port_mappings_refused: (!self.allow_port_mappings)
                .then(|| "allowPortMappings is false on this cluster's nodes".to_owned()),
        }
    }

    /// Every rule the webhook applies: the plugin's keys and the plugin type rules.
    pub fn rules(&self) -> anyhow::Result<Rules> {
        Ok(Rules {
            policy: self.policy(),
            plugin_types: plexus_api::plugin_rules::PluginTypeRules::parse(&self.plugin_type_rules)
                .context("--plugin-type-rules")?,
        })
    }
}
