{{/*
Every template takes the including chart's root context (`.`) and reads `.Values.sidecar`.
Usage in an app chart's pod spec:

  metadata:
    annotations:
      {{- include "llm-sidecar.podAnnotations" . | nindent 8 }}
  spec:
    terminationGracePeriodSeconds: {{ include "llm-sidecar.terminationGracePeriodSeconds" . }}
    initContainers:
      {{- include "llm-sidecar.initContainers" . | nindent 8 }}
    containers:
      - name: app ...
      {{- include "llm-sidecar.containers" . | nindent 8 }}
    volumes:
      {{- include "llm-sidecar.volumes" . | nindent 8 }}

and, once per release, in a template of its own:

  {{ include "llm-sidecar.configMaps" . }}
*/}}

{{- define "llm-sidecar.values" -}}
{{- $defaults := include "llm-sidecar.defaults" . | fromYaml -}}
{{- $user := deepCopy (.Values.sidecar | default dict) -}}
{{- toYaml (mergeOverwrite $defaults $user) -}}
{{- end -}}

{{- define "llm-sidecar.fullname" -}}
{{- printf "%s-llm-sidecar" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
native: an init container with restartPolicy Always (KEP-753): it starts before the app, stops
after it, and does not keep a Job's pod alive. Beta and on by default from 1.29, GA in 1.33.
*/}}
{{- define "llm-sidecar.mode" -}}
{{- $c := include "llm-sidecar.values" . | fromYaml -}}
{{- if eq $c.mode "auto" -}}
{{- if semverCompare ">=1.29-0" .Capabilities.KubeVersion.Version -}}native{{- else -}}legacy{{- end -}}
{{- else if or (eq $c.mode "native") (eq $c.mode "legacy") -}}
{{- $c.mode -}}
{{- else -}}
{{- fail (printf "sidecar.mode must be auto, native or legacy, not %q" $c.mode) -}}
{{- end -}}
{{- end -}}

