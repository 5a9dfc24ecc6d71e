{{/* Chart name. */}}
{{- define "gcw.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "gcw.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gcw.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: stable for the life of a release. */}}
{{- define "gcw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gcw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Standard labels of every resource. */}}
{{- define "gcw.labels" -}}
helm.sh/chart: {{ include "gcw.chart" . }}
{{ include "gcw.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/component: worker
app.kubernetes.io/part-of: geocatalog-worker
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "gcw.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gcw.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gcw.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* terminationGracePeriodSeconds: explicit, or drain deadline + margin; never shorter than the drain. */}}
{{- define "gcw.terminationGracePeriodSeconds" -}}
{{- $drain := int .Values.worker.drainSeconds -}}
{{- $explicit := int .Values.terminationGracePeriodSeconds -}}
{{- if gt $explicit 0 -}}
{{- if le $explicit $drain -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than worker.drainSeconds (%d), or Kubernetes kills draining pods" $explicit $drain) -}}
{{- end -}}
{{- $explicit -}}
{{- else -}}
{{- add $drain (int .Values.terminationGraceMarginSeconds) -}}
{{- end -}}
{{- end -}}

{{/* Name of the TriggerAuthentication. */}}
{{- define "gcw.triggerAuthName" -}}
{{- printf "%s-servicebus" (include "gcw.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified Service Bus namespace for KEDA (which wants the bare name plus a cloud). */}}
{{- define "gcw.serviceBusNamespaceName" -}}
{{- $ns := .Values.serviceBus.namespace -}}
{{- if contains "." $ns -}}
{{- first (splitList "." $ns) -}}
{{- else -}}
{{- $ns -}}
{{- end -}}
{{- end -}}

{{/* KEDA maxReplicaCount, capped for session-enabled entities. */}}
{{- define "gcw.kedaMaxReplicas" -}}
{{- $max := int .Values.keda.maxReplicaCount -}}
{{- $sessions := int .Values.serviceBus.sessions.expectedActiveSessions -}}
{{- if and .Values.serviceBus.sessions.enabled (gt $sessions 0) -}}
{{- $conc := int .Values.serviceBus.sessions.maxSessions -}}
{{- $cap := div (sub (add $sessions $conc) 1) $conc -}}
{{- $cap = max $cap (max 1 (int .Values.keda.minReplicaCount)) -}}
{{- min $max $cap -}}
{{- else -}}
{{- $max -}}
{{- end -}}
{{- end -}}

{{/* The most pods that can run at once, and which value says so: "<n> (<value>)". */}}
{{- define "gcw.maxPods" -}}
{{- if .Values.keda.enabled -}}
{{- include "gcw.kedaMaxReplicas" . }} (keda.maxReplicaCount)
{{- else if .Values.hpa.enabled -}}
{{- .Values.hpa.maxReplicas }} (hpa.maxReplicas)
{{- else -}}
{{- .Values.replicaCount }} (replicaCount)
{{- end -}}
{{- end -}}

{{/* Every pod takes geocatalog.budgetPerPod calls/s when it is set: together they must stay within geocatalog.budget. */}}
{{- define "gcw.validateBudget" -}}
{{- if .Values.geocatalog.budgetPerPod -}}
{{- $pods := int (first (splitList " " (include "gcw.maxPods" .))) -}}
{{- $total := mulf .Values.geocatalog.budgetPerPod $pods -}}
{{- if gt $total (float64 .Values.geocatalog.budget) -}}
{{- fail (printf "geocatalog.budgetPerPod (%v) x the most pods %s = %v calls/s exceeds geocatalog.budget (%v): lower budgetPerPod or the replica maximum (or raise geocatalog.budget if the catalog allows more)" .Values.geocatalog.budgetPerPod (include "gcw.maxPods" .) $total .Values.geocatalog.budget) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Cross-field checks the JSON schema cannot express clearly. */}}
{{- define "gcw.validate" -}}
{{- $sb := .Values.serviceBus -}}
{{- if and (not $sb.namespace) (not $sb.connectionStringSecret.name) -}}
{{- fail "set serviceBus.namespace (workload identity) or serviceBus.connectionStringSecret.name (an existing Secret)" -}}
{{- end -}}
{{- if and $sb.namespace $sb.connectionStringSecret.name -}}
{{- fail "set only one of serviceBus.namespace and serviceBus.connectionStringSecret.name" -}}
{{- end -}}
{{- if and $sb.requestQueue (or $sb.requestTopic $sb.requestSubscription) -}}
{{- fail "set either serviceBus.requestQueue or serviceBus.requestTopic with serviceBus.requestSubscription, not both" -}}
{{- end -}}
{{- if and (not $sb.requestQueue) (not (and $sb.requestTopic $sb.requestSubscription)) -}}
{{- fail "set serviceBus.requestQueue, or serviceBus.requestTopic together with serviceBus.requestSubscription" -}}
{{- end -}}
{{- if not $sb.replyQueue -}}
{{- fail "set serviceBus.replyQueue (where results are published)" -}}
{{- end -}}
{{- if not .Values.geocatalog.url -}}
{{- fail "set geocatalog.url (the GeoCatalog endpoint)" -}}
{{- end -}}
{{- include "gcw.validateBudget" . -}}
{{- if and .Values.workloadIdentity.enabled $sb.namespace (not .Values.workloadIdentity.clientId) -}}
{{- fail "set workloadIdentity.clientId (the managed identity federated with the ServiceAccount), or workloadIdentity.enabled=false" -}}
{{- end -}}
{{- if and .Values.tracing.enabled (not .Values.tracing.otlpEndpoint) (not .Values.tracing.azureMonitor.connectionStringSecret.name) -}}
{{- fail "tracing.enabled needs tracing.otlpEndpoint (an OTLP collector) or tracing.azureMonitor.connectionStringSecret.name" -}}
{{- end -}}
{{- if and .Values.keda.enabled .Values.hpa.enabled -}}
{{- fail "keda.enabled and hpa.enabled are mutually exclusive: KEDA creates its own HPA" -}}
{{- end -}}
{{- if and .Values.keda.scaledJob.enabled (not .Values.keda.enabled) -}}
{{- fail "keda.scaledJob.enabled needs keda.enabled=true (the ScaledJob is KEDA's, with its trigger and authentication)" -}}
{{- end -}}
{{- if .Values.keda.enabled -}}
{{- if gt (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount) -}}
{{- fail (printf "keda.minReplicaCount (%d) must not exceed keda.maxReplicaCount (%d)" (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount)) -}}
{{- end -}}
{{- if and (eq .Values.keda.authentication.mode "workloadIdentity") (not $sb.namespace) -}}
{{- fail "keda.authentication.mode=workloadIdentity needs serviceBus.namespace" -}}
{{- end -}}
{{- if and (eq .Values.keda.authentication.mode "workloadIdentity") (not (or .Values.keda.authentication.identityId .Values.workloadIdentity.clientId)) -}}
{{- fail "keda.authentication.mode=workloadIdentity needs keda.authentication.identityId or workloadIdentity.clientId" -}}
{{- end -}}
{{- if and (eq .Values.keda.authentication.mode "secret") (not .Values.keda.authentication.secretName) -}}
{{- fail "keda.authentication.mode=secret needs keda.authentication.secretName (an existing Secret)" -}}
{{- end -}}
{{- if and (eq .Values.keda.cloud "Private") (not .Values.keda.endpointSuffix) -}}
{{- fail "keda.cloud=Private needs keda.endpointSuffix" -}}
{{- end -}}
{{- end -}}
{{- if .Values.hpa.enabled -}}
{{- if gt (int .Values.hpa.minReplicas) (int .Values.hpa.maxReplicas) -}}
{{- fail (printf "hpa.minReplicas (%d) must not exceed hpa.maxReplicas (%d)" (int .Values.hpa.minReplicas) (int .Values.hpa.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
This pod's GeoCatalog budget (calls/s): geocatalog.budgetPerPod when set, else geocatalog.budget split over the most
pods there can be (KEDA or HPA maximum, else replicaCount), so that budget per pod x replicas never exceeds it.
*/}}
{{- define "gcw.budgetPerPod" -}}
{{- $g := .Values.geocatalog -}}
{{- if $g.budgetPerPod -}}
{{- $g.budgetPerPod -}}
{{- else -}}
{{- $pods := int (first (splitList " " (include "gcw.maxPods" .))) -}}
{{- printf "%.3f" (divf $g.budget (max 1 $pods)) -}}
{{- end -}}
{{- end -}}
