{{- define "aim-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "aim-operator.serviceAccountName" -}}
{{- default (include "aim-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "aim-operator.labels" -}}
app.kubernetes.io/name: aim-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "aim-operator.selectorLabels" -}}
app.kubernetes.io/name: aim-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
