# Real nodes for the e2e control plane (sourced by e2e/cluster; uses its say/die/start_daemon/stop_daemon/pid_of,
# STATE, PKI, KUBECONFIG_PATH and APISERVER_PORT).
#
# `e2e/cluster up --node` / `up --nodes N` adds kube-scheduler, kube-controller-manager and N nodes. A node is:
#   - a holder process in a new mount + network namespace (`unshare`); everything of the node runs inside it
#     through nsenter: containerd (CRI, runc), kubelet, kube-proxy (iptables mode), and socats that forward
#     127.0.0.1:6443 and $APISERVER_ENDPOINT_IP:<apiserver port> to the apiserver (which stays on the host's
#     127.0.0.1) through a unix socket in the state dir;
#   - per-node directories bind-mounted over /run, /var/lib and /var/log inside the namespace (the paths kubelet,
#     containerd and the CNI plugins hard-code), so nodes never share /run/netns, /var/lib/kubelet, host-local leases;
#   - its own cgroup root (/plexus-<id>-node<k> in every v1 hierarchy; kubelet with the cgroupfs driver);
#   - eth0 on a management bridge (host side pxm<id>, 198.18.<16c>.0/24: the host .1, node k .1<k>), with routes to
#     the other nodes' pod subnets (node k: 198.18.<16c+k>.0/24);
#   - lan0 on a shared L2 segment (host bridge pxl<id>, no address): a macvlan master or a bridge port for secondary
#     networks that span nodes;
#   - a CNI config: plexus (the checkout's build) in Kubernetes mode, its clusterNetwork a bridge + host-local conflist;
#     or, in a bare cluster (PLEXUS_E2E_BARE=1 at the first `up`), only that conflist, for the Helm chart to install
#     Plexus onto (see bare() below).
#   - thick mode beside it: a plexus-daemon in the node's namespaces (NODE_NAME, its own kubeconfig and RBAC, socket
#     /run/plexus/plexus.sock of the node's /run), and a second containerd runtime handler, plexus-thick (runc too),
#     whose CNI conf dir holds the shim config (`daemonSocketDir`). Pods with `runtimeClassName: plexus-thick` (the
#     RuntimeClass of that name) are networked through the daemon, every other pod by plexus itself (containerd v2
#     picks the CNI config by the sandbox's runtime handler, for ADD and DEL).
# The `kubernetes` Service: the apiserver advertises APISERVER_ENDPOINT_IP (e2e/cluster: --advertise-address, the
# default lease endpoint reconciler), an address no host interface has; every node holds it on its lo and runs a
# socat on it at the apiserver's port, so kube-proxy's DNAT of 10.0.0.1:443 from a pod lands on that socat.
# <id> comes from the state dir's path and c (1..15) is the first /20 of 198.18.0.0/16 no host address uses, so two
# clusters (two state dirs) can run nodes side by side.
#
# `down` removes every sandbox through the CRI before stopping containerd (so CNI DEL runs), deletes the Node
# objects, kills what is left in each node's namespaces, removes the cgroups, links and directories.

NODES_DIR=$STATE/nodes
NODE_LAN_IF=lan0
PAUSE_IMAGE=localhost/plexus-e2e/pause:$KUBERNETES_VERSION
# The tag changes with the image's contents (the applet list below): the cached archive is named after it.
WORKLOAD_IMAGE=localhost/plexus-e2e/busybox:2
NODE_APISERVER_PORT=6443
# What the apiserver advertises as the `kubernetes` Service's endpoint (e2e/cluster --advertise-address). It exists
# only inside the nodes' network namespaces (on lo), outside every node slot's /20 and outside 198.19.0.0/16.
APISERVER_ENDPOINT_IP=198.18.0.1
# Pods of this RuntimeClass (= containerd runtime handler) go through the shim to the node's plexus-daemon.
THICK_RUNTIME_CLASS=plexus-thick
# The harness daemons' secureMetricsAddress port, on each node's own address (e2e/tests/monitoring.rs scrapes it).
NODE_SECURE_METRICS_PORT=9466
NODE_TIMEOUT=${PLEXUS_E2E_NODE_TIMEOUT:-120}
# Only pods that tolerate this run on the harness nodes (the runtime-playing tests' pods stay Pending as before).
NODE_TAINT=plexus.e2e/real-node=true:NoSchedule

# A bare cluster: nodes with only the cluster network's conflist in their CNI conf dir, no plexus-node user, no
# harness plexus-controller (e2e/cluster), and a Plexus image (plexus, plexus-daemon, plexus-controller, built from the
# checkout by scripts/build-image-binaries)
# in each node's containerd, with a values file for `helm install plexus charts/plexus -f <file>` (PLEXUS_NODE_VALUES).
# Chosen at the first `up` (PLEXUS_E2E_BARE=1) and remembered in the state dir.
PLEXUS_IMAGE=localhost/plexus-e2e/plexus:e2e
NODE_VALUES=$STATE/node-values.yaml
bare() { [ -f "$STATE/bare" ]; }

# Fake NICs, their device plugin and DRA driver (`up --devices K`).
# shellcheck source=devices.sh
. "$E2E_DIR/lib/devices.sh"

