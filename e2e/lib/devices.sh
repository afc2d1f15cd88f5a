# Fake NICs on the real nodes (sourced by e2e/lib/node.sh; `e2e/cluster up --nodes N --devices K`). Test-only
# infrastructure for device networks; the programs are the Go module e2e/devices (`e2e/tools/install
# plexus-test-devices`), whose package fakenic holds the naming rule:
#
#   - 2K links in each node's network namespace, macvlans (mode bridge) of the node's lan0, so a NIC handed to a pod
#     reaches the shared segment: dpnic0..dpnic<K-1> for the device plugin, dranic0..dranic<K-1> for the DRA driver;
#   - plexus-test-device-plugin in the node's namespaces: kubelet device plugin API v1beta1, resource plexus.test/nic,
#     device IDs = made-up PCI addresses 0000:d1:<i/8>.<i%8> (dpnic<i>); NPWG device-info v1.1.0 files
#     /var/run/k8s.cni.cncf.io/devinfo/dp/plexus.test-nic-<id>-device.json; re-registers when the kubelet restarts;
#   - plexus-test-dra-driver in the node's namespaces: DRA driver nic.plexus.test (kubelet plugins_registry), one
#     ResourceSlice for the node (pool = node name) with devices nic0..nic<K-1>, attributes k8s.cni.cncf.io/deviceID
#     (0000:d2:<i/8>.<i%8>, dranic<i>), k8s.cni.cncf.io/resourceName (plexus.test/dra-nic) and nic.plexus.test/link;
#     its identity is the client certificate CN=plexus-test-dra (ResourceSlices, ResourceClaims get, Nodes get);
#   - the DeviceClass nic.plexus.test (CEL: device.driver == "nic.plexus.test");
#   - the CNI delegate plexus-test-device in each node's cni-bin: the deviceID a meta-plugin injects → `device`, then
#     the real host-device.
# K is chosen at the first `up --devices K` that has nodes and kept in <state>/nodes/devices; nodes added later get
# the same K. `down` stops both programs and deletes the links (the namespace goes too).

DEVICE_RESOURCE=plexus.test/nic
DRA_DRIVER=nic.plexus.test
DRA_RESOURCE=plexus.test/dra-nic
DEVICE_DELEGATE=plexus-test-device
DEVICES_FILE=$NODES_DIR/devices
DEVICE_LINK_PREFIXES="dpnic dranic"

device_count() { cat "$DEVICES_FILE" 2>/dev/null || echo 0; }

# devices_choose <K>: records K (0: none asked for). A running cluster keeps the K it has.
devices_choose() {
  local want=$1 have
  [ -n "$want" ] || return 0
  [[ $want =~ ^[0-9]+$ ]] && [ "$want" -ge 1 ] && [ "$want" -le 64 ] || die "--devices takes 1..64"
  have=$(device_count)
  [ "$have" -eq 0 ] || [ "$have" -eq "$want" ] || die "the nodes have $have devices each (e2e/cluster down first)"
  echo "$want" >"$DEVICES_FILE"
}

devices_tools() { DEVICES_BIN=$(tool_bin plexus-test-devices); }

# The DRA driver's identity and the DeviceClass (cluster-wide, once per `up`; apply is idempotent).
devices_cluster_objects() {
  user_role plexus-test-dra '- {apiGroups: [resource.k8s.io], resources: [resourceslices], verbs: [get, list, watch, create, update, patch, delete, deletecollection]}
- {apiGroups: [resource.k8s.io], resources: [resourceclaims], verbs: [get]}
- {apiGroups: [""], resources: [nodes], verbs: [get]}'
  kctl apply -f - >/dev/null <<EOF
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: $DRA_DRIVER}
spec:
  selectors:
  - cel: {expression: 'device.driver == "$DRA_DRIVER"'}
EOF
}

# node_devices_up <k>: the delegate, the links (once per node: an allocated NIC lives in a pod's namespace) and both
# programs (unless running); idempotent.
node_devices_up() {
  local k=$1 n K prefix i; n=$(node_dir "$k"); K=$(device_count)
  if bare; then cp -f "$DEVICES_BIN/$DEVICE_DELEGATE" "$n/cni-bin/"; else
    ln -sfn "$DEVICES_BIN/$DEVICE_DELEGATE" "$n/cni-bin/$DEVICE_DELEGATE"
  fi
  if [ ! -f "$n/devices-links" ]; then
    for prefix in $DEVICE_LINK_PREFIXES; do
      for ((i = 0; i < K; i++)); do
        node_exec "$k" ip link del "$prefix$i" 2>/dev/null || true
        node_exec "$k" ip link add "$prefix$i" link "$NODE_LAN_IF" type macvlan mode bridge ||
          die "could not create $prefix$i on $(node_name "$k")"
      done
    done
    touch "$n/devices-links"
  fi
  alive "node$k-device-plugin" || start_device_plugin "$k"
  alive "node$k-dra-driver" || start_dra_driver "$k"
}

# Both take host paths inside the node dir (the same files as the node's /var/lib and /run), which also puts the state
# dir into their command lines (pid_of).
start_device_plugin() {
  local k=$1 n; n=$(node_dir "$k")
  start_daemon "node$k-device-plugin" "$n/device-plugin.log" nsenter -t "$(pid_of "node$k-holder")" -m -n -- \
    "$DEVICES_BIN/plexus-test-device-plugin" --devices "$(device_count)" \
    --plugin-dir "$n/var-lib/kubelet/device-plugins" --devinfo-dir "$n/run/k8s.cni.cncf.io/devinfo/dp"
}

