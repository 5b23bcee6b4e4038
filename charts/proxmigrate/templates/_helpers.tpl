{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "proxmigrate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name unless it already holds the chart name. */}}
{{- define "proxmigrate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "proxmigrate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "proxmigrate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "proxmigrate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "proxmigrate.labels" -}}
helm.sh/chart: {{ include "proxmigrate.chart" . }}
{{ include "proxmigrate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "proxmigrate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "proxmigrate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Namespaces the operator watches in namespaced mode (default: the release namespace). */}}
{{- define "proxmigrate.watchNamespaces" -}}
{{- if .Values.watch.namespaces }}
{{- toJson .Values.watch.namespaces }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the PVE API token. */}}
{{- define "proxmigrate.credentialsSecretName" -}}
{{- if .Values.proxmox.credentials.existingSecret }}
{{- .Values.proxmox.credentials.existingSecret }}
{{- else }}
{{- printf "%s-pve-token" (include "proxmigrate.fullname" .) }}
{{- end }}
{{- end }}

{{/* Whether a PVE token Secret is in play at all (created or existing). */}}
{{- define "proxmigrate.hasCredentials" -}}
{{- if or .Values.proxmox.credentials.create .Values.proxmox.credentials.existingSecret }}true{{ end }}
{{- end }}

{{/* Name of the Secret holding PVE's CA bundle, if any. */}}
{{- define "proxmigrate.caSecretName" -}}
{{- if .Values.proxmox.caBundle.existingSecret }}
{{- .Values.proxmox.caBundle.existingSecret }}
{{- else if .Values.proxmox.caBundle.pem }}
{{- printf "%s-pve-ca" (include "proxmigrate.fullname" .) }}
{{- end }}
{{- end }}

{{/* Secret names the operator may read: the chart's token and CA Secrets plus rbac.secretNames. */}}
{{- define "proxmigrate.readableSecrets" -}}
{{- $names := .Values.rbac.secretNames }}
{{- if include "proxmigrate.hasCredentials" . }}
{{- $names = append $names (include "proxmigrate.credentialsSecretName" .) }}
{{- end }}
{{- with include "proxmigrate.caSecretName" . }}
{{- $names = append $names . }}
{{- end }}
{{- toJson (uniq $names) }}
{{- end }}

{{- define "proxmigrate.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The rules on proxmigrate's own kinds, events and the named Secrets (dict "secrets" LIST). */}}
{{- define "proxmigrate.rules" -}}
- apiGroups: [proxmigrate.dev]
  resources: [proxmoxclusters, vmplacements, nodemaintenances]
  verbs: [get, list, watch, patch]
- apiGroups: [proxmigrate.dev]
  resources: [nodedrains, vmmigrations]
  verbs: [get, list, watch, patch, create, delete]
- apiGroups: [proxmigrate.dev]
  resources: [proxmoxclusters/status, nodedrains/status, vmplacements/status, vmmigrations/status, nodemaintenances/status]
  verbs: [get, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- if .secrets }}
- apiGroups: [""]
  resources: [secrets]
  resourceNames: {{ toJson .secrets }}
  verbs: [get]
{{- end }}
{{- end }}
