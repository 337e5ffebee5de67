{{/*
One hourglass component as a Deployment:
  (dict "root" $ "component" "producer" "config" .Values.producer "args" (list ...)
        "noDatabase" false "etcd" false "artifacts" false "kubernetesAccess" false
        "env" "<more env, YAML>" "ports" "<YAML>" "probes" "<YAML>" "terminationGrace" 30)
A component that serves HTTP (hourglass.servesHttp) gets the /healthz and /readyz probes
unless "probes" replaces them.
*/}}
{{- define "hourglass.deployment" -}}
{{- $root := .root -}}
{{- $name := include "hourglass.componentName" . -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "hourglass.labels" . | nindent 4 }}
spec:
  {{- if not (dig "autoscaling" "enabled" false .config) }}
  replicas: {{ .config.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "hourglass.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      {{- include "hourglass.podMetadata" (dict "root" $root "component" .component "annotations" .podAnnotations) | nindent 6 }}
    spec:
      serviceAccountName: {{ $name }}
      automountServiceAccountToken: {{ .kubernetesAccess | default false }}
      terminationGracePeriodSeconds: {{ .terminationGrace | default 30 }}
      {{- include "hourglass.podCommon" $root | trim | nindent 6 }}
      {{- with include "hourglass.topologySpread" . | trim }}
      {{- . | nindent 6 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "hourglass.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            {{- range .args }}
            - {{ . | quote }}
            {{- end }}
            {{- range .config.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          env:
            {{- include "hourglass.env" . | nindent 12 }}
            {{- with .env }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with .config.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- $metrics := include "hourglass.servesHttp" . }}
          {{- if or .ports $metrics }}
          ports:
            {{- with .ports }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- if $metrics }}
            - name: metrics
              containerPort: {{ $root.Values.metrics.port }}
              protocol: TCP
            {{- end }}
          {{- end }}
          {{- if $root.Values.probes.enabled }}
          {{- with (default (include "hourglass.httpProbes" .) .probes) }}
          {{- . | nindent 10 }}
          {{- end }}
          {{- end }}
          resources:
            {{- toYaml .config.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "hourglass.tmpMount" $root | nindent 12 }}
            {{- with .mounts }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "hourglass.tmpVolume" $root | nindent 8 }}
        {{- with .volumes }}
        {{- . | nindent 8 }}
        {{- end }}
{{- end }}

{{/* A component's ServiceAccount: (dict "root" $ "component" "api" "kubernetesAccess" false). */}}
{{- define "hourglass.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "hourglass.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "hourglass.labels" . | nindent 4 }}
  {{- with .root.Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: {{ .kubernetesAccess | default false }}
{{- end }}