node_id() { printf '%s' "$STATE" | cksum | awk '{ printf "%04x", $1 % 65536 }'; }
node_name() { echo "plexus-node-$1"; }
node_dir() { echo "$NODES_DIR/node$1"; }
node_count() { ls -d "$NODES_DIR"/node* 2>/dev/null | wc -l; }
node_indexes() { local d; for d in "$NODES_DIR"/node*; do [ -d "$d" ] && echo "${d##*/node}"; done | sort -n; }
node_slot() { cat "$NODES_DIR/slot"; }
node_ip() { echo "198.18.$((16 * $(node_slot))).1$1"; }
node_pod_subnet() { echo "198.18.$((16 * $(node_slot) + $1)).0/24"; }
node_cgroup() { echo "plexus-$(node_id)-node$1"; }
# nsenter into node k's namespaces (mount + network), running a command there.
node_exec() { local k=$1; shift; nsenter -t "$(pid_of "node$k-holder")" -m -n -- "$@"; }

node_tool_bins() {
  K8S_NODE_BIN=$(tool_bin kubernetes-node)
  CONTAINERD_BIN=$(tool_bin containerd)
  CRICTL_BIN=$(tool_bin crictl)
  CNI_BIN=$(tool_bin cni-plugins)
  "$E2E_DIR/tools/install" node-packages
  RUNC=$(command -v runc)
  BUSYBOX=$(command -v busybox)
}

# plexus and oci-image from this checkout, built if needed (cargo is quick when nothing changed).
node_rust_bins() {
  (cd "$PLEXUS_REPO" && nice cargo build --quiet --locked -p plexus-cni --bin plexus --bin plexus-shim -p plexus-daemon \
    --bin plexus-daemon -p plexus-e2e --bin oci-image >&2) || die "cargo build of plexus, plexus-shim, plexus-daemon and oci-image failed"
  node_rust_bin_paths
}

