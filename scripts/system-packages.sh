#!/usr/bin/env bash
# The system packages the test suite needs, named in this one place: `make test` and .ci/run
# both run this script first. It installs what is missing when it can (as root, or through sudo
# without a password); otherwise it stops at once with the command to run. When everything is
# there it costs one dpkg-query: apt-get runs, and `apt-get update` with it, only for a gap.
set -euo pipefail

# Debian package           what the tests use from it
PACKAGES=(
  dataset-fashion-mnist  # /usr/share/datasets/fashion-mnist (tests/unit/test_fetch.py)
  nghttp2-client         # h2load: the load generator's and the nginx tests
  prometheus             # prometheus and promtool: metrics, dashboard and alert-rule tests
  nginx                  # the L7 balancer tests (tests/integration/test_nginx.py)
)

# Node.js 18+ with npm runs the Node client's test. The project's machines come with NodeSource's
# Node 20, whose one nodejs package brings npm; Debian's npm package conflicts with it, so Debian's
# Node (18, in Debian 12) is asked for only when the commands are missing.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  PACKAGES+=(nodejs npm)
fi

# kubectl (>= 1.27, for its built-in kustomize v5) renders deploy/kubernetes. Debian 12's
# kubernetes-client is 1.20, too old, so no package here can supply it: say so before the
# suite spends minutes getting to those tests.
if ! command -v kubectl >/dev/null; then
  echo "system-packages: kubectl is not on PATH; the Kubernetes tests need kubectl >= 1.27" \
    "(Kubernetes' own packages or release binary; Debian 12's kubernetes-client is too old)" >&2
  exit 1
fi

if ! command -v dpkg-query >/dev/null; then
  echo "system-packages: not a Debian system; install the equivalents of: ${PACKAGES[*]}" >&2
  exit 1
fi

# One query for all of them; a package Debian has never heard of prints nothing on stdout.
installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PACKAGES[@]}" 2>/dev/null \
  | awk '$2 == "installed" { print $1 }' || true)
missing=()
for package in "${PACKAGES[@]}"; do
  grep -qxF "$package" <<<"$installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "system-packages: missing Debian packages: ${missing[*]}. Install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "system-packages: installing ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"
