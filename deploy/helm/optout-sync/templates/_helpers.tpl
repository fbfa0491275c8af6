{{/*
Chart name, truncated to 63 characters (DNS label).
*/}}
{{- define "optout-sync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Release-qualified name, truncated so that "<fullname>-reconciler-metrics"
still fits a DNS label.
*/}}
{{- define "optout-sync.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "optout-sync.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels (helm.sh/docs/chart_best_practices/labels).
*/}}
{{- define "optout-sync.labels" -}}
helm.sh/chart: {{ include "optout-sync.chart" . }}
{{ include "optout-sync.selectorLabels" . }}
app.kubernetes.io/version: {{ include "optout-sync.versionLabel" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: optout-sync
{{- end }}

{{- define "optout-sync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "optout-sync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one component: include "optout-sync.componentLabels" (list $ "pusher")
*/}}
{{- define "optout-sync.componentLabels" -}}
{{ include "optout-sync.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "optout-sync.componentSelectorLabels" -}}
{{ include "optout-sync.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "optout-sync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "optout-sync.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The version label: the tag, or the digest's first 12 hex digits when the
image is pinned by digest alone (a label cannot hold "@sha256:...").
*/}}
{{- define "optout-sync.versionLabel" -}}
{{- $tag := include "optout-sync.tag" . }}
{{- $v := splitList "@" $tag | first }}
{{- if not $v }}
{{- $v = splitList ":" $tag | last | trunc 12 }}
{{- end }}
{{- regexReplaceAll "[^A-Za-z0-9_.-]" $v "_" | trunc 63 | trimAll "_.-" }}
{{- end }}

{{- define "optout-sync.tag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
Image of a service: include "optout-sync.image" (list $ "pusher")
*/}}
{{- define "optout-sync.image" -}}
{{- $ := index . 0 }}
{{- $tag := include "optout-sync.tag" $ }}
{{- if hasPrefix "@" $tag }}
{{- printf "%s/%s%s" $.Values.image.registry (index . 1) $tag }}
{{- else }}
{{- printf "%s/%s:%s" $.Values.image.registry (index . 1) $tag }}
{{- end }}
{{- end }}

{{- define "optout-sync.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Values that cannot be expressed in values.schema.json; rendering fails with a
message naming the value.
*/}}
{{- define "optout-sync.validate" -}}
{{- $a := .Values.nats.auth }}
{{- if and $a.existingSecret (not (or $a.credsKey $a.nkeySeedKey $a.userKey $a.passwordKey $a.tokenKey)) }}
{{- fail "nats.auth.existingSecret is set: set the key(s) to use from it (credsKey, nkeySeedKey, userKey + passwordKey or tokenKey)" }}
{{- end }}
{{- if and (not $a.existingSecret) (or $a.credsKey $a.nkeySeedKey $a.userKey $a.passwordKey $a.tokenKey) }}
{{- fail "nats.auth: keys are set but nats.auth.existingSecret is empty" }}
{{- end }}
{{- if ne (empty $a.userKey) (empty $a.passwordKey) }}
{{- fail "nats.auth: userKey and passwordKey go together" }}
{{- end }}
{{- $t := .Values.nats.tls }}
{{- if ne (empty $t.certKey) (empty $t.keyKey) }}
{{- fail "nats.tls: certKey and keyKey go together (mutual TLS)" }}
{{- end }}
{{- if and (not $t.existingSecret) (or $t.certKey $t.keyKey) }}
{{- fail "nats.tls: certKey/keyKey are set but nats.tls.existingSecret is empty" }}
{{- end }}
{{- if and .Values.redis.auth.existingSecret (not .Values.redis.auth.passwordKey) }}
{{- fail "redis.auth.existingSecret is set: set redis.auth.passwordKey" }}
{{- end }}
{{- if and .Values.redis.tls.existingSecret (not (hasPrefix "rediss://" .Values.redis.url)) }}
{{- fail "redis.tls.existingSecret is set but redis.url is not rediss://" }}
{{- end }}
{{- if and .Values.admin.auth.existingSecret (not (or .Values.admin.auth.tokenKey .Values.admin.auth.usersKey)) }}
{{- fail "admin.auth.existingSecret is set: set admin.auth.tokenKey and/or admin.auth.usersKey" }}
{{- end }}
{{- $seen := dict }}
{{- range .Values.salesforce.tenants }}
{{- if hasKey $seen .name }}
{{- fail (printf "salesforce.tenants: tenant %q is listed twice" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- end }}
{{- if and .Values.pusher.autoscaling.enabled (gt (int .Values.pusher.autoscaling.minReplicas) (int .Values.pusher.autoscaling.maxReplicas)) }}
{{- fail "pusher.autoscaling: minReplicas is above maxReplicas" }}
{{- end }}
{{- end }}

{{/*
Config map data from a map of variable names: empty values are left out so
the service's default applies.
*/}}
{{- define "optout-sync.envData" -}}
{{- range $k, $v := . }}
{{- if ne (toString $v) "" }}
{{ $k }}: {{ toString $v | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
ConfigMap data of the pusher or the reconciler: (list $ "pusher"). The
Deployments hash it, so a settings change rolls only that component.
*/}}
{{- define "optout-sync.configData" -}}
{{- $ := index . 0 }}
{{- $component := index . 1 }}
OPTOUT_ADMIN_ADDR: {{ printf ":%d" (int $.Values.admin.port) | quote }}
OPTOUT_SF_CREDENTIALS_DIR: {{ $.Values.salesforce.credentialsDir | quote }}
{{- with include "optout-sync.envData" $.Values.config | trim }}
{{ . }}
{{- end }}
{{- with include "optout-sync.envData" (index $.Values $component).config | trim }}
{{ . }}
{{- end }}
{{- with include "optout-sync.otelData" $ | trim }}
{{ . }}
{{- end }}
{{- end }}

{{/*
OpenTelemetry variables (ConfigMap data) shared by every workload.
*/}}
{{- define "optout-sync.otelData" -}}
{{- with .Values.otel }}
{{- if .endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ .endpoint | quote }}
OTEL_EXPORTER_OTLP_PROTOCOL: {{ .protocol | quote }}
{{- end }}
{{- if .metricsExporter }}
OTEL_METRICS_EXPORTER: {{ .metricsExporter | quote }}
{{- end }}
{{- if .sampler }}
OTEL_TRACES_SAMPLER: {{ .sampler | quote }}
{{- end }}
{{- if .samplerArg }}
OTEL_TRACES_SAMPLER_ARG: {{ .samplerArg | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Per-pod environment: OTEL resource attributes (with the pod's identity) and
the OTLP headers Secret. Argument: (list $ "pusher").
*/}}
{{- define "optout-sync.otelEnv" -}}
{{- $ := index . 0 }}
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: K8S_NAMESPACE_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- $attrs := list (printf "service.version=%s" (include "optout-sync.tag" $)) "k8s.pod.name=$(K8S_POD_NAME)" "k8s.namespace.name=$(K8S_NAMESPACE_NAME)" (printf "k8s.deployment.name=%s-%s" (include "optout-sync.fullname" $) (index . 1)) }}
{{- range $k, $v := $.Values.otel.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $k $v) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- with $.Values.otel.headers }}
{{- if .existingSecret }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .key }}
{{- end }}
{{- end }}
{{- end }}

{{/*
NATS connection: variables from Secrets (user, password, token) and files
mounted from Secrets (creds, nkey seed, TLS).
*/}}
{{- define "optout-sync.natsEnv" -}}
- name: NATS_URL
  value: {{ .Values.nats.url | quote }}
{{- with .Values.nats.auth }}
{{- if .userKey }}
- name: NATS_USER
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .userKey }}
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
{{- end }}
{{- if .tokenKey }}
- name: NATS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .tokenKey }}
{{- end }}
{{- if .credsKey }}
- name: NATS_CREDS_FILE
  value: /etc/optout/nats-auth/creds
{{- end }}
{{- if .nkeySeedKey }}
- name: NATS_NKEY_SEED_FILE
  value: /etc/optout/nats-auth/nkey.seed
{{- end }}
{{- end }}
{{- with .Values.nats.tls }}
{{- if .existingSecret }}
{{- if .caKey }}
- name: NATS_TLS_CA
  value: /etc/optout/nats-tls/ca.crt
{{- end }}
{{- if .certKey }}
- name: NATS_TLS_CERT
  value: /etc/optout/nats-tls/tls.crt