# Where node_rust_bins puts them (without building: `node-restart` runs while a test binary holds cargo's lock).
node_rust_bin_paths() {
  local target=${CARGO_TARGET_DIR:-$PLEXUS_REPO/target}
  case $target in /*) ;; *) target=$PLEXUS_REPO/$target ;; esac
  PLEXUS_BIN=${PLEXUS_NODE_PLEXUS_BIN:-$target/debug/plexus}
  # Thick mode's plugin, built beside plexus (scripts/build-plexus-static and cargo alike).
  PLEXUS_SHIM_BIN=$(dirname "$PLEXUS_BIN")/plexus-shim
  PLEXUS_DAEMON_BIN=${PLEXUS_NODE_DAEMON_BIN:-$target/debug/plexus-daemon}
  OCI_IMAGE_BIN=$target/debug/oci-image
}

# The pause and workload images, as OCI archives in the tool cache (rebuilt only when missing).
node_images() {
  local dir=$PLEXUS_CACHE_DIR/node-images-$KUBERNETES_VERSION
  mkdir -p "$dir"
  if [ ! -f "$dir/pause.tar" ]; then
    "$OCI_IMAGE_BIN" "$dir/pause.tar" "$PAUSE_IMAGE" /pause "pause=$K8S_NODE_BIN/pause" >/dev/null ||
      die "could not write the pause image"
  fi
  local workload=workload-${WORKLOAD_IMAGE##*:}.tar
  if [ ! -f "$dir/$workload" ]; then
    local applet entries=("bin/busybox=$BUSYBOX" tmp/ proc/ sys/ dev/ etc/ root/)
    for applet in sh ash ip ping sleep cat echo ls grep sed awk hostname ifconfig route true false wc head tail \
      mkdir rm kill ps nc wget ssl_client date env id mount httpd timeout tr; do
      entries+=("bin/$applet->busybox")
    done
    "$OCI_IMAGE_BIN" "$dir/$workload.new" "$WORKLOAD_IMAGE" /bin/sh "${entries[@]}" >/dev/null ||
      die "could not write the workload image"
    mv "$dir/$workload.new" "$dir/$workload"
  fi
  WORKLOAD_TAR=$dir/$workload
  IMAGES_DIR=$dir
  if bare; then plexus_image; fi
}

# The image the chart runs (bare clusters): the four binaries of scripts/build-image-binaries, the recipe the
# Dockerfile runs (PLEXUS_IMAGE_BIN_DIR: built already, as scripts/test does; else built here), with the shared
# libraries plexus-daemon and plexus-controller link (this machine's Debian 12 glibc: what the Dockerfile's base
# image provides; plexus is static), rebuilt at each `up` into the state dir.
plexus_image() {
  local dir bin lib entries=(tmp/ run/ etc/)
  dir=${PLEXUS_IMAGE_BIN_DIR:-}
  if [ -z "$dir" ]; then
    dir=$("$PLEXUS_REPO/scripts/build-image-binaries") || die "scripts/build-image-binaries failed"
  fi
  for bin in plexus plexus-shim plexus-daemon plexus-controller; do
    [ -x "$dir/$bin" ] || die "no $dir/$bin (scripts/build-image-binaries makes it)"
    entries+=("usr/local/bin/$bin=$dir/$bin")
  done
  for lib in $(ldd "$dir/plexus-daemon" "$dir/plexus-controller" | awk '$1 ~ /^\// && $1 !~ /:$/ { print $1 } $3 ~ /^\// { print $3 }' | sort -u); do
    entries+=("${lib#/}=$(readlink -f "$lib")")
  done
  "$OCI_IMAGE_BIN" "$STATE/plexus-image.tar" "$PLEXUS_IMAGE" /usr/local/bin/plexus "${entries[@]}" >/dev/null ||
    die "could not write the plexus image"
}

# ---- certificates and kubeconfigs -----------------------------------------------------------------------------------
# node_kubeconfig <file> <cert name> <server>: a kubeconfig (0600) with the client certificate <cert name>.
node_kubeconfig() {
  (
    umask 077
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: plexus-e2e
  cluster:
    server: $3
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$2.crt")
    client-key-data: $(base64 -w0 <"$PKI/$2.key")
contexts:
- name: plexus-e2e
  context: {cluster: plexus-e2e, user: $2}
current-context: plexus-e2e
EOF
  )
}

client_cert() {
  [ -f "$PKI/$1.crt" ] && return 0
  (umask 077 && sign "$1" "$2" "$(printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=clientAuth")")
  chmod 0600 "$PKI/$1.key"
}

kctl() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# user_role <user> <rules (YAML flow list items)>: a client certificate CN=<user> and a ClusterRole of that name with
# exactly these rules, bound to the user.
user_role() {
  client_cert "$1" "/CN=$1"
  kctl apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: $1}
rules:
$2
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: $1}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: $1}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: $1}]
EOF
}

# Plexus on the nodes runs as its own user with only the rules docs/configuration.md lists; so does the node daemon
# of thick mode (the rules docs/configuration.md lists for the daemon's identity). Thick pods use the RuntimeClass.
plexus_rbac() {
  user_role plexus-node '- {apiGroups: [""], resources: [pods], verbs: [get, patch]}
- {apiGroups: [k8s.cni.cncf.io], resources: [network-attachment-definitions], verbs: [get]}
- {apiGroups: [""], resources: [events], verbs: [create]}
- {apiGroups: [resource.k8s.io], resources: [resourceslices], verbs: [list]}
- {apiGroups: [resource.k8s.io], resources: [resourceclaims/status], verbs: [patch]}'
  user_role plexus-daemon '- {apiGroups: [""], resources: [pods], verbs: [get, list, watch, patch]}
- {apiGroups: [k8s.cni.cncf.io], resources: [network-attachment-definitions], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [events], verbs: [create]}
- {apiGroups: [resource.k8s.io], resources: [resourceslices], verbs: [list, watch]}
- {apiGroups: [resource.k8s.io], resources: [resourceclaims/status], verbs: [patch]}
- {apiGroups: [authentication.k8s.io], resources: [tokenreviews], verbs: [create]}
- {apiGroups: [authorization.k8s.io], resources: [subjectaccessreviews], verbs: [create]}'
  kctl apply -f - >/dev/null <<EOF
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: $THICK_RUNTIME_CLASS}
handler: $THICK_RUNTIME_CLASS
EOF
}

# kube-proxy's user: the built-in ClusterRoleBinding system:node-proxier binds exactly the ClusterRole
# system:node-proxier to the user system:kube-proxy, nothing more.
kube_proxy_cert() { client_cert kube-proxy "/CN=system:kube-proxy"; }

# ---- control-plane components for nodes ----------------------------------------------------------------------------
start_node_control_plane() {
  if ! alive apiserver-forward; then
    rm -f "$STATE/apiserver.sock"
    start_daemon apiserver-forward "$STATE/apiserver-forward.log" socat \
      "UNIX-LISTEN:$STATE/apiserver.sock,fork,mode=600" "TCP:127.0.0.1:$APISERVER_PORT"
  fi
  if ! alive kube-scheduler; then
    say "starting kube-scheduler"
    start_daemon kube-scheduler "$STATE/kube-scheduler.log" "$K8S_NODE_BIN/kube-scheduler" \
      --kubeconfig="$KUBECONFIG_PATH" --authentication-kubeconfig="$KUBECONFIG_PATH" \
      --authorization-kubeconfig="$KUBECONFIG_PATH" --leader-elect=false \
      --bind-address=127.0.0.1 --secure-port="$(free_port "$APISERVER_PORT")" --cert-dir="$STATE/scheduler-certs"
  fi
  if ! alive kube-controller-manager; then
    say "starting kube-controller-manager"
    # serviceaccount-token needs a service-account key this control plane does not give it.
    start_daemon kube-controller-manager "$STATE/kube-controller-manager.log" \
      "$K8S_NODE_BIN/kube-controller-manager" \
      --kubeconfig="$KUBECONFIG_PATH" --authentication-kubeconfig="$KUBECONFIG_PATH" \
      --authorization-kubeconfig="$KUBECONFIG_PATH" --leader-elect=false --use-service-account-credentials=false \
      --controllers='*,-serviceaccount-token' --root-ca-file="$PKI/ca.crt" \
      --bind-address=127.0.0.1 --secure-port="$(free_port "$APISERVER_PORT")" --cert-dir="$STATE/controller-manager-certs"
  fi
  bare || plexus_rbac
  kube_proxy_cert
}

# ---- the management bridge and the shared segment ---------------------------------------------------------------------
pick_slot() {
  [ -f "$NODES_DIR/slot" ] && return 0
  local c
  for c in $(seq 1 15); do
    if ! ip -4 -o addr show | grep -q " 198\.18\.$((16 * c))\."; then
      echo "$c" >"$NODES_DIR/slot"
      return 0
    fi
  done
  die "every 198.18.x.0/20 slot for a management bridge is in use"
}

ensure_bridges() {
  local id; id=$(node_id)
  if ! ip link show "pxm$id" >/dev/null 2>&1; then
    ip link add "pxm$id" type bridge
    ip addr add "198.18.$((16 * $(node_slot))).1/24" dev "pxm$id"
    ip link set "pxm$id" up
  fi
  if ! ip link show "pxl$id" >/dev/null 2>&1; then
    ip link add "pxl$id" type bridge
    ip link set "pxl$id" up
  fi
}

# ---- one node -----------------------------------------------------------------------------------------------------------
write_node_configs() {
  local k=$1 n; n=$(node_dir "$k")
  local name; name=$(node_name "$k")
  mkdir -p "$n"/{run,var-lib,var-log,containerd-root,cni-bin,cni-conf,cni-conf-thick,cluster-network,kubelet-certs}
  chmod 0700 "$n"
  client_cert "kubelet-node$k" "/O=system:nodes/CN=system:node:$name"
  node_kubeconfig "$n/kubelet.kubeconfig" "kubelet-node$k" "https://127.0.0.1:$NODE_APISERVER_PORT"
  node_kubeconfig "$n/plexus.kubeconfig" plexus-node "https://127.0.0.1:$NODE_APISERVER_PORT"
  node_kubeconfig "$n/kube-proxy.kubeconfig" kube-proxy "https://127.0.0.1:$NODE_APISERVER_PORT"
  # Bare: no harness daemon (the chart runs its own), so no certificate for it either.
  bare || node_kubeconfig "$n/plexus-daemon.kubeconfig" plexus-daemon "https://127.0.0.1:$NODE_APISERVER_PORT"
  local p cluster_network=$n/cluster-network
  # Bare: the conf dir holds only the cluster network; the chart's installer copies plexus and writes its conf; the
  # plugins are copies (thick mode's daemon runs them in its container, where links into the tool cache would dangle).
  if bare; then
    cluster_network=$n/cni-conf
    cp -f "$CNI_BIN"/* "$n/cni-bin/"
  else
    for p in "$CNI_BIN"/*; do ln -sfn "$p" "$n/cni-bin/${p##*/}"; done
    ln -sfn "$PLEXUS_BIN" "$n/cni-bin/plexus"
    [ -x "$PLEXUS_SHIM_BIN" ] || die "no $PLEXUS_SHIM_BIN (thick mode's plugin, built beside $PLEXUS_BIN)"
    ln -sfn "$PLEXUS_SHIM_BIN" "$n/cni-bin/plexus-shim"
  fi
  cat >"$cluster_network/10-pods.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "pods", "plugins": [
  {"type": "bridge", "bridge": "pods0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$(node_pod_subnet "$k")"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}}
]}
EOF
  bare || cat >"$n/cni-conf/00-plexus.conf" <<EOF
{"cniVersion": "1.1.0", "name": "plexus", "type": "plexus",
 "kubeconfig": "$n/plexus.kubeconfig",
 "clusterNetwork": "$n/cluster-network/10-pods.conflist",
 "binDir": "$n/cni-bin", "cniDir": "/var/lib/cni/plexus", "confDir": "$n/plexus-net.d",
 "logFile": "$n/plexus.log", "logToStderr": false}
