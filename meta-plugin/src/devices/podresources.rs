//! The kubelet's PodResources API v1 (`k8s.io/kubelet/pkg/apis/podresources/v1`), gRPC over its unix socket. Only
//! the messages and fields Plexus reads are declared; protobuf skips the others.

use std::path::Path;

use hyper_util::rt::TokioIo;
use plexus_api::devices::ClaimedDevice;
use tonic::transport::{Channel, Endpoint};

/// The largest answer read (a `List` on a busy node; Multus reads up to 16 MiB too).
const MAX_MESSAGE_BYTES: usize = 16 << 20;

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetPodResourcesRequest {
    #[prost(string, tag = "1")]
    pub pod_name: String,
    #[prost(string, tag = "2")]
    pub pod_namespace: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetPodResourcesResponse {
    #[prost(message, optional, tag = "1")]
    pub pod_resources: Option<PodResources>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodResourcesRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPodResourcesResponse {
    #[prost(message, repeated, tag = "1")]
    pub pod_resources: Vec<PodResources>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodResources {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(message, repeated, tag = "3")]
    pub containers: Vec<ContainerResources>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerResources {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, repeated, tag = "2")]
    pub devices: Vec<ContainerDevices>,
    #[prost(message, repeated, tag = "5")]
    pub dynamic_resources: Vec<DynamicResource>,
}

/// A ResourceClaim the container uses (DRA).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DynamicResource {
    #[prost(string, tag = "2")]
    pub claim_name: String,
    #[prost(string, tag = "3")]
    pub claim_namespace: String,
    #[prost(message, repeated, tag = "4")]
    pub claim_resources: Vec<ClaimResource>,
}

/// One device allocated to the claim.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClaimResource {
    #[prost(string, tag = "2")]
    pub driver_name: String,
    #[prost(string, tag = "3")]
    pub pool_name: String,
    #[prost(string, tag = "4")]
    pub device_name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerDevices {
    #[prost(string, tag = "1")]
    pub resource_name: String,
    #[prost(string, repeated, tag = "2")]
    pub device_ids: Vec<String>,
}

impl PodResources {
    /// The pod's DRA devices, per container and claim (each device once per container).
    pub fn claimed_devices(&self) -> Vec<ClaimedDevice> {
        let mut out: Vec<ClaimedDevice> = Vec::new();
        for c in &self.containers {
            for claim in &c.dynamic_resources {
                for r in &claim.claim_resources {
                    let device = ClaimedDevice {
                        container: c.name.clone(),
                        claim_namespace: claim.claim_namespace.clone(),
                        claim_name: claim.claim_name.clone(),
                        driver: r.driver_name.clone(),
                        pool: r.pool_name.clone(),
                        device: r.device_name.clone(),
                    };
                    if !out.contains(&device) {
                        out.push(device);
                    }
                }
            }
        }
        out
    }

    /// The pod's device-plugin devices, per container.
    pub fn devices(self) -> Vec<plexus_api::devices::ContainerDevices> {
        self.containers
            .into_iter()
            .flat_map(|c| {
                let container = c.name;
                c.devices
                    .into_iter()
                    .map(move |d| plexus_api::devices::ContainerDevices {
                        container: container.clone(),
                        resource_name: d.resource_name,
                        device_ids: d.device_ids,
                    })
            })
            .collect()
    }
}

/// Why a PodResources call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The socket could not be dialled: the kubelet is not there (or restarting).
    #[error("cannot connect to {socket}: {msg}")]
    Connect { socket: String, msg: String },
    /// The kubelet answered with an error status.
    #[error("{method}: {status}")]
    Status {
        method: &'static str,
        status: Box<tonic::Status>,
    },
}

/// A connection to the kubelet's PodResources socket.
pub struct Kubelet {
    channel: Channel,
}

