#!/usr/bin/env bash
# Install OS packages the project needs (Mosquitto, Node) when they are missing.
# As root on Debian/Ubuntu it installs them; otherwise it says what to run.
set -euo pipefail
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "installing OS packages: $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  exit 0
fi
echo "missing OS packages: $*" >&2
echo "install them, e.g.: sudo apt-get install $*   (then run make again)" >&2
exit 1