EOF
  # Thick mode: the daemon's file holds the plugin keys (the same as thin mode's) plus its own; the shim config only
  # says where the daemon is.
  cat >"$n/plexus-daemon.json" <<EOF
{"kubeconfig": "$n/plexus-daemon.kubeconfig",
 "clusterNetwork": "$n/cluster-network/10-pods.conflist",
 "binDir": "$n/cni-bin", "cniDir": "/var/lib/cni/plexus", "confDir": "$n/plexus-net.d",
 "logFile": "$n/plexus-daemon.log", "logToStderr": false,
 "daemonSocketDir": "/run/plexus", "metricsAddress": "127.0.0.1:9464",
 "secureMetricsAddress": "$(node_ip "$k"):$NODE_SECURE_METRICS_PORT", "runtimeConfDir": "$n/cni-conf-thick"}
EOF
  cat >"$n/cni-conf-thick/00-plexus.conf" <<EOF
{"cniVersion": "1.1.0", "name": "plexus", "type": "plexus-shim", "daemonSocketDir": "/run/plexus"}
EOF
  cat >"$n/containerd.toml" <<EOF
version = 3
root = "$n/containerd-root"
state = "/run/containerd"
# The opt plugin would create /opt/containerd on the host.
disabled_plugins = ['io.containerd.internal.v1.opt']
[grpc]
  address = "$n/containerd.sock"