- name: NATS_TLS_KEY
  value: /etc/optout/nats-tls/tls.key
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "optout-sync.natsVolumes" -}}
{{- with .Values.nats.auth }}
{{- if or .credsKey .nkeySeedKey }}
- name: nats-auth
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 0440
    items:
{{- if .credsKey }}
      - key: {{ .credsKey }}
        path: creds
{{- end }}
{{- if .nkeySeedKey }}
      - key: {{ .nkeySeedKey }}
        path: nkey.seed
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.nats.tls }}
{{- if and .existingSecret (or .caKey .certKey) }}
- name: nats-tls
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 0440
    items:
{{- if .caKey }}
      - key: {{ .caKey }}
        path: ca.crt
{{- end }}
{{- if .certKey }}
      - key: {{ .certKey }}
        path: tls.crt
      - key: {{ .keyKey }}
        path: tls.key
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "optout-sync.natsVolumeMounts" -}}
{{- if or .Values.nats.auth.credsKey .Values.nats.auth.nkeySeedKey }}
- name: nats-auth
  mountPath: /etc/optout/nats-auth
  readOnly: true
{{- end }}
{{- if and .Values.nats.tls.existingSecret (or .Values.nats.tls.caKey .Values.nats.tls.certKey) }}
- name: nats-tls
  mountPath: /etc/optout/nats-tls
  readOnly: true
{{- end }}
{{- end }}

