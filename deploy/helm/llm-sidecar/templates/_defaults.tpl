{{/*
Defaults for `.Values.sidecar`, merged under whatever the including chart sets. They live in a
template rather than values.yaml because a library chart's values.yaml never reaches its parent.
*/}}
{{- define "llm-sidecar.defaults" -}}
mode: auto
image:
  repository: ghcr.io/llm-sidecar/llm-sidecar
  tag: "0.1.0"
  digest: ""
  pullPolicy: IfNotPresent
ports:
  proxy: 8700
  admin: 8701
# The app reaches the proxy over the pod's shared loopback; set true only if other pods must call
# it directly (then also set SIDECAR_AUTH_TOKEN through secret.env).
exposeProxy: false
backends: ""
chains: {}
env: {}
secret:
  name: ""
  # ENV_NAME: key, as a secretKeyRef env var: fixed until the pod restarts.
  env: {}
  # ENV_NAME_FILE: key, as a file of the mounted Secret: the kubelet updates it in place and the
  # sidecar re-reads it, so a rotated key needs no restart (PRIMARY_API_KEY_FILE: primary-api-key).
  files: {}
  mountPath: /var/run/secrets/llm-sidecar
shutdown:
  delaySeconds: 5
  graceSeconds: 25
logLevel: INFO
resources:
  requests:
    cpu: 50m
    memory: 96Mi
  limits:
    memory: 256Mi
probes:
  startup:
    periodSeconds: 1
    failureThreshold: 30
  liveness:
    periodSeconds: 10
    timeoutSeconds: 2
    failureThreshold: 3
  readiness:
    periodSeconds: 5
    timeoutSeconds: 2
    failureThreshold: 2
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  readOnlyRootFilesystem: true
  allowPrivilegeEscalation: false
  capabilities:
    drop: [ALL]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}