start_dra_driver() {
  local k=$1 n; n=$(node_dir "$k")
  node_kubeconfig "$n/dra-driver.kubeconfig" plexus-test-dra "https://127.0.0.1:$NODE_APISERVER_PORT"
  start_daemon "node$k-dra-driver" "$n/dra-driver.log" nsenter -t "$(pid_of "node$k-holder")" -m -n -- \
    "$DEVICES_BIN/plexus-test-dra-driver" --devices "$(device_count)" --node-name "$(node_name "$k")" \
    --kubeconfig "$n/dra-driver.kubeconfig"
}

# How many times the device plugin registered (a kubelet restart makes it register again).
device_plugin_registrations() {
  local c
  c=$(grep -c ' registered ' "$(node_dir "$1")/device-plugin.log" 2>/dev/null) || true
  echo "${c:-0}"
}

# node_devices_wait <k> [<registrations>]: until the plugin's log (since its start) shows at least <registrations>
# (default 1) registrations, the node's allocatable shows K of plexus.test/nic and the node's ResourceSlice of the
# driver lists K devices.
node_devices_wait() {
  local k=$1 want=${2:-1} name K deadline; name=$(node_name "$k"); K=$(device_count)
  deadline=$((SECONDS + NODE_TIMEOUT))
  local what="the device plugin of $name registered" ok
  while :; do
    ok=1
    [ "$(device_plugin_registrations "$k")" -ge "$want" ] || ok=0
    if [ $ok = 1 ]; then
      what="$name's allocatable $DEVICE_RESOURCE = $K"
      [ "$(kctl get node "$name" -o jsonpath="{.status.allocatable.${DEVICE_RESOURCE//./\\.}}" 2>/dev/null)" = "$K" ] || ok=0
    fi
    if [ $ok = 1 ]; then
      what="a ResourceSlice of $DRA_DRIVER for $name with $K devices"
      [ "$(kctl get resourceslices --field-selector "spec.nodeName=$name,spec.driver=$DRA_DRIVER" \
        -o jsonpath='{range .items[*]}{range .spec.devices[*]}{.name}{"\n"}{end}{end}' 2>/dev/null | grep -c .)" = "$K" ] || ok=0
    fi
    [ $ok = 1 ] && return 0
    local d
    for d in device-plugin dra-driver; do
      alive "node$k-$d" || { tail -n 30 "$(node_dir "$k")/$d.log" >&2; die "the $d of $name exited"; }
    done
    [ $SECONDS -lt $deadline ] || {
      tail -n 20 "$(node_dir "$k")/device-plugin.log" "$(node_dir "$k")/dra-driver.log" >&2
      die "$what did not happen within ${NODE_TIMEOUT}s"
    }
    sleep 0.5
  done
}

# devices_up: every node's devices (nodes_up calls it once the nodes are Ready).
devices_up() {
  [ "$(device_count)" -gt 0 ] || return 0
  local start=$SECONDS
  devices_tools
  devices_cluster_objects
  local k
  for k in $(node_indexes); do node_devices_up "$k"; done
  for k in $(node_indexes); do node_devices_wait "$k"; done
  say "devices: $(device_count) of $DEVICE_RESOURCE and $(device_count) of $DRA_DRIVER on each node in $((SECONDS - start))s"
}

# node_devices_down <k>: both programs stopped, the links deleted (those still in the node's namespace; one held by a
# pod went with the pod's namespace or came back at its DEL).
node_devices_down() {
  local k=$1 prefix link
  stop_daemon "node$k-device-plugin"
  stop_daemon "node$k-dra-driver"
  alive "node$k-holder" || return 0
  for link in $(node_exec "$k" ip -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'); do
    for prefix in $DEVICE_LINK_PREFIXES; do
      if [[ $link =~ ^$prefix[0-9]+$ ]]; then node_exec "$k" ip link del "$link" 2>/dev/null || true; fi
    done
  done
  rm -f "$(node_dir "$k")/devices-links"
}

# For `status`: empty without devices.
node_devices_status() {
  [ "$(device_count)" -gt 0 ] || return 0
  printf ' %s devices, device-plugin %s, dra-driver %s,' "$(device_count)" \
    "$(alive "node$1-device-plugin" && echo alive || echo dead)" "$(alive "node$1-dra-driver" && echo alive || echo dead)"
}

devices_env() {
  [ "$(device_count)" -gt 0 ] || return 0
  echo "NODE_DEVICE_COUNT=$(shq "$(device_count)")"
  echo "NODE_DEVICE_RESOURCE=$(shq "$DEVICE_RESOURCE")"
  echo "NODE_DRA_CLASS=$(shq "$DRA_DRIVER")"
  echo "NODE_DRA_RESOURCE=$(shq "$DRA_RESOURCE")"
  echo "NODE_DEVICE_DELEGATE=$(shq "$DEVICE_DELEGATE")"
  echo "export NODE_DEVICE_COUNT NODE_DEVICE_RESOURCE NODE_DRA_CLASS NODE_DRA_RESOURCE NODE_DEVICE_DELEGATE"
}
