{{/*
Names the rest of Tether relies on: clients find the manager through the Service "tether-manager"
(helper/cluster/manager_dial.py), agents dial tether-manager.<namespace>.svc (manager/api/sidecar.py) and the
manager reads the ConfigMap "tether-manager" (its --config-map default). So one release per namespace, and
these names do not follow the release name.
*/}}
{{- define "tether-manager.name" -}}tether-manager{{- end }}

{{/* Cluster-scoped objects are shared by every namespace: the namespace makes their names unique. */}}
{{- define "tether-manager.clusterName" -}}tether-manager-{{ .Release.Namespace }}{{- end }}

{{- define "tether-manager.selectorLabels" -}}
app.kubernetes.io/name: tether-manager
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tether-manager.labels" -}}
{{ include "tether-manager.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "tether-manager.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The manager's settings (manager/config.py keys), as the values.yaml document of its ConfigMap. */}}
{{- define "tether-manager.settings" -}}
client: {{ toJson .Values.client }}
podCIDRStrategy: {{ toJson .Values.podCIDRStrategy }}
podCIDRs: {{ toJson .Values.podCIDRs }}
serviceCIDR: {{ toJson .Values.serviceCIDR }}
clusterDomain: {{ toJson .Values.clusterDomain }}
tunnelMuxPort: {{ toJson .Values.tunnelMuxPort }}
tunnel: {{ toJson .Values.tunnel }}
limits: {{ toJson .Values.limits }}
{{- end }}