{{/*
Salesforce credentials: one Secret per tenant at <credentialsDir>/<tenant>/.
Optional mounts, so one tenant's missing Secret never stops the others.
*/}}
{{- define "optout-sync.sfVolumes" -}}
{{- range $i, $t := .Values.salesforce.tenants }}
- name: sf-{{ $i }}
  secret:
    secretName: {{ $t.existingSecret }}
    defaultMode: 0440
    optional: true
{{- end }}
{{- end }}

{{- define "optout-sync.sfVolumeMounts" -}}
{{- $dir := .Values.salesforce.credentialsDir }}
{{- range $i, $t := .Values.salesforce.tenants }}
- name: sf-{{ $i }}
  mountPath: {{ printf "%s/%s" $dir $t.name }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
Probes on the admin port. Liveness only fails when the process is wedged;
readiness follows NATS (and Redis for the reconciler).
*/}}
{{- define "optout-sync.adminProbes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: admin
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
{{- end }}

{{- define "optout-sync.podSecurityContext" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{- define "optout-sync.containerSecurityContext" -}}
securityContext:
  {{- toYaml .Values.containerSecurityContext | nindent 2 }}
{{- end }}

{{/*
The email-hash key (emailHash.existingSecret): the same Secret in every
component, so the pusher and the reconciler hash a person alike.
*/}}
{{- define "optout-sync.emailHashEnv" -}}
{{- with .Values.emailHash }}
{{- if and .existingSecret .key }}
- name: OPTOUT_EMAIL_HASH_KEY_FILE
  value: /etc/optout/email-hash/key
{{- end }}
{{- end }}
{{- end }}

{{- define "optout-sync.emailHashVolumes" -}}
{{- with .Values.emailHash }}
{{- if and .existingSecret .key }}
- name: email-hash
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .key }}
        path: key
{{- end }}
{{- end }}
{{- end }}

{{- define "optout-sync.emailHashVolumeMounts" -}}
{{- if and .Values.emailHash.existingSecret .Values.emailHash.key }}
- name: email-hash
  mountPath: /etc/optout/email-hash
  readOnly: true
{{- end }}
{{- end }}