impl Kubelet {
    /// Dials the socket (the URI below only fills the HTTP/2 `:authority`).
    pub async fn connect(socket: &Path) -> Result<Self, CallError> {
        let path = socket.to_owned();
        let channel = Endpoint::from_static("http://kubelet.pod-resources")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|e| CallError::Connect {
                socket: socket.display().to_string(),
                msg: source_chain(&e),
            })?;
        Ok(Self { channel })
    }

    /// `Get`: the one pod's resources.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<PodResources, CallError> {
        let reply: GetPodResourcesResponse = self
            .unary(
                "/v1.PodResourcesLister/Get",
                GetPodResourcesRequest {
                    pod_name: name.to_owned(),
                    pod_namespace: namespace.to_owned(),
                },
            )
            .await?;
        Ok(reply.pod_resources.unwrap_or_default())
    }

    /// `List`: every pod's resources; the pod's, when the kubelet knows it.
    pub async fn list_one(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PodResources>, CallError> {
        let reply: ListPodResourcesResponse = self
            .unary("/v1.PodResourcesLister/List", ListPodResourcesRequest {})
            .await?;
        Ok(reply
            .pod_resources
            .into_iter()
            .find(|p| p.namespace == namespace && p.name == name))
    }

    async fn unary<Req, Reply>(
        &self,
        method: &'static str,
        request: Req,
    ) -> Result<Reply, CallError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Reply: prost::Message + Default + Send + Sync + 'static,
    {
        let status = |status: tonic::Status| CallError::Status {
            method,
            status: Box::new(status),
        };
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        grpc.ready()
            .await
            .map_err(|e| status(tonic::Status::unavailable(e.to_string())))?;
        grpc.unary(
            tonic::Request::new(request),
            http::uri::PathAndQuery::from_static(method),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map(tonic::Response::into_inner)
        .map_err(status)
    }
}

/// An error and its causes, `: `-joined (a connection error's cause is the useful part).
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The field numbers are the kubelet's: an answer encoded with the kubelet's full message (here: with the
    /// fields Plexus skips, `cpu_ids` = 3 and `dynamic_resources` = 5, set) decodes to the devices.
    #[test]
    fn a_kubelet_answer_decodes_to_the_pods_devices() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct FullContainer {
            #[prost(string, tag = "1")]
            name: String,
            #[prost(message, repeated, tag = "2")]
            devices: Vec<ContainerDevices>,
            #[prost(int64, repeated, tag = "3")]
            cpu_ids: Vec<i64>,
            #[prost(message, repeated, tag = "5")]
            dynamic_resources: Vec<FullDynamic>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct FullCdiDevice {
            #[prost(string, tag = "1")]
            name: String,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct FullClaimResource {
            #[prost(message, repeated, tag = "1")]
            cdi_devices: Vec<FullCdiDevice>,
            #[prost(string, tag = "2")]
            driver_name: String,
            #[prost(string, tag = "3")]
            pool_name: String,
            #[prost(string, tag = "4")]
            device_name: String,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct FullDynamic {
            #[prost(string, tag = "2")]
            claim_name: String,
            #[prost(string, tag = "3")]
            claim_namespace: String,
            #[prost(message, repeated, tag = "4")]
            claim_resources: Vec<FullClaimResource>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct FullPod {
            #[prost(string, tag = "1")]
            name: String,
            #[prost(string, tag = "2")]
            namespace: String,
            #[prost(message, repeated, tag = "3")]
            containers: Vec<FullContainer>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct FullGet {
            #[prost(message, optional, tag = "1")]
            pod_resources: Option<FullPod>,
        }
        let wire = FullGet {
            pod_resources: Some(FullPod {
                name: "p".into(),
                namespace: "ns".into(),
                containers: vec![FullContainer {
                    name: "c".into(),
                    devices: vec![ContainerDevices {
                        resource_name: "plexus.test/nic".into(),
                        device_ids: vec!["0000:aa:00.1".into()],
                    }],
                    cpu_ids: vec![1, 2],
                    dynamic_resources: vec![FullDynamic {
                        claim_name: "nic-claim".into(),
                        claim_namespace: "ns".into(),
                        claim_resources: vec![FullClaimResource {
                            cdi_devices: vec![FullCdiDevice {
                                name: "nic.plexus.test/nic=nic0".into(),
                            }],
                            driver_name: "nic.plexus.test".into(),
                            pool_name: "node1".into(),
                            device_name: "nic0".into(),
                        }],
                    }],
                }],
            }),
        }
        .encode_to_vec();
        let got = GetPodResourcesResponse::decode(&wire[..]).unwrap();
        let pod = got.pod_resources.unwrap();
        assert_eq!(
            pod.claimed_devices(),
            [ClaimedDevice {
                container: "c".into(),
                claim_namespace: "ns".into(),
                claim_name: "nic-claim".into(),
                driver: "nic.plexus.test".into(),
                pool: "node1".into(),
                device: "nic0".into(),
            }]
        );
        let devices = pod.devices();
        assert_eq!(
            devices,
            [plexus_api::devices::ContainerDevices {
                container: "c".into(),
                resource_name: "plexus.test/nic".into(),
                device_ids: vec!["0000:aa:00.1".into()],
            }]
        );
    }
}
