#!/usr/bin/env bash
# Installs the Debian packages named as arguments when their commands are
# missing. Package names map to the command they provide.
set -euo pipefail
missing=()
for pkg in "$@"; do
  case "$pkg" in
    isync) cmd=mbsync ;;
    *) cmd=$pkg ;;
  esac
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo=sudo
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