[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # The machine's capability bounding set lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = '$RUNC'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.$THICK_RUNTIME_CLASS]
      runtime_type = 'io.containerd.runc.v2'
      cni_conf_dir = '$n/cni-conf-thick'
      cni_max_conf_num = 1
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.$THICK_RUNTIME_CLASS.options]
        SystemdCgroup = false
        BinaryName = '$RUNC'
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['$n/cni-bin']
    conf_dir = '$n/cni-conf'
    max_conf_num = 1
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '$PAUSE_IMAGE'
[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
[plugins.'io.containerd.nri.v1.nri']
  disable = true
EOF
  printf 'nameserver 127.0.0.1\n' >"$n/resolv.conf"
  cat >"$n/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$n/containerd.sock
address: $(node_ip "$k")
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: /$(node_cgroup "$k")
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
resolvConf: $n/resolv.conf
evictionHard: {memory.available: 1Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
shutdownGracePeriod: 0s
nodeStatusReportFrequency: 10s
EOF
  # conntrack values 0 = leave the kernel's alone (nf_conntrack_max is global, not the node's); oomScoreAdj 0 for the
  # same missing CAP_SYS_RESOURCE as the kubelet; healthz and metrics on the node's own 127.0.0.1; NodePorts only on
  # the node's own IP.
  cat >"$n/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $n/kube-proxy.kubeconfig}
hostnameOverride: $name
mode: iptables
clusterCIDR: 198.18.$((16 * $(node_slot))).0/20
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
oomScoreAdj: 0
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s, udpTimeout: 0s, udpStreamTimeout: 0s}
iptables: {localhostNodePorts: false}
nodePortAddresses: [primary]
EOF
}

# Each v1 hierarchy gets the node's cgroup root; cpuset needs cpus and mems before anything can join it.
make_node_cgroups() {
  local cg; cg=$(node_cgroup "$1")
  local h
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h" ] || continue
    mkdir -p "$h$cg"
  done
  if [ -d /sys/fs/cgroup/cpuset ]; then
    cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$cg/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$cg/cpuset.mems"
  fi
}

