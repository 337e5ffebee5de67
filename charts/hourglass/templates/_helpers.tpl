{{/*
Names, labels and the settings every hourglass container shares.
*/}}

{{- define "hourglass.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or the release name alone when it already holds the chart name. */}}
{{- define "hourglass.fullname" -}}
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

{{/* The name of one component's objects: (dict "root" $ "component" "api"). Kept short
enough (52) for a StatefulSet pod's controller-revision-hash label. */}}
{{- define "hourglass.componentName" -}}
{{- printf "%s-%s" (include "hourglass.fullname" .root | trunc (int (sub 51 (len .component))) | trimSuffix "-") .component }}
{{- end }}

{{/* Cluster-scoped objects carry the namespace too, so two releases of the same name in two
namespaces do not collide. */}}
{{- define "hourglass.clusterName" -}}
{{- printf "%s-%s-%s" .root.Release.Namespace (include "hourglass.fullname" .root) .component | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "hourglass.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hourglass.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hourglass.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Standard labels: (dict "root" $ "component" "api"). */}}
{{- define "hourglass.labels" -}}
helm.sh/chart: {{ include "hourglass.chart" .root }}
{{ include "hourglass.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: hourglass
{{- end }}

{{- define "hourglass.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "hourglass.serviceAccountName" -}}
{{- include "hourglass.componentName" . }}
{{- end }}

{{- define "hourglass.apiAddress" -}}
{{- printf "%s.%s.svc:%d" (include "hourglass.componentName" (dict "root" . "component" "api")) .Release.Namespace (int .Values.api.service.port) }}
{{- end }}

{{/* Namespaces the workers run Jobs in; the first is the worker's --namespace. */}}
{{- define "hourglass.jobNamespaces" -}}
{{- if .Values.worker.jobNamespaces }}
{{- .Values.worker.jobNamespaces | uniq | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/* The Secret and key holding HOURGLASS_DATABASE_URL. */}}
{{- define "hourglass.databaseSecretName" -}}
{{- if and (not .Values.postgresql.enabled) .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else }}
{{- include "hourglass.componentName" (dict "root" . "component" "database") }}
{{- end }}
{{- end }}

{{- define "hourglass.databaseSecretKey" -}}
{{- if and (not .Values.postgresql.enabled) .Values.database.existingSecret }}
{{- .Values.database.existingSecretKey }}
{{- else -}}
url
{{- end }}
{{- end }}

{{/* Fails the render when the external stores are not given, or when a real cluster (one
`lookup` reaches: never `helm template`, which has none and assumes some old version) is older
than the 1.27 the chart needs. */}}
{{- define "hourglass.validate" -}}
{{- if and (semverCompare "<1.27.0-0" .Capabilities.KubeVersion.Version) (lookup "v1" "Namespace" "" .Release.Namespace) }}
{{- fail (printf "Kubernetes %s is too old for hourglass: it needs 1.27 or later (gRPC probes, CRD validation rules)" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- if and (not .Values.postgresql.enabled) (not .Values.database.url) (not .Values.database.existingSecret) }}
{{- fail "postgresql.enabled is false: set database.url or database.existingSecret" }}
{{- end }}
{{- if and (not .Values.etcd.enabled) (not .Values.etcd.endpoints) }}
{{- fail "etcd.enabled is false: set etcd.endpoints (HOST:PORT[,HOST:PORT])" }}
{{- end }}
{{- if and .Values.cases.enabled (not .Values.cases.existingSecret) (not .Values.redis.enabled) (not .Values.redis.url) }}
{{- fail "redis.enabled is false: set redis.url (redis://HOST:PORT/DB) or cases.existingSecret" }}
{{- end }}
{{- end }}

{{/* "true" when the operator serves the cases: cases.enabled, and a database URL the chart
can put in the cases' Secret (the bundled PostgreSQL or database.url) or a Secret of the
user's (cases.existingSecret). With only database.existingSecret the chart cannot read the
URL, so the cases stay off (NOTES.txt says so). */}}
{{- define "hourglass.casesOn" -}}
{{- if and .Values.cases.enabled (or .Values.cases.existingSecret .Values.postgresql.enabled .Values.database.url) }}true{{ end }}
{{- end }}

{{/* The Secret with database-url and redis-url for the cases' servers. */}}
{{- define "hourglass.casesSecretName" -}}
{{- default (include "hourglass.componentName" (dict "root" . "component" "cases")) .Values.cases.existingSecret }}
{{- end }}

{{/* The case kinds the chart installs (crds/), as plurals: the operator's RBAC names them. */}}
{{- define "hourglass.casePlurals" -}}
{{- list "leaderboards" "urlshorteners" "filesyncs" "metricspipelines" "feeds" | toJson }}
{{- end }}

{{/* Every member of the bundled etcd, each by its own DNS name when there are several, so
that the components fail over from one to the next (hourglass/etcd_endpoints.py). */}}
{{- define "hourglass.etcdEndpoints" -}}
{{- if .Values.etcd.enabled }}
{{- $name := include "hourglass.componentName" (dict "root" . "component" "etcd") }}
{{- $replicas := int (.Values.etcd.replicas | default 1) }}
{{- if eq $replicas 1 }}
{{- printf "%s.%s.svc:2379" $name .Release.Namespace }}
{{- else }}
{{- $members := list }}
{{- range $index := until $replicas }}
{{- $members = append $members (printf "%s-%d.%s-hl.%s.svc:2379" $name $index $name $.Release.Namespace) }}
{{- end }}
{{- join "," $members }}
{{- end }}
{{- else }}
{{- .Values.etcd.endpoints }}
{{- end }}
{{- end }}

{{/* Environment variables: (dict "root" $ "noDatabase" false "etcd" true "artifacts" true). */}}
{{- define "hourglass.env" -}}
{{- $root := .root -}}
- name: HOURGLASS_LOG_LEVEL
  value: {{ $root.Values.logLevel | quote }}
{{- if not .noDatabase }}
- name: HOURGLASS_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "hourglass.databaseSecretName" $root }}
      key: {{ include "hourglass.databaseSecretKey" $root }}
{{- end }}
{{- if .etcd }}
- name: HOURGLASS_ETCD_ENDPOINTS
  value: {{ include "hourglass.etcdEndpoints" $root | quote }}
- name: HOURGLASS_ETCD_PREFIX
  value: {{ $root.Values.etcd.prefix | quote }}
{{- end }}
{{- if and .artifacts $root.Values.artifacts.url }}
- name: HOURGLASS_ARTIFACTS
  value: {{ $root.Values.artifacts.url | quote }}
{{- end }}
{{- if include "hourglass.servesHttp" . }}
- name: HOURGLASS_METRICS_LISTEN
  value: {{ printf "0.0.0.0:%d" (int $root.Values.metrics.port) | quote }}
{{- end }}
{{- /* The root filesystem is read-only; /tmp is an emptyDir. */}}
- name: HOME
  value: /tmp
{{- end }}

{{/* The long-running components: each serves /metrics, /healthz and /readyz on the metrics
port (hourglass/health.py), which their probes call. */}}
{{- define "hourglass.httpComponents" -}}
{{- list "api" "producer" "worker" "claimer" "operator" | toJson }}
{{- end }}

{{- define "hourglass.servesHttp" -}}
{{- if has .component (include "hourglass.httpComponents" .root | fromJsonArray) }}true{{ end }}
{{- end }}

{{/* Whether a component's metrics are scraped (annotations, ServiceMonitor, PodMonitor);
the port serves the probes either way. */}}
{{- define "hourglass.hasMetrics" -}}
{{- if and .root.Values.metrics.enabled (include "hourglass.servesHttp" .) }}true{{ end }}
{{- end }}

{{/* Probes on the metrics port: startup and liveness on /healthz (the event loop turns; a
database outage is not a reason to restart), readiness on /readyz (PostgreSQL, etcd, the
worker's lease, the operator's API). `api` replaces the liveness probes with gRPC. */}}
{{- define "hourglass.httpProbes" -}}
{{- $p := .root.Values.probes -}}
startupProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 2
  failureThreshold: {{ $p.startupFailureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.readinessFailureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.livenessFailureThreshold }}
{{- end }}

{{/* topologySpreadConstraints of one component's pods, one per topology.keys entry. */}}
{{- define "hourglass.topologySpread" -}}
{{- $spread := .root.Values.topologySpread -}}
{{- if $spread.enabled }}
topologySpreadConstraints:
  {{- range $spread.keys }}
  - maxSkew: {{ $spread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $spread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "hourglass.selectorLabels" $ | nindent 8 }}
    matchLabelKeys: ["pod-template-hash"]
  {{- end }}
{{- end }}
{{- end }}

{{/* The pod spec settings every hourglass pod shares. */}}
{{- define "hourglass.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "hourglass.podMetadata" -}}
labels:
  {{- include "hourglass.selectorLabels" . | nindent 2 }}
  {{- with .root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $metrics := include "hourglass.hasMetrics" . }}
{{- if or .root.Values.podAnnotations .annotations $metrics }}
annotations:
  {{- if $metrics }}
  prometheus.io/scrape: "true"
  prometheus.io/port: {{ .root.Values.metrics.port | quote }}
  prometheus.io/path: /metrics
  {{- end }}
  {{- with .root.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with .annotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "hourglass.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end }}

{{- define "hourglass.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* What the operator does with ScheduledJobs, in a Role or the ClusterRole. */}}
{{- define "hourglass.operatorRules" -}}
- apiGroups: ["hourglass.io"]
  resources: ["scheduledjobs"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["hourglass.io"]
  resources: ["scheduledjobs/status", "scheduledjobs/finalizers"]
  verbs: ["get", "patch", "update"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if include "hourglass.casesOn" . }}
{{- $plurals := include "hourglass.casePlurals" . | fromJsonArray }}
# The cases' resources, and what they own (server-side apply creates through patch; pruning
# and a resource's deletion delete).
- apiGroups: ["hourglass.io"]
  resources: {{ $plurals | toJson }}
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["hourglass.io"]
  resources:
    {{- range $plurals }}
    - {{ printf "%s/status" . }}
    - {{ printf "%s/finalizers" . }}
    {{- end }}
  verbs: ["get", "patch", "update"]
- apiGroups: ["hourglass.io"]
  resources: ["scheduledjobs"]
  verbs: ["create", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "create", "patch", "delete"]
{{- end }}
{{- end }}

{{- define "hourglass.operatorTokenSecret" -}}
{{- default (include "hourglass.componentName" (dict "root" . "component" "operator-token")) .Values.operator.token.existingSecret }}
{{- end }}

{{/* The job pods' ServiceAccount: worker.jobServiceAccount, or <fullname>-job. */}}
{{- define "hourglass.jobServiceAccountName" -}}
{{- default (include "hourglass.componentName" (dict "root" . "component" "job")) .Values.worker.jobServiceAccount }}
{{- end }}

{{/* A peer for NetworkPolicies: any pod, in any namespace, that is not a job pod (the
executor labels each job pod hourglass.io/run; a tenant cannot choose a pod's labels). */}}
{{- define "hourglass.notJobPods" -}}
- namespaceSelector: {}
  podSelector:
    matchExpressions:
      - key: hourglass.io/run
        operator: DoesNotExist
{{- end }}

{{/* A peer: the release's own components named in .components, never a job pod. */}}
{{- define "hourglass.componentPods" -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ include "hourglass.name" .root }}
      app.kubernetes.io/instance: {{ .root.Release.Name }}
    matchExpressions:
      - key: app.kubernetes.io/component
        operator: In
        values: {{ .components | toJson }}
      - key: hourglass.io/run
        operator: DoesNotExist
{{- end }}

{{/* A peer: the cases' server pods in the release's namespace (the operator labels their pod
templates hourglass.io/case-server), never a job pod. */}}
{{- define "hourglass.caseServerPods" -}}
- podSelector:
    matchExpressions:
      - key: hourglass.io/case-server
        operator: Exists
      - key: hourglass.io/run
        operator: DoesNotExist
{{- end }}

{{/* Whether the operator calls the API with its own projected service account token. */}}
{{- define "hourglass.operatorUsesServiceAccount" -}}
{{- if and .Values.operator.enabled .Values.operator.token.fromServiceAccount (not .Values.api.insecure) .Values.api.kubernetesAuth.enabled }}true{{ end }}
{{- end }}

{{/* The service accounts whose own tokens the API accepts (TokenReview), as a JSON map of
"NAMESPACE/NAME" to hourglass namespace: api.kubernetesAuth.serviceAccounts, plus the
operator's. Empty map: the API reviews no Kubernetes token. */}}
{{- define "hourglass.apiServiceAccounts" -}}
{{- $accounts := dict }}
{{- if and .Values.api.kubernetesAuth.enabled (not .Values.api.insecure) }}
{{- $accounts = deepCopy .Values.api.kubernetesAuth.serviceAccounts }}
{{- if include "hourglass.operatorUsesServiceAccount" . }}
{{- $operator := printf "%s/%s" .Release.Namespace (include "hourglass.componentName" (dict "root" . "component" "operator")) }}
{{- $_ := set $accounts $operator .Values.operator.token.namespace }}
{{- end }}
{{- end }}
{{- $accounts | toJson }}
{{- end }}
