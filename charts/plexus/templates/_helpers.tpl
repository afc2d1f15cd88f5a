{{/* Object names: <release>-plexus unless the release name already says plexus. */}}
{{- define "plexus.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "plexus.node" -}}{{ include "plexus.fullname" . }}-node{{- end -}}
{{- define "plexus.controller" -}}{{ include "plexus.fullname" . }}-controller{{- end -}}
{{- define "plexus.webhookSecret" -}}{{ include "plexus.fullname" . }}-webhook-tls{{- end -}}

{{- define "plexus.labels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "plexus.selector" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "plexus.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* KUBERNETES_SERVICE_HOST/PORT when apiServer overrides the kubernetes Service. */}}
{{- define "plexus.apiServerEnv" -}}
{{- if .Values.apiServer.host }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ .Values.apiServer.host | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ .Values.apiServer.port | default "443" | quote }}
{{- end }}
{{- end -}}

{{/* The service-account volume, projected explicitly (token with its lifetime, the cluster CA, the namespace), so
the pods do not depend on the ServiceAccount admission plugin's automount. Argument: the token lifetime. */}}
{{- define "plexus.tokenVolume" -}}
- name: service-account
  projected:
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: {{ . }}
      - configMap:
          name: kube-root-ca.crt
          items: [{key: ca.crt, path: ca.crt}]
      - downwardAPI:
          items:
            - path: namespace
              fieldRef: {fieldPath: metadata.namespace}
{{- end -}}

{{/* The plugin's config keys (Multus's names), shared by the node's conf and the controller's flags. */}}
{{- define "plexus.pluginConfig" -}}
{{- $c := dict "namespaceIsolation" .Values.plugin.namespaceIsolation "globalNamespaces" (join "," .Values.plugin.globalNamespaces) "systemNamespaces" .Values.plugin.systemNamespaces "multusNamespace" .Values.plugin.multusNamespace "strictCapabilities" .Values.plugin.strictCapabilities "logLevel" .Values.plugin.logLevel -}}
{{- if .Values.plugin.defaultNetworks }}{{ $_ := set $c "defaultNetworks" .Values.plugin.defaultNetworks }}{{ end -}}
{{- if .Values.plugin.logFile }}{{ $_ := set $c "logFile" .Values.plugin.logFile }}{{ end -}}
{{- $_ := set $c "maxNetworksPerPod" .Values.plugin.maxNetworksPerPod -}}
{{- $_ := set $c "allowPortMappings" .Values.plugin.allowPortMappings -}}
{{- if .Values.plugin.allowedPluginTypes }}{{ $_ := set $c "allowedPluginTypes" .Values.plugin.allowedPluginTypes }}{{ end -}}
{{- toPrettyJson (merge (deepCopy .Values.plugin.extraConfig) $c) -}}
{{- end -}}
