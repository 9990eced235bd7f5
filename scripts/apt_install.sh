#!/usr/bin/env bash
# Install Debian packages the project needs, without touching the system's apt configuration:
#   bash scripts/apt_install.sh TAG PACKAGE...
# Returns at once when every package is installed. Otherwise (as root) apt is pointed, through
# -o options, at a private sources list derived from the system's own Debian entry with the
# contrib and non-free components added (the MBROLA voices live there), and at private lists and
# cache directories, so that a fresh package index is fetched without editing the system's
# sources or lists. TAG prefixes the messages. Packages are installed without recommends.
set -euo pipefail
tag=$1
shift

missing=""
for p in "$@"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
if [ -z "$missing" ]; then
  echo "[$tag] all packages already installed"
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "[$tag] missing packages:$missing" >&2
  echo "[$tag] run this script as root (it installs them with apt-get)" >&2
  exit 1
fi
echo "[$tag] installing:$missing"

state_dir=${EMBEDSEG_APT_DIR:-/var/cache/embedseg-apt}
mkdir -p "$state_dir/lists/partial" "$state_dir/archives/partial"
sources="$state_dir/sources.list"

# The system's Debian mirror and release, from either the deb822 or the one-line format.
mirror=""
suite=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  suite=$(awk '/^Suites:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
  suite=$(awk '$1 == "deb" && $2 !~ /security/ {print $3; exit}' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}
if [ -z "$suite" ]; then
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
signed=""
[ -f "$keyring" ] && signed="[signed-by=$keyring] "
echo "deb ${signed}${mirror} ${suite} main contrib non-free" > "$sources"

apt_opts=(
  -o "Dir::Etc::SourceList=$sources"
  -o "Dir::Etc::SourceParts=/nonexistent"
  -o "Dir::State::Lists=$state_dir/lists"
  -o "Dir::Cache::Archives=$state_dir/archives"
  -o "Dir::Cache::pkgcache="
  -o "Dir::Cache::srcpkgcache="
)
export DEBIAN_FRONTEND=noninteractive
apt-get "${apt_opts[@]}" -qq update
# shellcheck disable=SC2086
apt-get "${apt_opts[@]}" -y -qq --no-install-recommends install $missing
apt-get "${apt_opts[@]}" -qq clean
echo "[$tag] done"