{{- define "llm-sidecar.image" -}}
{{- $c := include "llm-sidecar.values" . | fromYaml -}}
{{- if $c.image.digest -}}
{{- printf "%s@%s" $c.image.repository $c.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $c.image.repository (toString $c.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Keys that hold credentials: they come from the Secret only, never from values. */}}
{{- define "llm-sidecar.secretKeyPattern" -}}
(API_KEY|AUTH_TOKEN|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|AWS_ACCESS_KEY_ID)$
{{- end -}}

{{- define "llm-sidecar.validate" -}}
{{- $c := include "llm-sidecar.values" . | fromYaml -}}
{{- if and (not $c.backends) (not $c.chains) -}}
{{- fail "sidecar.backends (SIDECAR_BACKENDS) or sidecar.chains (SIDECAR_CONFIG) is required" -}}
{{- end -}}
{{- if and $c.backends (hasKey ($c.chains | default dict) "default") -}}
{{- fail "sidecar.chains defines `default` and sidecar.backends defines it too; keep one" -}}
{{- end -}}
{{- range $k, $v := $c.env -}}
{{- if regexMatch (include "llm-sidecar.secretKeyPattern" $) $k -}}
{{- fail (printf "sidecar.env.%s is a credential: put it in an existing Secret and map it in sidecar.secret.env" $k) -}}
{{- end -}}
{{- if or (eq $k "SIDECAR_HOST") (eq $k "SIDECAR_PORT") (eq $k "SIDECAR_ADMIN_HOST") (eq $k "SIDECAR_ADMIN_PORT") (eq $k "SIDECAR_BACKENDS") (eq $k "SIDECAR_CONFIG") -}}
{{- fail (printf "sidecar.env.%s is set by the chart: use sidecar.ports, sidecar.exposeProxy, sidecar.backends or sidecar.chains" $k) -}}
{{- end -}}
{{- end -}}
{{- if and $c.secret.env (not $c.secret.name) -}}
{{- fail "sidecar.secret.env maps keys of a Secret: set sidecar.secret.name to an existing Secret" -}}
{{- end -}}
{{- if and $c.secret.files (not $c.secret.name) -}}
{{- fail "sidecar.secret.files mounts keys of a Secret: set sidecar.secret.name to an existing Secret" -}}
{{- end -}}
{{- range $k, $v := ($c.secret.files | default dict) -}}
{{- if not (hasSuffix "_FILE" $k) -}}
{{- fail (printf "sidecar.secret.files.%s: the name must end in _FILE (PRIMARY_API_KEY_FILE, SIDECAR_AUTH_TOKEN_FILE)" $k) -}}
{{- end -}}
{{- $plain := trimSuffix "_FILE" $k -}}
{{- if or (hasKey ($c.secret.env | default dict) $plain) (hasKey ($c.env | default dict) $plain) -}}
{{- fail (printf "sidecar.secret.files.%s and %s are both set; keep one" $k $plain) -}}
{{- end -}}
{{- if hasKey ($c.env | default dict) $k -}}
{{- fail (printf "sidecar.secret.files.%s is also set in sidecar.env; keep one" $k) -}}
{{- end -}}
{{- end -}}
{{- include "llm-sidecar.validateCredentials" $c -}}
{{- end -}}

{{/*
Every backend of every chain whose kind needs an API key (azure, anthropic, openai at
api.openai.com) must have {PREFIX}API_KEY mapped in secret.env, or {PREFIX}API_KEY_FILE in
secret.files: otherwise the pod renders, then
crash-loops on `llm-sidecar serve`'s exit code 2. Takes the merged sidecar values.
*/}}
{{- define "llm-sidecar.validateCredentials" -}}
{{- $c := . -}}
{{- $items := list -}}
{{- range (splitList "," ($c.backends | default "")) -}}
{{- if trim . -}}
{{- $parts := splitList "=" (trim .) -}}
{{- $name := trim (first $parts) -}}
{{- $prefix := ternary (trim (last $parts)) "" (gt (len $parts) 1) -}}
{{- $items = append $items (dict "name" $name "prefix" $prefix "chain" "default (sidecar.backends)") -}}
{{- end -}}
{{- end -}}
{{- range $chain, $list := ($c.chains | default dict) -}}
{{- range $list -}}
{{- if kindIs "string" . -}}
{{- $items = append $items (dict "name" . "prefix" "" "chain" $chain) -}}
{{- else -}}
{{- $items = append $items (dict "name" (.name | default "" | toString) "prefix" (.env_prefix | default "" | toString) "chain" $chain) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $env := $c.env | default dict -}}
{{- $secret := $c.secret.env | default dict -}}
{{- $files := $c.secret.files | default dict -}}
{{- range $items -}}
{{- $prefix := .prefix | default (printf "%s_" (regexReplaceAll "[^A-Za-z0-9]" .name "_" | upper)) -}}
{{- $kind := (get $env (printf "%sKIND" $prefix)) | default "openai" | toString | lower -}}
{{- $base := (get $env (printf "%sBASE_URL" $prefix)) | default "" | toString | trimSuffix "/" -}}
{{- $public := or (eq $base "") (eq $base "https://api.openai.com/v1") -}}
{{- $needs := or (eq $kind "azure") (eq $kind "anthropic") (and (eq $kind "openai") $public) -}}
{{- if and $needs (not (get $secret (printf "%sAPI_KEY" $prefix))) (not (get $files (printf "%sAPI_KEY_FILE" $prefix))) -}}
{{- fail (printf "chain %s: backend %q (kind %s) needs %sAPI_KEY: map it to a key of your Secret in sidecar.secret.env, or %sAPI_KEY_FILE in sidecar.secret.files (or, for a keyless OpenAI-compatible server, set sidecar.env.%sBASE_URL)" .chain .name $kind $prefix $prefix $prefix) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "llm-sidecar.configMaps" -}}
{{- include "llm-sidecar.validate" . -}}
{{- $c := include "llm-sidecar.values" . | fromYaml -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "llm-sidecar.fullname" . }}-env
  labels:
    {{- include "llm-sidecar.labels" . | nindent 4 }}
data:
  SIDECAR_HOST: {{ ternary "0.0.0.0" "127.0.0.1" $c.exposeProxy | quote }}
  SIDECAR_PORT: {{ $c.ports.proxy | toString | quote }}
  {{- /* kubelet probes and Prometheus connect to the pod IP, not to loopback. */}}
  SIDECAR_ADMIN_HOST: "0.0.0.0"
  SIDECAR_ADMIN_PORT: {{ $c.ports.admin | toString | quote }}
  SIDECAR_SHUTDOWN_DELAY_S: {{ $c.shutdown.delaySeconds | toString | quote }}
  SIDECAR_SHUTDOWN_GRACE_S: {{ $c.shutdown.graceSeconds | toString | quote }}
  SIDECAR_LOG_LEVEL: {{ $c.logLevel | quote }}
  SIDECAR_LOG_FORMAT: "json"
  {{- if $c.backends }}
  SIDECAR_BACKENDS: {{ $c.backends | quote }}
  {{- end }}
  {{- if $c.chains }}
  SIDECAR_CONFIG: "/etc/llm-sidecar/chains.yaml"
  {{- end }}
  {{- range $k, $v := $c.env }}
  {{ $k }}: {{ $v | toString | quote }}
  {{- end }}
{{- if $c.chains }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "llm-sidecar.fullname" . }}-chains
  labels:
    {{- include "llm-sidecar.labels" . | nindent 4 }}
data:
  chains.yaml: |
    {{- toYaml (dict "fallback_chains" $c.chains) | nindent 4 }}
{{- end }}
{{- end -}}

