{{/*
weft's chart helpers. Every object carries flannel's labels; the DaemonSet's selector is flannel's chart's
(app: flannel alone), which cannot change on an existing DaemonSet, so `helm upgrade` of a release of flannel's
chart to this chart updates it in place.
*/}}

{{/* Labels of every object. */}}
{{- define "weft.labels" -}}
k8s-app: flannel
{{- end -}}

{{/* Labels of the ConfigMap, the DaemonSet and its pods. */}}
{{- define "weft.nodeLabels" -}}
tier: node
app: flannel
{{ include "weft.labels" . }}
{{- end -}}

{{/*
weft.own: the value at a path under `weft:` (list . "image" "tag"), or empty. Every value of weft's own is read
through it with a default in place: `helm upgrade --reuse-values` of a release of flannel's chart renders with
flannel's chart's default values, which have no `weft:` section.
*/}}
{{- define "weft.own" -}}
{{- $w := (index . 0).Values.weft | default dict -}}
{{- $v := $w -}}
{{- range rest . -}}
{{- if kindIs "map" $v -}}
{{- $v = get $v . -}}
{{- else -}}
{{- $v = "" -}}
{{- end -}}
{{- end -}}
{{- toString ($v | default "") -}}
{{- end -}}

{{/* weft's own image: weft.image, its tag defaulting to the chart's appVersion. */}}
{{- define "weft.ownImage" -}}
{{- printf "%s:%s" (include "weft.own" (list . "image" "repository") | default "ghcr.io/weft-net/weft") (include "weft.own" (list . "image" "tag") | default .Chart.AppVersion) -}}
{{- end -}}

{{/* flannel's own image repositories: a values file naming one of these gets weft's image instead. */}}
{{- define "weft.flannelRepos" -}}
{{- list "ghcr.io/flannel-io/flannel" "docker.io/flannel/flannel" "flannel/flannel" | toJson -}}
{{- end -}}
{{- define "weft.flannelCNIRepos" -}}
{{- list "ghcr.io/flannel-io/flannel-cni-plugin" "docker.io/flannel/flannel-cni-plugin" "flannel/flannel-cni-plugin" | toJson -}}
{{- end -}}