remove_node_cgroups() {
  local cg; cg=$(node_cgroup "$1")
  local h d pid
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h$cg" ] || continue
    # Leftover processes of the node's pods (a kill failed above): they are ours, end them.
    while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done < <(find "$h$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)
    while read -r d; do rmdir "$d" 2>/dev/null || true; done < <(find "$h$cg" -depth -type d)
  done
}

start_holder() {
  local k=$1 n; n=$(node_dir "$k")
  # exec -a names the process after the node dir, so pid_of recognises it (its command line names the state dir).
  start_daemon "node$k-holder" "$n/holder.log" unshare --mount --net --propagation private -- \
    bash -c 'exec -a "plexus-node-holder $0" sleep infinity' "$n"
  local deadline=$((SECONDS + 60)) pid
  pid=$(cat "$STATE/node$k-holder.pid")
  # unshare execs bash which execs sleep: wait until the namespace is the new one (a fresh netns can be slow).
  until [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" != "$(readlink /proc/self/ns/net)" ] &&
    [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" == plexus-node-holder* ]]; do
    [ -e "/proc/$pid" ] || { cat "$n/holder.log" >&2; die "node $k's holder exited"; }
    [ $SECONDS -lt $deadline ] || die "node $k's namespaces did not come up within 60s"
    sleep 0.1
  done
}

setup_node_namespace() {
  local k=$1 n id; n=$(node_dir "$k"); id=$(node_id)
  local pid; pid=$(pid_of "node$k-holder")
  # Bare: the host's own /run/netns mount (if `ip netns` made one) would stay under the node's /run, and containerd
  # would judge the propagation of the node's /run/netns by it; drop it from the node's (private) mount namespace.
  if bare; then node_exec "$k" umount -l /run/netns 2>/dev/null || true; fi
  node_exec "$k" mount --bind "$n/run" /run
  node_exec "$k" mount --bind "$n/var-lib" /var/lib
  node_exec "$k" mount --bind "$n/var-log" /var/log
  # As on a systemd host, the runtime's netns mounts propagate to containers that mount /run/netns with
  # HostToContainer (thick mode's daemon); the node's namespace was made with private propagation.
  if bare; then
    node_exec "$k" mkdir -p /run/netns
    node_exec "$k" mount --bind /run/netns /run/netns
    node_exec "$k" mount --make-shared /run/netns
  fi
  node_exec "$k" ip link set lo up
  node_exec "$k" ip addr add "$APISERVER_ENDPOINT_IP/32" dev lo
  node_exec "$k" sysctl -qw net.ipv4.ip_forward=1
  ip link add "pxm${id}n$k" type veth peer name eth0 netns "$pid"
  ip link set "pxm${id}n$k" master "pxm$id" up
  ip link add "pxl${id}n$k" type veth peer name "$NODE_LAN_IF" netns "$pid"
  ip link set "pxl${id}n$k" master "pxl$id" up
  node_exec "$k" ip addr add "$(node_ip "$k")/24" dev eth0
  node_exec "$k" ip link set eth0 up
  node_exec "$k" ip link set "$NODE_LAN_IF" up
  node_exec "$k" ip route add default via "198.18.$((16 * $(node_slot))).1"
}

# Pod subnets are routed between nodes over the management bridge.
route_pod_subnets() {
  local k j
  for k in $(node_indexes); do
    for j in $(node_indexes); do
      [ "$k" = "$j" ] && continue
      node_exec "$k" ip route replace "$(node_pod_subnet "$j")" via "$(node_ip "$j")"
    done
  done
}

node_crictl() {
  "$CRICTL_BIN/crictl" --runtime-endpoint "unix://$(node_dir "$1")/containerd.sock" --timeout 60s "${@:2}"
}

start_node() {
  local k=$1 n name; n=$(node_dir "$k"); name=$(node_name "$k")
  local start=$SECONDS
  say "starting node $name ($(node_ip "$k"), pods $(node_pod_subnet "$k"))"
  write_node_configs "$k"
  make_node_cgroups "$k"
  start_holder "$k"
  setup_node_namespace "$k"
  local holder; holder=$(pid_of "node$k-holder")
  start_daemon "node$k-apiserver-forward" "$n/apiserver-forward.log" nsenter -t "$holder" -m -n -- socat \
    "TCP-LISTEN:$NODE_APISERVER_PORT,bind=127.0.0.1,reuseaddr,fork" "UNIX-CONNECT:$STATE/apiserver.sock"
  # The `kubernetes` Service's endpoint, for pods (kube-proxy DNATs 10.0.0.1:443 to it).
  start_daemon "node$k-service-forward" "$n/service-forward.log" nsenter -t "$holder" -m -n -- socat \
    "TCP-LISTEN:$APISERVER_PORT,bind=$APISERVER_ENDPOINT_IP,reuseaddr,fork" "UNIX-CONNECT:$STATE/apiserver.sock"
  # Bare: the chart runs plexus-daemon (thick mode) itself.
  bare || start_plexus_daemon "$k"
  start_containerd "$k"
  local archives=("$IMAGES_DIR/pause.tar" "$WORKLOAD_TAR") archive
  if bare; then archives+=("$STATE/plexus-image.tar"); fi
  for archive in "${archives[@]}"; do
    node_exec "$k" "$CONTAINERD_BIN/ctr" --address "$n/containerd.sock" -n k8s.io images import \
      --label io.cri-containerd.pinned=pinned "$archive" >/dev/null ||
      die "could not import $archive into $name"
  done
  start_kubelet "$k"
  say "node $name: processes started in $((SECONDS - start))s"
}

# Thick mode's daemon, with its node's name; ready once its caches of the node's pods and of the NADs have synced.
start_plexus_daemon() {
  local k=$1 n name holder; n=$(node_dir "$k"); name=$(node_name "$k"); holder=$(pid_of "node$k-holder")
  start_daemon "node$k-plexus-daemon" "$n/plexus-daemon.out" nsenter -t "$holder" -m -n -- \
    env NODE_NAME="$name" "$PLEXUS_DAEMON_BIN" --config "$n/plexus-daemon.json"
  local deadline=$((SECONDS + NODE_TIMEOUT))
  until node_exec "$k" curl -fsS --max-time 2 -o /dev/null http://127.0.0.1:9464/readyz 2>/dev/null; do
    alive "node$k-plexus-daemon" || { tail -n 30 "$n/plexus-daemon.out" "$n/plexus-daemon.log" >&2; die "plexus-daemon of $name exited"; }
    [ $SECONDS -lt $deadline ] ||
      { tail -n 30 "$n/plexus-daemon.out" "$n/plexus-daemon.log" >&2; die "plexus-daemon of $name not ready after ${NODE_TIMEOUT}s"; }
    sleep 0.1
  done
}

start_containerd() {
  local k=$1 n name holder; n=$(node_dir "$k"); name=$(node_name "$k"); holder=$(pid_of "node$k-holder")
  start_daemon "node$k-containerd" "$n/containerd.log" nsenter -t "$holder" -m -n -- \
    env PATH="$CONTAINERD_BIN:$PATH" "$CONTAINERD_BIN/containerd" --config "$n/containerd.toml"
  local deadline=$((SECONDS + NODE_TIMEOUT))
  until node_crictl "$k" version >/dev/null 2>&1; do
    alive "node$k-containerd" || { tail -n 30 "$n/containerd.log" >&2; die "containerd of $name exited"; }
    [ $SECONDS -lt $deadline ] || { tail -n 30 "$n/containerd.log" >&2; die "containerd of $name did not come up"; }
    sleep 0.1
  done
}

start_kubelet() {
  local k=$1 n name holder; n=$(node_dir "$k"); name=$(node_name "$k"); holder=$(pid_of "node$k-holder")
  start_daemon "node$k-kubelet" "$n/kubelet.log" nsenter -t "$holder" -m -n -- \
    "$K8S_NODE_BIN/kubelet" --config="$n/kubelet.yaml" --kubeconfig="$n/kubelet.kubeconfig" \
    --hostname-override="$name" --node-ip="$(node_ip "$k")" --cert-dir="$n/kubelet-certs" --v=1 \
    --register-with-taints="$NODE_TAINT"
}

# kube-proxy needs its Node object (it reads the node's IP there): started once the node is registered.
start_kube_proxy() {
  local k=$1 n holder; n=$(node_dir "$k"); holder=$(pid_of "node$k-holder")
  start_daemon "node$k-kube-proxy" "$n/kube-proxy.log" nsenter -t "$holder" -m -n -- \
    "$K8S_NODE_BIN/kube-proxy" --config="$n/kube-proxy.yaml" --v=1
}

# healthz answers 200 once kube-proxy has synced its rules for the first time.
wait_kube_proxy() {
  local k=$1 name; name=$(node_name "$k")
  local deadline=$((SECONDS + NODE_TIMEOUT))
  until node_exec "$k" curl -fsS --max-time 2 -o /dev/null http://127.0.0.1:10256/healthz 2>/dev/null; do
    alive "node$k-kube-proxy" || { tail -n 30 "$(node_dir "$k")/kube-proxy.log" >&2; die "kube-proxy of $name exited"; }
    [ $SECONDS -lt $deadline ] ||
      { tail -n 30 "$(node_dir "$k")/kube-proxy.log" >&2; die "kube-proxy of $name not healthy after ${NODE_TIMEOUT}s"; }
    sleep 0.2
  done
}

wait_node_ready() {
  local k=$1 name; name=$(node_name "$k")
  local deadline=$((SECONDS + NODE_TIMEOUT))
  until [ "$(kctl get node "$name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; do
    alive "node$k-kubelet" || { tail -n 30 "$(node_dir "$k")/kubelet.log" >&2; die "kubelet of $name exited"; }
    [ $SECONDS -lt $deadline ] || { tail -n 30 "$(node_dir "$k")/kubelet.log" >&2; die "$name not Ready after ${NODE_TIMEOUT}s"; }
    sleep 0.2
  done
}

# nodes_up <N>: starts nodes until there are N (called by `up --node(s)` once the apiserver is up).
nodes_up() {
  local want=$1
  [ "$want" -ge 1 ] && [ "$want" -le 15 ] || die "--nodes takes 1..15"
  case $STATE/ in /run/* | /var/lib/* | /var/log/*) die "the state dir may not be under /run, /var/lib or /var/log (nodes mount over them)" ;; esac
  local start=$SECONDS
  K8S_BIN=$(tool_bin kubernetes)
  node_tool_bins
  node_rust_bins
  node_images
  mkdir -p "$NODES_DIR"
  devices_choose "${DEVICES:-}"
  pick_slot
  ensure_bridges
  start_node_control_plane
  local k started=()
  for k in $(seq 1 "$want"); do
    if alive "node$k-holder"; then continue; fi
    [ -d "$(node_dir "$k")" ] && stop_node "$k"
    start_node "$k"
    started+=("$k")
  done
  route_pod_subnets
  for k in "${started[@]}"; do wait_node_ready "$k"; start_kube_proxy "$k"; done
  for k in "${started[@]}"; do wait_kube_proxy "$k"; done
  devices_up
  if bare; then write_node_values; fi
  say "nodes up in $((SECONDS - start))s: $(node_names)"
}

# Values for the chart on these nodes: the local image, the API server as host-network pods reach it (the node's
# 127.0.0.1:6443 forwarder; this control plane's `kubernetes` Service has no endpoints), the first node's CNI dirs
# (a DaemonSet's hostPath is one path for every node: one node per bare cluster), and the harness taint tolerated.
write_node_values() {
  local n; n=$(node_dir "$(node_indexes | head -n1)")
  cat >"$NODE_VALUES" <<EOF
# Written by e2e/cluster for the local node: helm install plexus charts/plexus -f $NODE_VALUES
image: {repository: localhost/plexus-e2e/plexus, tag: e2e, pullPolicy: Never}
apiServer: {host: 127.0.0.1, port: "$NODE_APISERVER_PORT"}
cni: {binDir: $n/cni-bin, confDir: $n/cni-conf}
controller:
  replicas: 1
  # On the host network: the API server reaches the webhook at the node's address.
  hostNetwork: true
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 0, maxUnavailable: 1}}
  tolerations: [{key: ${NODE_TAINT%%=*}, operator: Exists}]
EOF
}

node_names() {
  local k out=()
  for k in $(node_indexes); do out+=("$(node_name "$k")"); done
  (IFS=,; echo "${out[*]}")
}

# stop_node <k>: pods removed through the CRI (CNI DEL runs) while containerd still runs, then everything else.
stop_node() {
  local k=$1 n name; n=$(node_dir "$k"); name=$(node_name "$k")
  stop_daemon "node$k-kube-proxy"
  stop_daemon "node$k-kubelet"
  if alive "node$k-containerd"; then
    node_crictl "$k" stopp $(node_crictl "$k" pods -q 2>/dev/null) >/dev/null 2>&1 || true
    node_crictl "$k" rmp -a -f >/dev/null 2>&1 || say "warning: crictl rmp on $name failed"
  fi
  stop_daemon "node$k-containerd"
  node_devices_down "$k"
  # After the sandboxes: their DEL goes through it in thick mode.
  stop_daemon "node$k-plexus-daemon"
  stop_daemon "node$k-apiserver-forward"
  stop_daemon "node$k-service-forward"
  local holder netns pid
  if holder=$(pid_of "node$k-holder"); then
    # Shims and containers are not in containerd's process group: end everything left in the node's namespace.
    netns=$(readlink "/proc/$holder/ns/net")
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
      [ "$pid" = "$holder" ] && continue
      [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "$netns" ] && kill -KILL "$pid" 2>/dev/null
    done
  fi
  stop_daemon "node$k-holder"
  remove_node_cgroups "$k"
  local id; id=$(node_id)
  ip link del "pxm${id}n$k" 2>/dev/null || true
  ip link del "pxl${id}n$k" 2>/dev/null || true
  # The mounts lived in the node's mount namespace and are gone with it; what is left are plain files.
  rm -rf "$n"
}

# nodes_down: every node, their Node objects, the node control plane and the bridges. Safe with no nodes.
nodes_down() {
  [ -d "$NODES_DIR" ] || return 0
  CRICTL_BIN=$(tool_bin crictl)
  local k names=()
  for k in $(node_indexes); do
    names+=("$(node_name "$k")")
    stop_node "$k"
  done
  if [ ${#names[@]} -gt 0 ] && running; then
    K8S_BIN=$(tool_bin kubernetes)
    kctl delete node "${names[@]}" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  stop_daemon kube-controller-manager
  stop_daemon kube-scheduler
  stop_daemon apiserver-forward
  local id; id=$(node_id)
  ip link del "pxm$id" 2>/dev/null || true
  ip link del "pxl$id" 2>/dev/null || true
  rm -rf "$NODES_DIR" "$STATE/apiserver.sock"
}

nodes_status() {
  [ -d "$NODES_DIR" ] || return 0
  local k name ready
  for k in $(node_indexes); do
    name=$(node_name "$k")
    ready=$(K8S_BIN=$(tool_bin kubernetes) kctl get node "$name" \
      -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
    echo "node $name: ip $(node_ip "$k"), pods $(node_pod_subnet "$k"), Ready=${ready:-unknown}," \
      "holder $(pid_of "node$k-holder" || echo dead), containerd $(alive "node$k-containerd" && echo alive || echo dead)," \
      "kubelet $(alive "node$k-kubelet" && echo alive || echo dead)," \
      "kube-proxy $(alive "node$k-kube-proxy" && echo alive || echo dead)," \
      "plexus-daemon $(alive "node$k-plexus-daemon" && echo alive || echo dead),$(node_devices_status "$k")" \
      "logs $(node_dir "$k")/*.log"
  done
}

nodes_env() {
  [ -d "$NODES_DIR" ] && [ -n "$(node_indexes)" ] || return 0
  local first n; first=$(node_indexes | head -n1); n=$(node_dir "$first")
  echo "NODE_NAME=$(shq "$(node_name "$first")")"
  echo "NODE_NAMES=$(shq "$(node_names)")"
  echo "NODE_LAN_IF=$(shq "$NODE_LAN_IF")"
  echo "NODE_CNI_BIN_DIR=$(shq "$n/cni-bin")"
  echo "NODE_CNI_CONF_DIR=$(shq "$n/cni-conf")"
  echo "CONTAINERD_ADDRESS=$(shq "$n/containerd.sock")"
  echo "CONTAINER_RUNTIME_ENDPOINT=$(shq "unix://$n/containerd.sock")"
  echo "WORKLOAD_IMAGE=$(shq "$WORKLOAD_IMAGE")"
  echo "PLEXUS_E2E_NODES_DIR=$(shq "$NODES_DIR")"
  echo "export NODE_NAME NODE_NAMES NODE_LAN_IF NODE_CNI_BIN_DIR NODE_CNI_CONF_DIR CONTAINERD_ADDRESS CONTAINER_RUNTIME_ENDPOINT WORKLOAD_IMAGE PLEXUS_E2E_NODES_DIR"
  if [ -f "$NODE_VALUES" ]; then
    echo "PLEXUS_NODE_VALUES=$(shq "$NODE_VALUES")"
    echo "export PLEXUS_NODE_VALUES"
  fi
  devices_env
}

# node_stop <k> <daemon>: stops one daemon of node k (node-restart starts it again).
node_stop() {
  local k=$1 daemon=$2
  alive "node$k-holder" || die "no node $k"
  case $daemon in plexus-daemon | containerd | kubelet) ;; *) usage ;; esac
  stop_daemon "node$k-$daemon"
}

# node_restart <k> containerd|kubelet|plexus-daemon|device-plugin|dra-driver: stops the daemon (SIGTERM) and starts
# it again with the pods running; the previous output is kept as <log>.<n> (plexus-daemon: its stdout/stderr,
# plexus-daemon.out; its own log file is appended to). With devices, a restarted kubelet or device plugin counts as
# back once the device plugin registered again and the node's devices are allocatable and published again.
node_restart() {
  local k=$1 daemon=$2 n out; n=$(node_dir "$k")
  alive "node$k-holder" || die "no node $k"
  case $daemon in
    containerd | kubelet) out=$n/$daemon.log ;;
    plexus-daemon) bare && die "bare nodes run no harness plexus-daemon (the chart does)"; out=$n/$daemon.out ;;
    device-plugin | dra-driver) [ "$(device_count)" -gt 0 ] || die "no devices (up --devices K)"; out=$n/$daemon.log ;;
    *) usage ;;
  esac
  K8S_BIN=$(tool_bin kubernetes)
  node_tool_bins
  node_rust_bin_paths
  [ "$(device_count)" -eq 0 ] || devices_tools
  # The device plugin registers once more after a kubelet restart; a restarted plugin starts a new log.
  local registrations=1
  [ "$daemon" != kubelet ] || registrations=$(($(device_plugin_registrations "$k") + 1))
  stop_daemon "node$k-$daemon"
  local i=1
  while [ -e "$out.$i" ]; do i=$((i + 1)); done
  mv "$out" "$out.$i"
  "start_${daemon//-/_}" "$k"
  [ "$daemon" != kubelet ] || wait_node_ready "$k"
  case $daemon in kubelet | device-plugin | dra-driver)
    [ "$(device_count)" -eq 0 ] || node_devices_wait "$k" "$registrations" ;;
  esac
  say "restarted $daemon of $(node_name "$k")"
}

# Bin dirs `env` puts on PATH when nodes run (crictl, ctr).
nodes_path() {
  [ -d "$NODES_DIR" ] || return 0
  tool_bin crictl
  tool_bin containerd
}
