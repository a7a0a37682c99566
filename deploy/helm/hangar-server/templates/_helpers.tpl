{{/*
The chart name, overridable with nameOverride.
*/}}
{{- define "hangar-server.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources (at most 63 characters).
*/}}
{{- define "hangar-server.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "hangar-server.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels.
*/}}
{{- define "hangar-server.labels" -}}
helm.sh/chart: {{ include "hangar-server.chart" . }}
{{ include "hangar-server.selectorLabels" . }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: server
app.kubernetes.io/part-of: hangar
{{- end }}

{{/*
Selector labels (stable across upgrades).
*/}}
{{- define "hangar-server.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hangar-server.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the server runs as.
*/}}
{{- define "hangar-server.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hangar-server.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference.
*/}}
{{- define "hangar-server.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/*
"true" when a PostgreSQL database is configured (else SQLite in data_dir).
*/}}
{{- define "hangar-server.hasDatabase" -}}
{{- if or .Values.database.url .Values.database.existingSecret }}true{{ end }}
{{- end }}

{{/*
"true" when the data directory is on a PersistentVolumeClaim (SQLite only).
*/}}
{{- define "hangar-server.persistent" -}}
{{- if and .Values.persistence.enabled (not (include "hangar-server.hasDatabase" .)) }}true{{ end }}
{{- end }}

{{/*
The Secret holding the database URL.
*/}}
{{- define "hangar-server.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else }}
{{- printf "%s-database" (include "hangar-server.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
"true" when a master key Secret is mounted.
*/}}
{{- define "hangar-server.hasMasterKey" -}}
{{- if or .Values.masterKey.value .Values.masterKey.existingSecret }}true{{ end }}
{{- end }}

{{/*
The Secret holding the master key.
*/}}
{{- define "hangar-server.masterKeySecretName" -}}
{{- if .Values.masterKey.existingSecret }}
{{- .Values.masterKey.existingSecret }}
{{- else }}
{{- printf "%s-master-key" (include "hangar-server.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
The chart's own Secret of provider API keys.
*/}}
{{- define "hangar-server.providersSecretName" -}}
{{- printf "%s-provider-keys" (include "hangar-server.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The URL the server announces (config.public_url, else the Ingress, else the
in-cluster Service).
*/}}
{{- define "hangar-server.publicUrl" -}}
{{- if .Values.config.public_url }}
{{- .Values.config.public_url | trimSuffix "/" }}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- $host := (first .Values.ingress.hosts).host }}
{{- $tls := false }}
{{- range .Values.ingress.tls }}{{ if has $host (default (list) .hosts) }}{{ $tls = true }}{{ end }}{{ end }}
{{- printf "%s://%s" (ternary "https" "http" $tls) $host }}
{{- else }}
{{- printf "http://%s.%s.svc:%v" (include "hangar-server.fullname" .) .Release.Namespace .Values.service.port }}
{{- end }}
{{- end }}

{{/*
Checks the values; renders nothing.
*/}}
{{- define "hangar-server.validate" -}}
{{- $replicas := int .Values.replicaCount }}
{{- if and (gt $replicas 1) (not (include "hangar-server.hasDatabase" .)) }}
{{- fail (printf "replicaCount=%d needs PostgreSQL: several replicas share one database, and the default SQLite lives in one pod. Set database.url (postgres://…) or database.existingSecret, or keep replicaCount=1" $replicas) }}
{{- end }}
{{- if and (include "hangar-server.hasDatabase" .) (not (include "hangar-server.hasMasterKey" .)) }}
{{- fail "with PostgreSQL the master key must be given (every replica and every restart needs the same one, or stored secrets become unreadable): set masterKey.value (e.g. `openssl rand -hex 32`) or masterKey.existingSecret" }}
{{- end }}
{{- if and .Values.masterKey.value (not .Values.masterKey.existingSecret) (not (regexMatch "^[0-9a-fA-F]{64}$" (toString .Values.masterKey.value))) }}
{{- fail "masterKey.value must be 64 hexadecimal characters (32 bytes), e.g. from `openssl rand -hex 32`" }}
{{- end }}
{{- if and .Values.database.url (not .Values.database.existingSecret) (not (regexMatch "^(postgres|postgresql)://" (toString .Values.database.url))) }}
{{- fail "database.url must be a PostgreSQL URL (postgres://user:password@host:5432/hangar); leave it empty for SQLite in the data directory" }}
{{- end }}
{{- if or (hasKey .Values.config "database_url") (hasKey .Values.extraConfig "database_url") }}
{{- fail "database_url is secret and does not go into the config: use database.url or database.existingSecret" }}
{{- end }}
{{- range $name, $_ := .Values.providerKeys.values }}
{{- if not (regexMatch "^[A-Za-z_][A-Za-z0-9_]*$" $name) }}
{{- fail (printf "providerKeys.values: `%s` is not an environment variable name" $name) }}
{{- end }}
{{- end }}
{{- if or (hasKey .Values.config "metrics") (hasKey .Values.extraConfig "metrics") }}
{{- fail "the server config's metrics section is set by the chart: use metrics.enabled, metrics.port, metrics.bearerTokenSecret and metrics.refreshInterval, not config.metrics or extraConfig.metrics" }}
{{- end }}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.httpPort)) }}
{{- fail (printf "metrics.port %v must differ from httpPort: the metrics listener is a port of its own" .Values.metrics.port) }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- with .Values.config.public_url }}
{{- if not (regexMatch "^https?://[^\\s]+$" (toString .)) }}
{{- fail (printf "config.public_url `%s` must start with http:// or https://" .) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The server config file (README "Configuration"), as YAML.
*/}}
{{- define "hangar-server.config" -}}
{{- $cfg := dict }}
{{- range $key, $value := .Values.config }}
{{- if not (or (kindIs "invalid" $value) (and (kindIs "string" $value) (eq $value "")) (and (kindIs "map" $value) (empty $value))) }}
{{- $_ := set $cfg $key $value }}
{{- end }}
{{- end }}
{{- $cfg = mergeOverwrite $cfg (deepCopy .Values.extraConfig) }}
{{- $_ := set $cfg "listen" (printf "0.0.0.0:%v" .Values.httpPort) }}
{{- $_ := set $cfg "data_dir" "/var/lib/hangar" }}
{{- $_ := set $cfg "public_url" (include "hangar-server.publicUrl" .) }}
{{- /* Never write the bootstrap CLI credentials into the pod: the admin key is printed to the log once. */}}
{{- $_ := set $cfg "cli_config_path" "" }}
{{- if include "hangar-server.hasMasterKey" . }}
{{- $_ := set $cfg "master_key_file" "/etc/hangar/master.key" }}
{{- end }}
{{- if .Values.metrics.enabled }}
{{- $metrics := dict "listen" (printf "0.0.0.0:%v" .Values.metrics.port) }}
{{- if .Values.metrics.bearerTokenSecret }}
{{- $_ := set $metrics "bearer_token_file" "/etc/hangar-metrics/token" }}
{{- end }}
{{- with .Values.metrics.refreshInterval }}
{{- $_ := set $metrics "refresh_interval" (toString .) }}
{{- end }}
{{- $_ := set $cfg "metrics" $metrics }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
A map of labels or annotations, every value quoted as a string (so that
`--set podAnnotations.x=true` stays valid).
*/}}
{{- define "hangar-server.stringMap" -}}
{{- range $k, $v := . }}
{{ $k | quote }}: {{ $v | toString | quote }}
{{- end }}
{{- end }}
