{{/*
The chart name, overridable with nameOverride.
*/}}
{{- define "hangar-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources (at most 63 characters).
*/}}
{{- define "hangar-worker.fullname" -}}
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
{{- define "hangar-worker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels.
*/}}
{{- define "hangar-worker.labels" -}}
helm.sh/chart: {{ include "hangar-worker.chart" . }}
{{ include "hangar-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
app.kubernetes.io/part-of: hangar
{{- end }}

{{/*
Selector labels (stable across upgrades).
*/}}
{{- define "hangar-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hangar-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the worker runs as.
*/}}
{{- define "hangar-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hangar-worker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The worker image reference.
*/}}
{{- define "hangar-worker.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/*
The namespace of task Jobs, Pods and Secrets (and of the Role).
*/}}
{{- define "hangar-worker.jobNamespace" -}}
{{- default .Release.Namespace .Values.kubernetes.namespace }}
{{- end }}

{{/*
The Secret holding the worker credential, and its key.
*/}}
{{- define "hangar-worker.credentialSecretName" -}}
{{- if .Values.credential.existingSecret }}
{{- .Values.credential.existingSecret }}
{{- else }}
{{- printf "%s-credential" (include "hangar-worker.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Checks the required values; renders nothing.
*/}}
{{- define "hangar-worker.validate" -}}
{{- $id := required "workerId is required: the worker id runs are sent to with `--host ID` (e.g. --set workerId=build-box)" .Values.workerId | toString }}
{{- if or (gt (len $id) 128) (not (regexMatch "^[^\\s/[:cntrl:]]+$" $id)) }}
{{- fail (printf "workerId `%s` is not a valid worker id: 1 to 128 bytes without whitespace, control characters or `/`" $id) }}
{{- end }}
{{- if hasPrefix "local:" $id }}
{{- fail (printf "workerId `%s`: ids starting with `local:` are reserved for the server" $id) }}
{{- end }}
{{- $url := required "serverUrl is required: the Hangar server's base URL as seen from the worker pod (e.g. --set serverUrl=https://hangar.internal)" .Values.serverUrl | toString }}
{{- if not (regexMatch "^https?://[^\\s]+$" $url) }}
{{- fail (printf "serverUrl `%s` must start with http:// or https://" $url) }}
{{- end }}
{{- if and (not .Values.credential.existingSecret) (not .Values.credential.token) }}
{{- fail "a worker credential is required: set credential.token (a worker token `hw_…` from `hangar worker token create --worker-id ID`) or credential.existingSecret (a Secret holding it)" }}
{{- end }}
{{- if and .Values.credential.token (not .Values.credential.existingSecret) (regexMatch "\\s" (toString .Values.credential.token)) }}
{{- fail "credential.token contains whitespace; paste the token exactly as `hangar worker token create` printed it" }}
{{- end }}
{{- with .Values.kubernetes.imagePullPolicy }}
{{- if not (has . (list "Always" "IfNotPresent" "Never")) }}
{{- fail (printf "kubernetes.imagePullPolicy `%s` must be Always, IfNotPresent or Never" .) }}
{{- end }}
{{- end }}
{{- if not (has .Values.logLevel (list "debug" "info" "warn" "error")) }}
{{- fail (printf "logLevel `%s` must be debug, info, warn or error" .Values.logLevel) }}
{{- end }}
{{- if and .Values.metrics.podMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.podMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- if and .Values.metrics.podMonitor.enabled .Values.metrics.serviceMonitor.enabled }}
{{- fail "enable metrics.podMonitor or metrics.serviceMonitor, not both: each would scrape the worker, so every sample would be counted twice" }}
{{- end }}
{{- end }}

{{/*
The worker config file (PROTOCOL.md §3), as YAML. Empty optional settings are
left out: the worker refuses unknown keys and applies its own defaults.
*/}}
{{- define "hangar-worker.config" -}}
{{- $k := .Values.kubernetes }}
{{- $kube := dict "namespace" (include "hangar-worker.jobNamespace" .) }}
{{- with $k.kubeconfig }}{{ $_ := set $kube "kubeconfig" . }}{{ end }}
{{- with $k.defaultImage }}{{ $_ := set $kube "default_image" . }}{{ end }}
{{- with $k.imagePullPolicy }}{{ $_ := set $kube "image_pull_policy" . }}{{ end }}
{{- with $k.preflightImage }}{{ $_ := set $kube "preflight_image" . }}{{ end }}
{{- with $k.preflightResources }}{{ $_ := set $kube "preflight_resources" . }}{{ end }}
{{- with $k.setupCommand }}{{ $_ := set $kube "setup_command" . }}{{ end }}
{{- with $k.teardownCommand }}{{ $_ := set $kube "teardown_command" . }}{{ end }}
{{- /* Label and annotation values are strings (`--set …=true` gives a bool). */}}
{{- with $k.extraLabels }}{{ $m := dict }}{{ range $key, $v := . }}{{ $_ := set $m $key (toString $v) }}{{ end }}{{ $_ := set $kube "extra_labels" $m }}{{ end }}
{{- with $k.extraAnnotations }}{{ $m := dict }}{{ range $key, $v := . }}{{ $_ := set $m $key (toString $v) }}{{ end }}{{ $_ := set $kube "extra_annotations" $m }}{{ end }}
{{- if not (kindIs "invalid" $k.activeDeadlineSeconds) }}{{ $_ := set $kube "active_deadline_seconds" (int64 $k.activeDeadlineSeconds) }}{{ end }}
{{- if not (kindIs "invalid" $k.ttlSecondsAfterFinished) }}{{ $_ := set $kube "ttl_seconds_after_finished" (int64 $k.ttlSecondsAfterFinished) }}{{ end }}
{{- with $k.workspaceSizeLimit }}{{ $_ := set $kube "workspace_size_limit" (toString .) }}{{ end }}
{{- with $k.unschedulableTimeout }}{{ $_ := set $kube "unschedulable_timeout" (toString .) }}{{ end }}
{{- with $k.podTemplate }}{{ $_ := set $kube "pod_template" . }}{{ end }}
{{- $cfg := dict "worker_id" (toString .Values.workerId) "cleanup" .Values.cleanup "max_concurrent_tasks" (int64 .Values.maxConcurrentTasks) "backend" (dict "kubernetes" $kube) }}
{{- with .Values.idleOnComplete }}{{ $_ := set $cfg "idle_on_complete" (toString .) }}{{ end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
A map of labels or annotations, every value quoted as a string (so that
`--set podAnnotations.x=true` stays valid).
*/}}
{{- define "hangar-worker.stringMap" -}}
{{- range $k, $v := . }}
{{ $k | quote }}: {{ $v | toString | quote }}
{{- end }}
{{- end }}
