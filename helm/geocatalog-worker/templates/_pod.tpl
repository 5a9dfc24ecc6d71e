{{/* The worker's pod template: the Deployment's, or the Job's of the KEDA ScaledJob (keda.scaledJob). */}}
{{- define "gcw.podTemplate" -}}
metadata:
  annotations:
    checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  labels:
    {{- include "gcw.labels" . | nindent 4 }}
    {{- if .Values.workloadIdentity.enabled }}
    azure.workload.identity/use: "true"
    {{- end }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- if .Values.keda.scaledJob.enabled }}
  restartPolicy: Never  # a failed run is a new pod of the Job (backoffLimit), not a restart in place
  {{- end }}
  serviceAccountName: {{ include "gcw.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
  terminationGracePeriodSeconds: {{ include "gcw.terminationGracePeriodSeconds" . }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . | quote }}
  {{- end }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: worker
      image: {{ include "gcw.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      # --sessions is a flag, not GCW_SESSIONS: the worker's on/off flag has no environment variable of its own.
      args: {{ include "gcw.workerArgs" . }}
      ports:
        - name: health
          containerPort: {{ .Values.worker.healthPort }}
          protocol: TCP
      envFrom:
        - configMapRef:
            name: {{ include "gcw.fullname" . }}
        {{- with .Values.extraEnvFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      env:
        - name: TMPDIR
          value: /tmp
        {{- with .Values.serviceBus.connectionStringSecret.name }}
        - name: GCW_SERVICEBUS_CONNECTION_STRING
          valueFrom:
            secretKeyRef:
              name: {{ . | quote }}
              key: {{ $.Values.serviceBus.connectionStringSecret.key | quote }}
        {{- end }}
        {{- with .Values.geocatalog.sasSubscriptionKeySecret.name }}
        - name: GCW_SAS_SUBSCRIPTION_KEY
          valueFrom:
            secretKeyRef:
              name: {{ . | quote }}
              key: {{ $.Values.geocatalog.sasSubscriptionKeySecret.key | quote }}
        {{- end }}
        {{- if .Values.tracing.enabled }}
        {{- with .Values.tracing.azureMonitor.connectionStringSecret.name }}
        - name: APPLICATIONINSIGHTS_CONNECTION_STRING
          valueFrom:
            secretKeyRef:
              name: {{ . | quote }}
              key: {{ $.Values.tracing.azureMonitor.connectionStringSecret.key | quote }}
        {{- end }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.probes.startup }}
      {{- if .enabled }}
      startupProbe:
        httpGet:
          path: /healthz
          port: health
        periodSeconds: {{ .periodSeconds }}
        timeoutSeconds: {{ .timeoutSeconds }}
        failureThreshold: {{ .failureThreshold }}
      {{- end }}
      {{- end }}
      {{- with .Values.probes.liveness }}
      {{- if .enabled }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: health
        initialDelaySeconds: {{ .initialDelaySeconds }}
        periodSeconds: {{ .periodSeconds }}
        timeoutSeconds: {{ .timeoutSeconds }}
        failureThreshold: {{ .failureThreshold }}
      {{- end }}
      {{- end }}
      {{- with .Values.probes.readiness }}
      {{- if .enabled }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: health
        initialDelaySeconds: {{ .initialDelaySeconds }}
        periodSeconds: {{ .periodSeconds }}
        timeoutSeconds: {{ .timeoutSeconds }}
        failureThreshold: {{ .failureThreshold }}
      {{- end }}
      {{- end }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ .Values.tmpSizeLimit }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- range .Values.topologySpreadConstraints }}
    - {{- toYaml (omit . "labelSelector") | nindent 6 }}
      labelSelector:
        {{- if .labelSelector }}
        {{- toYaml .labelSelector | nindent 8 }}
        {{- else }}
        matchLabels:
          {{- include "gcw.selectorLabels" $ | nindent 10 }}
        {{- end }}
    {{- end }}
  {{- end }}
{{- end -}}

{{/* The worker's arguments: run, --sessions for session entities, --burst in a ScaledJob's Jobs. */}}
{{- define "gcw.workerArgs" -}}
{{- $args := list "run" -}}
{{- if .Values.serviceBus.sessions.enabled -}}
{{- $args = append $args "--sessions" -}}
{{- end -}}
{{- if .Values.keda.scaledJob.enabled -}}
{{- $args = concat $args (list "--burst" (toString .Values.keda.scaledJob.burstSeconds)) -}}
{{- end -}}
{{- toJson $args -}}
{{- end -}}
