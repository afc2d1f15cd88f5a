{{- /*
The alert rules: a Prometheus rule file's content (`groups:`), the PrometheusRule's spec. docs/operations.md says what
each means and what to do; the tests run promtool on them and fire them on real nodes (e2e/tests/monitoring.rs).
*/}}
{{- define "plexus.alertRules" -}}
{{- $r := .Values.monitoring.prometheusRule }}
{{- $for := $r.for }}
{{- $w := $r.rateWindow }}
{{- $daemonJob := $r.daemonJob | default (printf "%s/%s" .Release.Namespace (include "plexus.node" .)) }}
{{- $controllerJob := $r.controllerJob | default (include "plexus.controller" .) }}
{{- $doc := "docs/operations.md" -}}
groups:
  - name: plexus-node
    rules:
      - alert: PlexusDaemonDown
        expr: up{job="{{ $daemonJob }}"} == 0
        for: {{ $for }}
        labels: {severity: critical}
        annotations:
          summary: "Plexus's daemon on {{ "{{ $labels.instance }}" }} can't be scraped"
          description: "Pods on that node get no secondary networks while its daemon is down: the shim fails their ADDs with code 11. Check the node DaemonSet's pod there (kubectl plexus status)."
          runbook: "{{ $doc }}#plexusdaemondown"
      - alert: PlexusDaemonNotReady
        expr: plexus_daemon_ready == 0
        for: {{ $for }}
        labels: {severity: warning}
        annotations:
          summary: "Plexus's daemon on {{ "{{ $labels.instance }}" }} has not synced its caches"
          description: "Its watches of this node's pods and of the NADs have not listed: ADDs there read from the API server. Look at the daemon's log for the API server's answer."
          runbook: "{{ $doc }}#plexusdaemonnotready"
      - alert: PlexusCNIAddErrors
        expr: sum by (instance, code) (rate(plexus_daemon_requests_total{command="ADD",outcome="error"}[{{ $w }}])) > {{ $r.addErrorsPerSecond }}
        for: {{ $for }}
        labels: {severity: warning}
        annotations:
          summary: "ADDs fail on {{ "{{ $labels.instance }}" }} with CNI code {{ "{{ $labels.code }}" }}"
          description: "Pods there stay in ContainerCreating. docs/errors.md says what the code means; kubectl plexus why POD names the network, the delegate and the cause."
          runbook: "{{ $doc }}#plexuscniadderrors"
      - alert: PlexusConfNotInPlace
        expr: plexus_daemon_runtime_conf{state!="plexus"} == 1
        for: {{ $for }}
        labels: {severity: critical}
        annotations:
          summary: "The runtime's CNI conf on {{ "{{ $labels.instance }}" }} is not Plexus's ({{ "{{ $labels.state }}" }})"
          description: "New pods there get only the network of the conf the runtime found first, or none: no secondary networks. Another CNI's installer may have written a conf that sorts first; the installer's log says what it saw."
          runbook: "{{ $doc }}#plexusconfnotinplace"
      - alert: PlexusRecordsPilingUp
        expr: plexus_daemon_records - ignoring (kind) plexus_daemon_cached_objects{kind="pod"} > {{ $r.recordsBeyondPods }}
        for: {{ $for }}
        labels: {severity: warning}
        annotations:
          summary: "{{ "{{ $value }}" }} more records than pods on {{ "{{ $labels.instance }}" }}"
          description: "Records of sandboxes that are gone stay until a DEL or the runtime's GC removes them, and so do their IP leases. Check that the runtime sends DEL and GC (kubectl plexus status shows the node's errors)."
          runbook: "{{ $doc }}#plexusrecordspilingup"
  - name: plexus-controller
    rules:
      - alert: PlexusControllerDown
        expr: up{job="{{ $controllerJob }}"} == 0
        for: {{ $for }}
        labels: {severity: warning}
        annotations:
          summary: "A Plexus controller can't be scraped ({{ "{{ $labels.instance }}" }})"
          description: "With every replica down, NADs are not admitted (the NAD webhook fails closed) and pods are not checked (the pod webhook fails open; the plugin checks the same rules at ADD)."
          runbook: "{{ $doc }}#plexuscontrollerdown"
      - alert: PlexusWebhookErrors
        expr: sum(rate(plexus_controller_webhook_requests_total{outcome=~"error|timeout"}[{{ $w }}])) / sum(rate(plexus_controller_webhook_requests_total[{{ $w }}])) > {{ $r.webhookErrorRatio }}
        for: {{ $for }}
        labels: {severity: warning}
        annotations:
          summary: "{{ "{{ $value | humanizePercentage }}" }} of Plexus's admission reviews fail"
          description: "The API server applies the failure policy to them: NADs are refused, pods go through unchecked. The controller's log names the reviews."
          runbook: "{{ $doc }}#plexuswebhookerrors"
      - alert: PlexusWebhookSlow
        expr: histogram_quantile(0.99, sum by (le) (rate(plexus_controller_webhook_duration_seconds_bucket[{{ $w }}]))) > {{ $r.webhookP99Seconds }}
        for: {{ $for }}
        labels: {severity: warning}
        annotations:
          summary: "Plexus's webhook answers in {{ "{{ $value | humanizeDuration }}" }} (p99)"
          description: "Every pod and NAD write waits for it; past webhook.timeoutSeconds the API server applies the failure policy."
          runbook: "{{ $doc }}#plexuswebhookslow"
      - alert: PlexusInvalidNADs
        expr: max(plexus_controller_invalid_nads) > 0
        for: {{ $for }}
        labels: {severity: warning}
        annotations:
          summary: "{{ "{{ $value }}" }} NetworkAttachmentDefinitions are not valid"
          description: "Pods that select them fail their ADD. kubectl get net-attach-def -A shows their Valid condition and why; fix or delete them."
          runbook: "{{ $doc }}#plexusinvalidnads"
      - alert: PlexusPodsMissingNetworks
        expr: max(plexus_controller_mismatched_pods) > 0
        for: {{ $for }}
        labels: {severity: warning}
        annotations:
          summary: "{{ "{{ $value }}" }} pods lack networks they asked for (NetworksReady=False)"
          description: "kubectl plexus why POD says, for each, which network is missing and why."
          runbook: "{{ $doc }}#plexuspodsmissingnetworks"
{{- end -}}
