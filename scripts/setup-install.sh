#!/usr/bin/env bash
# Installs what scripts/test-install.sh needs beyond the control plane and helm (scripts/setup-controlplane.sh):
# promtool from Debian's `prometheus` package (checks the chart's alert rules and dashboard PromQL), and kubectl
# when it is missing (the apt package `kubectl` where an apt source offers it). Idempotent; does nothing when
# both are there.
set -euo pipefail
if ! command -v kubectl >/dev/null 2>&1; then
  case "$(apt-cache policy kubectl 2>/dev/null)" in
    *"Candidate: "[0-9]*) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null ;;
    *) echo "setup-install: kubectl is missing and no apt source offers it; install kubectl >= 1.30" >&2; exit 1 ;;
  esac
fi
if command -v promtool >/dev/null 2>&1; then
  exit 0
fi
available() { case "$(apt-cache policy prometheus 2>/dev/null)" in *"Candidate: "[0-9]*) return 0 ;; *) return 1 ;; esac; }
available || apt-get update -qq
if ! available; then
  echo "setup-install: Debian package 'prometheus' (promtool) is not available from apt" >&2
  exit 1
fi
echo "setup-install: installing Debian package prometheus (for promtool)" >&2
# policy-rc.d 101: do not start the packaged Prometheus service; the tests start their own when they need one.
rc=/usr/sbin/policy-rc.d
made_rc=0
if [ ! -e "$rc" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$rc" && chmod +x "$rc" && made_rc=1
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
[ "$made_rc" = 1 ] && rm -f "$rc"
command -v promtool >/dev/null
