# shellcheck shell=bash
# plexus-controller in the test control plane; sourced by e2e/cluster (uses its STATE, PKI, say, sign, free_port,
# start_daemon, stop_daemon, alive, fail_with_log).
#
#   controller_up <k8s bin dir>   build the release binary (a no-op when fresh), make its client and serving
#                                 certificates, apply its RBAC, start it, register the validating webhook and the
#                                 mutating one (resource injection), and return once a probe NAD is denied.
#                                 Idempotent.
#   controller_down               stop it.
#   controller_status             one line per fact, for `e2e/cluster status`.
#
# Env: PLEXUS_CONTROLLER_BIN (use this binary instead of building one), PLEXUS_E2E_CONTROLLER_TIMEOUT (default 60 s).

CONTROLLER_LOG=$STATE/plexus-controller.log
CONTROLLER_ENV=$STATE/controller.env
CONTROLLER_KUBECONFIG=$STATE/controller.kubeconfig
CONTROLLER_TIMEOUT=${PLEXUS_E2E_CONTROLLER_TIMEOUT:-60}
CONTROLLER_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The name of the ValidatingWebhookConfiguration; tests read it to derive their own.
WEBHOOK_CONFIG_NAME=plexus

controller_bin() {
  if [ -n "${PLEXUS_CONTROLLER_BIN:-}" ]; then
    echo "$PLEXUS_CONTROLLER_BIN"
    return 0
  fi
  say "building plexus-controller (release)"
  (cd "$PLEXUS_REPO" && cargo build --release --locked -p plexus-controller >&2) ||
    die "cargo build of plexus-controller failed"
  local target=${CARGO_TARGET_DIR:-$PLEXUS_REPO/target}
  case $target in /*) ;; *) target=$PLEXUS_REPO/$target ;; esac
  echo "$target/release/plexus-controller"
}

controller_certs() {
  [ -f "$PKI/webhook.crt" ] && [ -f "$PKI/controller.crt" ] && return 0
  (
    umask 077
    sign webhook "/CN=plexus-controller-webhook" "$(printf '%s\n' \
      "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth" \
      "subjectAltName=IP:127.0.0.1,DNS:localhost")"
    sign controller "/CN=plexus-controller" "$(printf '%s\n' \
      "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=clientAuth")"
  )
  chmod 0600 "$PKI"/*.key
  local url tmp="$CONTROLLER_KUBECONFIG.tmp"
  url=$(awk '/server:/ {print $2; exit}' "$KUBECONFIG_PATH")
  (
    umask 077
    cat >"$tmp" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: plexus-e2e
  cluster:
    server: $url
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: plexus-controller
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/controller.crt")
    client-key-data: $(base64 -w0 <"$PKI/controller.key")
contexts:
- name: plexus-e2e
  context: {cluster: plexus-e2e, user: plexus-controller}
current-context: plexus-e2e
KUBECONFIG
  )
  mv -f "$tmp" "$CONTROLLER_KUBECONFIG"
}

# The webhook registration. Failure policy: NADs Fail (an admin retries; an unchecked NAD never lands), pods
# Ignore (a controller outage never blocks a workload; the plugin applies the same rules at ADD). matchConditions
# keep pods without the networks or default-network annotation away from the webhook; namespaces labelled plexus/admission=off are
# not validated. Resource injection is on (the chart's controller.resourceInjection.enabled): the mutating webhook,
# as the chart renders it, skips kube-system too.
webhook_config() {
  local port=$1 ca
  ca=$(base64 -w0 <"$PKI/ca.crt")
  cat <<YAML
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: $WEBHOOK_CONFIG_NAME
webhooks:
- name: nads.plexus.k8s.cni.cncf.io
  clientConfig: {url: "https://127.0.0.1:$port/validate", caBundle: "$ca"}
  rules:
  - {apiGroups: [k8s.cni.cncf.io], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [network-attachment-definitions], scope: Namespaced}
  namespaceSelector:
    matchExpressions: [{key: plexus/admission, operator: NotIn, values: ["off"]}]
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 5
- name: pods.plexus.k8s.cni.cncf.io
  clientConfig: {url: "https://127.0.0.1:$port/validate", caBundle: "$ca"}
  rules:
  - {apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [pods], scope: Namespaced}
  namespaceSelector:
    matchExpressions: [{key: plexus/admission, operator: NotIn, values: ["off"]}]
  matchConditions:
  - name: has-networks-annotation
    expression: "has(object.metadata.annotations) && ('k8s.v1.cni.cncf.io/networks' in object.metadata.annotations || 'v1.multus-cni.io/default-network' in object.metadata.annotations)"
  - name: networks-changed
    expression: "request.operation == 'CREATE' || (has(object.metadata.annotations) && 'k8s.v1.cni.cncf.io/networks' in object.metadata.annotations && (!has(oldObject.metadata.annotations) || !('k8s.v1.cni.cncf.io/networks' in oldObject.metadata.annotations) || oldObject.metadata.annotations['k8s.v1.cni.cncf.io/networks'] != object.metadata.annotations['k8s.v1.cni.cncf.io/networks']))"
  failurePolicy: Ignore
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 5
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: $WEBHOOK_CONFIG_NAME
webhooks:
- name: inject.pods.plexus.k8s.cni.cncf.io
  clientConfig: {url: "https://127.0.0.1:$port/mutate", caBundle: "$ca"}
  rules:
  - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods], scope: Namespaced}
  namespaceSelector:
    matchExpressions:
    - {key: plexus/admission, operator: NotIn, values: ["off"]}
    - {key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system]}
  matchConditions:
  - name: has-networks-annotation
    expression: "has(object.metadata.annotations) && ('k8s.v1.cni.cncf.io/networks' in object.metadata.annotations || 'v1.multus-cni.io/default-network' in object.metadata.annotations)"
  failurePolicy: Ignore
  reinvocationPolicy: Never
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 5
YAML
}

# A NAD the webhook must refuse, sent with --dry-run=server: denied once the webhook is in effect.
webhook_denies() {
  local kubectl=$1 out
  out=$("$kubectl" --kubeconfig "$KUBECONFIG_PATH" apply --dry-run=server -f - 2>&1 <<'YAML'
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: plexus-webhook-probe, namespace: default}
spec: {config: "not json"}
YAML
  ) && return 1
  grep -q 'denied the request' <<<"$out"
}

# The plugin type rules the e2e controller enforces (e2e/tests/trust.rs): host-device NADs only in namespaces
# labelled plexus.test/host-device=allowed.
E2E_PLUGIN_TYPE_RULES='[{"types":["host-device"],"namespaceSelector":{"matchLabels":{"plexus.test/host-device":"allowed"}}}]'

controller_up() {
  local k8s_bin=$1 bin port probe_port
  local kubectl=$k8s_bin/kubectl
  if alive plexus-controller && webhook_denies "$kubectl" && [ -f "$CONTROLLER_ENV" ]; then
    # The registration may be older than this script (a cluster left up): apply it again.
    . "$CONTROLLER_ENV"
    webhook_config "$CONTROLLER_WEBHOOK_PORT" | "$kubectl" --kubeconfig "$KUBECONFIG_PATH" apply -f - >&2
    return 0
  fi
  bin=$(controller_bin)
  [ -x "$bin" ] || die "no plexus-controller binary at $bin"
  stop_daemon plexus-controller
  controller_certs
  "$kubectl" --kubeconfig "$KUBECONFIG_PATH" apply -f "$CONTROLLER_LIB_DIR/controller-rbac.yaml" >&2
  port=$(free_port "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT")
  probe_port=$(free_port "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$port")
  printf 'CONTROLLER_WEBHOOK_PORT=%s\nCONTROLLER_PROBE_PORT=%s\n' "$port" "$probe_port" >"$CONTROLLER_ENV"
  say "starting plexus-controller (webhook https://127.0.0.1:$port, probes http://127.0.0.1:$probe_port)"
  start_daemon plexus-controller "$CONTROLLER_LOG" "$bin" run \
    --kubeconfig "$CONTROLLER_KUBECONFIG" \
    --webhook-addr "127.0.0.1:$port" \
    --tls-cert "$PKI/webhook.crt" --tls-key "$PKI/webhook.key" \
    --probe-addr "127.0.0.1:$probe_port" \
    --identity "e2e-controller" \
    --plugin-type-rules "$E2E_PLUGIN_TYPE_RULES"
  wait_for "plexus-controller /readyz" "$CONTROLLER_TIMEOUT" plexus-controller "$CONTROLLER_LOG" \
    curl -fsS --max-time 2 "http://127.0.0.1:$probe_port/readyz"
  webhook_config "$port" | "$kubectl" --kubeconfig "$KUBECONFIG_PATH" apply -f - >&2
  wait_for "the webhook to deny a probe NAD" "$CONTROLLER_TIMEOUT" plexus-controller "$CONTROLLER_LOG" \
    webhook_denies "$kubectl"
  say "plexus-controller is validating (log: $CONTROLLER_LOG)"
}

controller_down() {
  stop_daemon plexus-controller
}

controller_status() {
  if alive plexus-controller && [ -f "$CONTROLLER_ENV" ]; then
    . "$CONTROLLER_ENV"
    echo "controller: https://127.0.0.1:$CONTROLLER_WEBHOOK_PORT/validate and /mutate (probes http://127.0.0.1:$CONTROLLER_PROBE_PORT)"
    echo "controller log: $CONTROLLER_LOG"
  else
    echo "controller: not running"
  fi
}
