{{/* Base name of every object: the release name, unless it already says "herald". */}}
{{- define "herald.fullname" -}}
{{- if contains "herald" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-herald" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "herald.labels" -}}
app.kubernetes.io/name: herald
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: include "herald.selector" (list . "speaker") */}}
{{- define "herald.selector" -}}
{{- $top := index . 0 -}}
app.kubernetes.io/name: herald
app.kubernetes.io/instance: {{ $top.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "herald.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "herald.secretName" -}}
{{- .Values.speaker.existingSecret | default (printf "%s-speaker-key" (include "herald.fullname" .)) -}}
{{- end -}}

{{- define "herald.priorityClassName" -}}
{{- if .Values.priorityClass.create -}}{{ include "herald.fullname" . }}{{- end -}}
{{- end -}}

{{/* Speaker flags shared by the speaker DaemonSet and the cleanup DaemonSet. */}}
{{- define "herald.dataplaneOn" -}}
{{- if ne .Values.dataplane.mode "off" -}}true{{- end -}}
{{- end -}}

{{/* The IPVS backend needs sysctls (dataplane/ipvs/sysctls.go): auto may choose it; userspace
needs its strict-ARP ones (dataplane/userspace/standalone.go). The speaker
pod then sets them in a privileged init step (speaker --prepare-sysctls); the speaker itself finds
them set and runs on capabilities alone. */}}
{{- define "herald.writesSysctls" -}}
{{- if has .Values.dataplane.mode (list "auto" "ipvs" "userspace") -}}true{{- end -}}
{{- end -}}

{{/* The speaker container's security context: the capabilities it needs, never privileged. */}}
{{- define "herald.speakerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
  add:
    # Addresses, links and routes (netlink); nftables rules and conntrack entries (the data
    # plane); answering ARP/NDP for Service IPs.
    - NET_ADMIN
    # Raw packet sockets for ARP and NDP (speaker/l2).
    - NET_RAW
    # Raised CPU priority and a real-time heartbeat thread, so a saturated node still sends
    # its heartbeats in time (speaker/membership/priority.go).
    - SYS_NICE
    {{- if or .Values.bgp.enabled (eq .Values.dataplane.mode "userspace") }}
    # GoBGP listens on TCP 179 for routers that connect first (speaker/bgp/announcer.go ListenPort);
    # --dataplane=userspace binds the Service ports themselves (dataplane/userspace/standalone.go).
    - NET_BIND_SERVICE
    {{- end }}
{{- end -}}

{{/* KUBERNETES_SERVICE_HOST/PORT for Herald's pods when apiServer.host is set (no kube-proxy:
the API cannot be reached through its ClusterIP before the speakers program it). */}}
{{- define "herald.apiServerEnv" -}}
{{- with .Values.apiServer.host -}}
- name: KUBERNETES_SERVICE_HOST
  value: {{ . | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ $.Values.apiServer.port | quote }}
{{- end -}}
{{- end -}}