{{/* weft.image: the image of weftd and install-cni (see flannel.image in values.yaml). */}}
{{- define "weft.image" -}}
{{- $img := .Values.flannel.image | default dict -}}
{{- $repo := $img.repository | default "" -}}
{{- if or (not $repo) (has $repo (include "weft.flannelRepos" . | fromJsonArray)) -}}
{{- include "weft.ownImage" . -}}
{{- else -}}
{{- printf "%s:%s" $repo ($img.tag | default (include "weft.own" (list . "image" "tag")) | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* weft.cniImage: the image of install-cni-plugin (flannel.flannel_cni.image, or flannel's older image_cni). */}}
{{- define "weft.cniImage" -}}
{{- $img := dig "flannel_cni" "image" dict .Values.flannel -}}
{{- if not $img.repository -}}
{{- $img = .Values.flannel.image_cni | default dict -}}
{{- end -}}
{{- $repo := $img.repository | default "" -}}
{{- if or (not $repo) (has $repo (include "weft.flannelCNIRepos" . | fromJsonArray)) -}}
{{- include "weft.image" . -}}
{{- else -}}
{{- printf "%s:%s" $repo ($img.tag | default (include "weft.own" (list . "image" "tag")) | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* weft.backends: the backend types weftd has (internal/backend/registry; the chart's tests compare). */}}
{{- define "weft.backends" -}}
{{- list "vxlan" "host-gw" "udp" "ipip" "wireguard" | toJson -}}
{{- end -}}

{{/*
weft.validate fails the install, with a message saying why, on values weft cannot honour. Every template
includes it, so `helm template` of any one of them fails too.
*/}}
{{- define "weft.validate" -}}
{{- $backends := include "weft.backends" . | fromJsonArray -}}
{{- if not (has (lower (toString .Values.flannel.backend)) $backends) -}}
{{- fail (printf "flannel.backend %q: weft has the backends %s" (toString .Values.flannel.backend) (join ", " $backends)) -}}
{{- end -}}
{{- if not (trim (toString (.Values.flannel.cniConf | default ""))) -}}
{{- fail "flannel.cniConf is empty: the chart would install an empty CNI conflist. (A release of an older flannel chart, which had no cniConf, upgraded with --reuse-values has none: upgrade with --reset-then-reuse-values instead)" -}}
{{- end -}}
{{- if and (not .Values.podCidr) (not .Values.podCidrv6) -}}
{{- fail "podCidr and podCidrv6 are both empty: give the cluster network of at least one family" -}}
{{- end -}}
{{- if and (eq (include "weft.own" (list . "metrics" "podAnnotations")) "true") (not (dig "healthz" "port" 0 .Values.flannel)) -}}
{{- fail "weft.metrics.podAnnotations needs flannel.healthz.port: weftd serves /metrics on the health port" -}}
{{- end -}}
{{- end -}}

{{/* weft.healthzPort: flannel.healthz.port as a whole number, 0 when off. */}}
{{- define "weft.healthzPort" -}}
{{- with dig "healthz" "port" 0 .Values.flannel -}}
{{- include "weft.int" (list "flannel.healthz.port" .) -}}
{{- else -}}
0
{{- end -}}
{{- end -}}

{{/*
weft.int renders (list NAME VALUE) as a JSON whole number, or fails naming the value: weftd reads net-conf.json's
numbers strictly, where flannel's chart copies the value's text as it is.
*/}}
{{- define "weft.int" -}}
{{- $name := index . 0 -}}
{{- $v := index . 1 -}}
{{- $s := toString $v -}}
{{- if or (kindIs "float64" $v) (kindIs "float32" $v) -}}
{{- $s = printf "%.0f" $v -}}
{{- if ne (float64 $s) (float64 $v) -}}
{{- $s = toString $v -}}
{{- end -}}
{{- end -}}
{{- if not (regexMatch "^[0-9]+$" $s) -}}
{{- fail (printf "%s: want a whole number, not %q" $name (toString $v)) -}}
{{- end -}}
{{- $s -}}
{{- end -}}

{{/* weft.bool renders (list NAME VALUE) as a JSON boolean, or fails naming the value. */}}
{{- define "weft.bool" -}}
{{- $name := index . 0 -}}
{{- $s := lower (toString (index . 1)) -}}
{{- if not (has $s (list "true" "false")) -}}
{{- fail (printf "%s: want true or false, not %q" $name (toString (index . 1))) -}}
{{- end -}}
{{- $s -}}
{{- end -}}

{{/*
weft.backendOptions: the Backend section's lines after Type, from flannel's chart's backend values (each only
when set). Keys as flannel's chart writes them; strings are JSON-quoted (flannel's chart leaves tunnelMode bare,
which is not JSON).
*/}}
{{- define "weft.backendOptions" -}}
{{- $f := .Values.flannel -}}
{{- $type := lower (toString $f.backend) -}}
{{- $lines := list -}}
{{- if eq $type "vxlan" -}}
{{- with $f.backendPort }}{{ $lines = append $lines (printf "\"Port\": %s" (include "weft.int" (list "flannel.backendPort" .))) }}{{ end -}}
{{- with $f.vni }}{{ $lines = append $lines (printf "\"VNI\": %s" (include "weft.int" (list "flannel.vni" .))) }}{{ end -}}
{{- with $f.GBP }}{{ $lines = append $lines (printf "\"GBP\": %s" (include "weft.bool" (list "flannel.GBP" .))) }}{{ end -}}
{{- with $f.directRouting }}{{ $lines = append $lines (printf "\"DirectRouting\": %s" (include "weft.bool" (list "flannel.directRouting" .))) }}{{ end -}}
{{- with $f.mtu }}{{ $lines = append $lines (printf "\"MTU\": %s" (include "weft.int" (list "flannel.mtu" .))) }}{{ end -}}
{{- with $f.macPrefix }}{{ $lines = append $lines (printf "\"MacPrefix\": %s" (toJson (toString .))) }}{{ end -}}
{{- else if eq $type "wireguard" -}}
{{- with $f.backendPort }}{{ $lines = append $lines (printf "\"ListenPort\": %s" (include "weft.int" (list "flannel.backendPort" .))) }}{{ end -}}
{{- with $f.backendPortv6 }}{{ $lines = append $lines (printf "\"ListenPortV6\": %s" (include "weft.int" (list "flannel.backendPortv6" .))) }}{{ end -}}
{{- with $f.psk }}{{ $lines = append $lines (printf "\"PSK\": %s" (toJson (toString .))) }}{{ end -}}
{{- with $f.mtu }}{{ $lines = append $lines (printf "\"MTU\": %s" (include "weft.int" (list "flannel.mtu" .))) }}{{ end -}}
{{- with $f.tunnelMode }}{{ $lines = append $lines (printf "\"Mode\": %s" (toJson (toString .))) }}{{ end -}}
{{- with $f.keepaliveInterval }}{{ $lines = append $lines (printf "\"PersistentKeepaliveInterval\": %s" (include "weft.int" (list "flannel.keepaliveInterval" .))) }}{{ end -}}
{{- else if eq $type "udp" -}}
{{- with $f.backendPort }}{{ $lines = append $lines (printf "\"Port\": %s" (include "weft.int" (list "flannel.backendPort" .))) }}{{ end -}}
{{- end -}}
{{- toJson $lines -}}
{{- end -}}

{{/* weft.netConf: net-conf.json. */}}
{{- define "weft.netConf" -}}
{{- $top := list -}}
{{- if .Values.podCidr -}}
{{- $top = append $top (printf "\"Network\": %s" (toJson (toString .Values.podCidr))) -}}
{{- else -}}
{{- $top = append $top "\"EnableIPv4\": false" -}}
{{- end -}}
{{- with .Values.podCidrv6 -}}
{{- $top = append $top (printf "\"IPv6Network\": %s" (toJson (toString .))) -}}
{{- $top = append $top "\"EnableIPv6\": true" -}}
{{- end -}}
{{- $top = append $top (printf "\"EnableNFTables\": %s" (include "weft.bool" (list "flannel.enableNFTables" (.Values.flannel.enableNFTables | default false)))) -}}
{{- $backend := prepend (include "weft.backendOptions" . | fromJsonArray) (printf "\"Type\": %s" (toJson (toString .Values.flannel.backend))) -}}
{
{{- range $top }}
  {{ . }},
{{- end }}
  "Backend": {
    {{ join ",\n    " $backend }}
  }
}
{{- end -}}