{{- define "llm-sidecar.labels" -}}
app.kubernetes.io/name: llm-sidecar
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: llm-proxy
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Rolls the pods when the sidecar's configuration changes (ConfigMaps do not restart pods). */}}
{{- define "llm-sidecar.podAnnotations" -}}
checksum/llm-sidecar-config: {{ include "llm-sidecar.configMaps" . | sha256sum }}
{{- end -}}

{{/*
The sidecar's own need: SHUTDOWN_DELAY_S + SHUTDOWN_GRACE_S after SIGTERM, and 5 s for the
process to exit. In native mode the kubelet stops the app first and the sidecar only after it,
within the same budget, so an app chart needs its own stop time plus this value; in legacy mode
both stop at once, so the larger of the two is enough.
*/}}
{{- define "llm-sidecar.terminationGracePeriodSeconds" -}}
{{- $c := include "llm-sidecar.values" . | fromYaml -}}
{{- add (ceil (float64 $c.shutdown.delaySeconds)) (ceil (float64 $c.shutdown.graceSeconds)) 5 | int -}}
{{- end -}}

{{- define "llm-sidecar.container" -}}
{{- include "llm-sidecar.validate" . -}}
{{- $c := include "llm-sidecar.values" . | fromYaml -}}
{{- $mode := include "llm-sidecar.mode" . -}}
name: llm-sidecar
image: {{ include "llm-sidecar.image" . | quote }}
imagePullPolicy: {{ $c.image.pullPolicy }}
{{- if eq $mode "native" }}
restartPolicy: Always
{{- end }}
ports:
  - name: sidecar-proxy
    containerPort: {{ $c.ports.proxy }}
    protocol: TCP
  - name: sidecar-admin
    containerPort: {{ $c.ports.admin }}
    protocol: TCP
envFrom:
  - configMapRef:
      name: {{ include "llm-sidecar.fullname" . }}-env
{{- if or $c.secret.env $c.secret.files }}
env:
  {{- range $envName, $key := $c.secret.env }}
  - name: {{ $envName }}
    valueFrom:
      secretKeyRef:
        name: {{ $c.secret.name }}
        key: {{ $key }}
  {{- end }}
  {{- range $envName, $key := $c.secret.files }}
  - name: {{ $envName }}
    value: {{ printf "%s/%s" (trimSuffix "/" $c.secret.mountPath) $key | quote }}
  {{- end }}
{{- end }}
{{- /* /readyz answers once the proxy listens: in native mode the app starts only after that. */}}
startupProbe:
  httpGet:
    path: /readyz
    port: {{ $c.ports.admin }}
  periodSeconds: {{ $c.probes.startup.periodSeconds }}
  failureThreshold: {{ $c.probes.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /livez
    port: {{ $c.ports.admin }}
  periodSeconds: {{ $c.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ $c.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ $c.probes.liveness.failureThreshold }}
{{- /* /readyz never reflects backend health: a native sidecar's readiness gates the whole pod. */}}
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ $c.ports.admin }}
  periodSeconds: {{ $c.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ $c.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ $c.probes.readiness.failureThreshold }}
resources:
  {{- toYaml $c.resources | nindent 2 }}
securityContext:
  {{- toYaml $c.securityContext | nindent 2 }}
volumeMounts:
  - name: llm-sidecar-tmp
    mountPath: /tmp
  {{- if $c.chains }}
  - name: llm-sidecar-config
    mountPath: /etc/llm-sidecar
    readOnly: true
  {{- end }}
  {{- /* The whole directory, never a subPath: the kubelet does not update subPath mounts. */}}
  {{- if $c.secret.files }}
  - name: llm-sidecar-secret
    mountPath: {{ $c.secret.mountPath }}
    readOnly: true
  {{- end }}
{{- end -}}

{{- define "llm-sidecar.initContainers" -}}
{{- if eq (include "llm-sidecar.mode" .) "native" -}}
{{- list (include "llm-sidecar.container" . | fromYaml) | toYaml }}
{{- end -}}
{{- end -}}

{{- define "llm-sidecar.containers" -}}
{{- if eq (include "llm-sidecar.mode" .) "legacy" -}}
{{- list (include "llm-sidecar.container" . | fromYaml) | toYaml }}
{{- end -}}
{{- end -}}

{{- define "llm-sidecar.volumes" -}}
{{- $c := include "llm-sidecar.values" . | fromYaml -}}
- name: llm-sidecar-tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- if $c.chains }}
- name: llm-sidecar-config
  configMap:
    name: {{ include "llm-sidecar.fullname" . }}-chains
{{- end }}
{{- if $c.secret.files }}
- name: llm-sidecar-secret
  secret:
    secretName: {{ $c.secret.name }}
    {{- /* 0444: the sidecar runs as a non-root uid that owns nothing in the volume. */}}
    defaultMode: 292
    items:
      {{- range $key := ($c.secret.files | values | uniq | sortAlpha) }}
      - key: {{ $key }}
        path: {{ $key }}
      {{- end }}
{{- end }}
{{- end -}}
