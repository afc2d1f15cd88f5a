//! The pod's service account, as the plugin's kubeconfig needs it (thin mode).

use std::fs;
use std::path::Path;

use serde_json::json;

use super::{InstallError, io};

/// The pod's service account as the kubeconfig needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub server: String,
    pub ca_pem: Vec<u8>,
    pub token: String,
}

impl ServiceAccount {
    /// Reads the token and CA from `dir` and the API server's address from KUBERNETES_SERVICE_HOST/PORT.
    pub fn read(dir: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Self, InstallError> {
        let host = env("KUBERNETES_SERVICE_HOST")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                InstallError::ServiceAccount("KUBERNETES_SERVICE_HOST is not set".into())
            })?;
        let port = env("KUBERNETES_SERVICE_PORT")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "443".into());
        if port.parse::<u16>().is_err() {
            return Err(InstallError::ServiceAccount(format!(
                "KUBERNETES_SERVICE_PORT={port:?} is not a port number"
            )));
        }
        let server = if host.contains(':') {
            format!("https://[{host}]:{port}")
        } else {
            format!("https://{host}:{port}")
        };
        let token_path = dir.join("token");
        let token = fs::read_to_string(&token_path)
            .map_err(io("read", &token_path))?
            .trim()
            .to_owned();
        if token.is_empty() {
            return Err(InstallError::ServiceAccount(format!(
                "{} is empty",
                token_path.display()
            )));
        }
        let ca_path = dir.join("ca.crt");
        let ca_pem = fs::read(&ca_path).map_err(io("read", &ca_path))?;
        Ok(Self {
            server,
            ca_pem,
            token,
        })
    }

    /// The plugin's kubeconfig (JSON, which is YAML too): the server, the CA inline, the token inline.
    pub fn kubeconfig(&self) -> Vec<u8> {
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {"server": self.server, "certificate-authority-data": ca}}],
            "users": [{"name": "plexus", "user": {"token": self.token}}],
            "contexts": [{"name": "plexus", "context": {"cluster": "local", "user": "plexus"}}],
            "current-context": "plexus",
        });
        let mut text = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        text.push(b'\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_names_the_server_the_ca_and_the_token() {
        let account = ServiceAccount::read(Path::new("/nonexistent"), |_| None);
        assert!(matches!(account, Err(InstallError::ServiceAccount(_))));
        let account = ServiceAccount {
            server: "https://[fd00::1]:6443".into(),
            ca_pem: b"PEM".to_vec(),
            token: "abc".into(),
        };
        let doc: serde_json::Value = serde_json::from_slice(&account.kubeconfig()).unwrap();
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "https://[fd00::1]:6443"
        );
        assert_eq!(
            doc["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
        assert_eq!(doc["users"][0]["user"]["token"], "abc");
    }
}
