//! Rule 4: the delegate config of a network, from a NAD's `spec.config` or from the node's conf directory, and the
//! limits on the plugin types a NAD may run.

use super::{PodView, Policy, PolicyError, ResolvedNetwork};
use crate::cni::config::NetworkConfigList;
use crate::nad::{OnDiskSearch, nad_config};

/// Rule 4 (R7 step 1, R9): the delegate config a NAD's `spec.config` holds. `Ok(None)` means the NAD has no config
/// and the network is the on-disk config named after it ([`delegate_from_disk`]). The config's author is whoever
/// may write NADs in that namespace: it is refused above [`MAX_NAD_CONFIG_BYTES`](crate::nad::MAX_NAD_CONFIG_BYTES),
/// when a plugin is a meta-plugin or not a bare name ([`NetworkConfigList::from_value`]), and when a plugin type is
/// not in `allowedPluginTypes` ([`check_plugin_types`]).
pub fn delegate_from_nad(
    policy: &Policy,
    pod: &PodView,
    namespace: &str,
    name: &str,
    spec_config: Option<&str>,
) -> Result<Option<ResolvedNetwork>, PolicyError> {
    let display = format!("{namespace}/{name}");
    let value = nad_config(name, spec_config).map_err(|source| PolicyError::NadConfig {
        pod: pod.label(),
        network: display.clone(),
        source,
    })?;
    let Some(value) = value else {
        return Ok(None);
    };
    let config =
        NetworkConfigList::from_value(value).map_err(|source| PolicyError::InvalidDelegate {
            network: display.clone(),
            source,
        })?;
    check_plugin_types(policy, &display, &config)?;
    Ok(Some(ResolvedNetwork {
        display,
        config,
        resource_name: None,
    }))
}

/// Every plugin type a config runs: each plugin's `type`, and its `ipam.type` when it has one.
pub fn plugin_types(config: &NetworkConfigList) -> impl Iterator<Item = &str> {
    config
        .plugins
        .iter()
        .flat_map(|p| std::iter::once(p.plugin_type()).chain(p.ipam_type()))
}

/// `allowedPluginTypes`: with a list set, every plugin type of a NAD's config must be in it.
pub fn check_plugin_types(
    policy: &Policy,
    network: &str,
    config: &NetworkConfigList,
) -> Result<(), PolicyError> {
    let Some(allowed) = &policy.allowed_plugin_types else {
        return Ok(());
    };
    match plugin_types(config).find(|t| !allowed.iter().any(|a| a == t)) {
        None => Ok(()),
        Some(plugin) => Err(PolicyError::PluginTypeNotAllowed {
            network: network.to_owned(),
            plugin: plugin.to_owned(),
            allowed: allowed.join(", "),
        }),
    }
}

/// Rule 4 (R7 steps 2–3, R8): the on-disk config found for a network that has no NAD config. `nad_exists` tells
/// whether a NAD (without config) exists: its `namespace/name` is then the display name, else the config's name.
pub fn delegate_from_disk(
    pod: &PodView,
    namespace: &str,
    name: &str,
    nad_exists: bool,
    search: OnDiskSearch,
    conf_dir: &str,
) -> Result<ResolvedNetwork, PolicyError> {
    let display = format!("{namespace}/{name}");
    match search.chosen {
        Some(found) => Ok(ResolvedNetwork {
            display: if nad_exists {
                display
            } else {
                found.config.name.clone()
            },
            config: found.config,
            resource_name: None,
        }),
        None => Err(PolicyError::NotOnDisk {
            pod: pod.label(),
            network: display,
            name: name.to_owned(),
            nad_exists,
            conf_dir: conf_dir.to_owned(),
        }),
    }
}
