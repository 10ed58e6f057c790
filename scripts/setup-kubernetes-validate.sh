#!/usr/bin/env bash
# kubernetes-validate (PyPI, pinned; it bundles the Kubernetes API schemas, no cluster needed) in a cached venv
# outside the checkout, for tests/k8s_validate.rs. Prints the venv's path on its last line. Nothing after the
# first time.
set -euo pipefail
version=1.37.0
venv="${SERVELAB_K8S_VALIDATE_VENV:-$HOME/.cache/servelab/kubernetes-validate-$version}"
if [[ ! -x "$venv/bin/kubernetes-validate" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "kubernetes-validate==$version"
fi
echo "$venv"
